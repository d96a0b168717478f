"""The shared-memory ring: one /dev/shm segment cut into fixed slots, Arrow IPC written and read in place.

Why a hand-made segment rather than ``multiprocessing.shared_memory``: its resource tracker unlinks a
segment when *any* attached process exits, so one crashing worker would pull the ring from under the
others. Here the supervisor alone creates and unlinks the file; workers only map it. A segment left by
a SIGKILLed supervisor carries the dead pid in its name and is removed by the next start
(``cleanup_stale_segments``).

Why pre-fault: the first touch of a tmpfs page costs a fault plus zeroing, about 10x a copy into a
mapped page. The supervisor allocates every page up front (``posix_fallocate``, which also turns a
full /dev/shm into a clean error instead of a SIGBUS mid-job) and maps them with ``MAP_POPULATE``;
each worker maps with ``MAP_POPULATE`` too, so no page fault lands on the hot path.

Or just in time (``prefault=False``, what the engine uses): a ring sized for every consumer's buffer
(``buffer_size``) is mostly idle in a small job, and pre-faulting it all made a 300k-record API pull
hold 256 MiB of RAM it never touched. Then nothing is allocated at creation; before a producer writes
a batch it faults in the pages the batch will cover with one ``MADV_POPULATE_WRITE`` (no trap per page,
and a full /dev/shm is still a clean error, never a SIGBUS), and a consumer maps what it reads with
``MADV_POPULATE_READ``. Each process remembers how far into each slot it has populated, so a slot's
pages are faulted once per process: the zeroing moves from the start of the run to a slot's first use
(once), and the ring's memory follows what the job really holds in flight.

The store moves bytes only: which slot is free or filled is brokered by the supervisor over pipes.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import secrets

import numpy as np
import psutil
import pyarrow as pa

from bizon_fast.errors import UserError
from bizon_fast.transport.base import BatchStore, SlotOverflow, StoreSpec
from bizon_fast.transport.fit import ipc_size

SHM_DIR = "/dev/shm"
DEFAULT_PREFIX = "bizon_fast"
RING_SIZE_KNOB = "engine.queue.config.ring_size_mb"

# Slots start on page boundaries: Arrow buffers read in place are then 64-byte aligned whatever the
# slot size, and a slot never shares a page (or a cache line) with its neighbour.
_SLOT_ALIGN = mmap.PAGESIZE

# psutil's process start time is derived from boot time in whole seconds; allow that much error.
_START_TIME_SLACK_S = 2.0

# madvise(2) options of Linux 5.14+ that Python 3.11's mmap module does not name: fault pages in now
# (allocating them for a write) and fail with EFAULT/ENOMEM -- never SIGBUS -- when /dev/shm is full
_MADV_POPULATE_READ = 22
_MADV_POPULATE_WRITE = 23


def _stride(slot_size: int) -> int:
    return -(-slot_size // _SLOT_ALIGN) * _SLOT_ALIGN


def _segment_bytes(slot_size: int, n_slots: int) -> int:
    return _stride(slot_size) * n_slots


def _mib(nbytes: float) -> str:
    return f"{nbytes / (1 << 20):.0f} MiB"


def _no_room(need: int, free: int) -> UserError:
    return UserError(
        f"/dev/shm has {_mib(free)} free but the shared-memory ring needs {_mib(need)}: "
        f"lower {RING_SIZE_KNOB} (or enlarge /dev/shm, e.g. docker run --shm-size)"
    )


class ShmRing(BatchStore):
    """Fixed slots in one shared-memory segment; ``write`` serializes into a slot, ``read`` maps it zero-copy.

    Thread-safe for distinct slots (no shared mutable state besides the mapping); the control plane
    guarantees one writer per slot and no read before the write is published.
    """

    def __init__(self, spec: StoreSpec, path: str, mm: mmap.mmap, owner: bool) -> None:
        self.spec = spec
        self.path = path
        # By pid, not by flag: only the process that created the segment may unlink it.
        self._owner_pid = os.getpid() if owner else None
        self._stride = _stride(spec.slot_size)
        self._mmap: mmap.mmap | None = mm
        # One view for the life of the store; slices of it are cheap and keep the mapping alive for as
        # long as any Arrow buffer built on them lives (the mmap refuses to close while they exist).
        self._view: memoryview | None = memoryview(mm)
        # just-in-time rings: per slot, how many bytes from its start this process has populated
        self._populated = None if spec.prefaulted else [0] * spec.n_slots

    @classmethod
    def create(cls, slot_size: int, n_slots: int, prefix: str = DEFAULT_PREFIX, prefault: bool = True) -> ShmRing:
        """Create, size, and pre-fault a new segment (supervisor only); the caller must ``destroy`` it.

        ``prefault`` False: nothing is allocated now; pages are faulted in as batches reach them.
        """
        if slot_size <= 0 or n_slots <= 0:
            raise ValueError(f"slot_size and n_slots must be positive, got {slot_size} and {n_slots}")
        if not os.path.isdir(SHM_DIR):
            raise UserError(f"{SHM_DIR} does not exist on this system: set engine.queue.type to python_queue")
        size = _segment_bytes(slot_size, n_slots)
        st = os.statvfs(SHM_DIR)
        free = st.f_bavail * st.f_frsize
        if size > free:
            raise _no_room(size, free)
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
        path = os.path.join(SHM_DIR, name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            if not prefault:
                mm = mmap.mmap(fd, size, mmap.MAP_SHARED)
                os.close(fd)
                spec = StoreSpec(kind="shm", name=name, slot_size=slot_size, n_slots=n_slots, prefaulted=False)
                return cls(spec, path, mm, owner=True)
            allocated = True
            try:
                # Allocates every page now: a full tmpfs fails here, not with SIGBUS in a worker later.
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                    raise _no_room(size, free) from exc
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                allocated = False
            # On allocated pages MAP_POPULATE maps them writable (measured: first copy at full speed).
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE)
            if not allocated:
                # Without fallocate, populate maps holes read-only; a write per page allocates them.
                np.frombuffer(mm, dtype=np.uint8)[:: mmap.PAGESIZE] = 0
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        os.close(fd)  # mmap holds its own duplicate
        spec = StoreSpec(kind="shm", name=name, slot_size=slot_size, n_slots=n_slots)
        return cls(spec, path, mm, owner=True)

    @classmethod
    def attach(cls, spec: StoreSpec) -> ShmRing:
        """Map an existing segment (workers). No tracking: a worker exiting never removes the segment."""
        path = os.path.join(SHM_DIR, spec.name)
        size = _segment_bytes(spec.slot_size, spec.n_slots)
        fd = os.open(path, os.O_RDWR)
        try:
            actual = os.fstat(fd).st_size
            if actual != size:
                raise ValueError(f"segment {spec.name} is {actual} bytes, spec says {size}")
            # populating a just-in-time ring's holes would allocate all of it
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED | (mmap.MAP_POPULATE if spec.prefaulted else 0))
        finally:
            os.close(fd)
        return cls(spec, path, mm, owner=False)

    def _populate(self, slot: int, nbytes: int, *, write: bool) -> None:
        """Just-in-time rings: fault in the pages of ``slot`` up to ``nbytes`` that this process has not yet."""
        populated = self._populated
        if populated is None or nbytes <= populated[slot] or self._mmap is None:
            return
        start = slot * self._stride + populated[slot]
        length = min(-(-nbytes // _SLOT_ALIGN) * _SLOT_ALIGN, self._stride) - populated[slot]
        try:
            self._mmap.madvise(_MADV_POPULATE_WRITE if write else _MADV_POPULATE_READ, start, length)
        except OSError as exc:
            if exc.errno in (errno.EFAULT, errno.ENOMEM, errno.ENOSPC):
                st = os.statvfs(SHM_DIR)
                raise _no_room(length, st.f_bavail * st.f_frsize) from exc
            if exc.errno != errno.EINVAL:
                raise
            # a kernel before 5.14: a touch per page (a write allocates; /dev/shm had room for the whole ring)
            pages = np.frombuffer(self._mmap, dtype=np.uint8)[start : start + length : mmap.PAGESIZE]
            if write:
                pages[:] = pages
            else:
                int(pages.sum())
        populated[slot] += length

    def _slot_view(self, slot: int, nbytes: int) -> memoryview:
        view = self._view
        if view is None:
            raise ValueError(f"ring {self.spec.name} is closed")
        if not 0 <= slot < self.spec.n_slots:
            raise IndexError(f"slot {slot} out of range 0..{self.spec.n_slots - 1}")
        offset = slot * self._stride
        return view[offset : offset + nbytes]

    def write(self, slot: int, batches: list[pa.RecordBatch]) -> int:
        """Serialize ``batches`` as one IPC stream straight into the slot's memory; return the bytes used.

        The size is checked first (exactly, see ``fit.ipc_size``), so an overflow raises SlotOverflow
        before a byte is written.
        """
        if not batches:
            raise ValueError("write needs at least one batch")
        need = ipc_size(batches)
        if need > self.spec.slot_size:
            raise SlotOverflow(f"{need} bytes do not fit a slot of {self.spec.slot_size} bytes")
        self._populate(slot, need, write=True)
        sink = pa.FixedSizeBufferWriter(pa.py_buffer(self._slot_view(slot, self.spec.slot_size)))
        try:
            with pa.ipc.new_stream(sink, batches[0].schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
            return sink.tell()
        finally:
            sink.close()

    def read(self, slot: int, nbytes: int) -> list[pa.RecordBatch]:
        """The batches in ``slot``; their buffers point into the shared mapping (no copy)."""
        if not 0 < nbytes <= self.spec.slot_size:
            raise ValueError(f"nbytes {nbytes} outside 1..{self.spec.slot_size}")
        self._populate(slot, nbytes, write=False)
        reader = pa.ipc.open_stream(pa.py_buffer(self._slot_view(slot, nbytes)))
        return list(reader)

    def close(self) -> None:
        """Detach. Batches returned by ``read`` may still be alive: then the mapping is left to be
        unmapped when the last of them is collected, because unmapping now would make them dangle."""
        view, mm = self._view, self._mmap
        self._view = self._mmap = None
        if mm is None:
            return
        view.release()
        with contextlib.suppress(BufferError):
            mm.close()

    def destroy(self) -> None:
        """Detach and unlink the segment (supervisor only). Workers still attached keep their mapping."""
        if self._owner_pid != os.getpid():
            raise RuntimeError(f"only the process that created ring {self.spec.name} may destroy it; workers close()")
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _pid_is_alive(pid: int, segment_ctime: float) -> bool:
    """Whether the process that created a segment may still run. Conservative: unsure means alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    # The pid exists, but pids are recycled: a process started after the segment was last changed
    # cannot be the one that created it.
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
    return started <= segment_ctime + _START_TIME_SLACK_S


def cleanup_stale_segments(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Unlink ``/dev/shm/{prefix}_{pid}_{token}`` segments whose creating process is gone; return their names.

    Run by the supervisor at start: a supervisor killed with SIGKILL never unlinks its ring, and
    /dev/shm is RAM, so the leftover would shrink every later ring.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)_[0-9a-f]{{8}}$")
    removed: list[str] = []
    try:
        entries = list(os.scandir(SHM_DIR))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        try:
            ctime = entry.stat(follow_symlinks=False).st_ctime
        except FileNotFoundError:
            continue
        if _pid_is_alive(int(match.group(1)), ctime):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # another supervisor cleaned it first
        except PermissionError:
            continue  # another user's segment (/dev/shm is sticky): not ours to remove
        removed.append(entry.name)
    return removed
