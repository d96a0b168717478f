"""The shared-memory ring: one /dev/shm segment cut into fixed slots, Arrow IPC written and read in place.

Why a hand-made segment rather than ``multiprocessing.shared_memory``: its resource tracker unlinks a
segment when *any* attached process exits, so one crashing worker would pull the ring from under the
others. Here the supervisor alone creates and unlinks the file; workers only map it. A segment left by
a SIGKILLed supervisor carries the dead pid in its name and is removed by the next start
(``cleanup_stale_segments``).

Why pre-fault: the first touch of a tmpfs page costs a fault plus zeroing, about 10x a copy into a
mapped page. The supervisor allocates the pages before any worker writes them (``posix_fallocate``,
which also turns a full /dev/shm into a clean error instead of a SIGBUS mid-job) and maps them with
``MAP_POPULATE``; each worker maps with ``MAP_POPULATE`` too, so no page fault lands on the hot path.

Why not every slot up front: a ring sized for the consumers' buffers (``buffer_size``) is mostly idle
in a small job, and pre-faulting it all made a 300k-record API pull hold 256 MiB of RAM it never used.
So only the first ``warm_slots`` slots (what the workers need to stream) are pre-faulted at creation;
the free list hands out low slots first, and each other slot is pre-faulted by the supervisor the first
time it grants it (``ready``: ``MADV_POPULATE_WRITE``, an ENOSPC still a clean error), one slot ahead
of the producer's write. The ring's memory then follows what the job really buffers.

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

# madvise(2) options of Linux 5.14+ (Python 3.11's mmap module does not name them): fault pages in now,
# allocating them, and fail with EFAULT/ENOMEM -- never SIGBUS -- when /dev/shm is full
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
        warm = spec.n_slots if spec.warm_slots is None else spec.warm_slots
        self._ready = bytearray([1]) * warm + bytearray(spec.n_slots - warm)  # supervisor: slots pre-faulted
        # By pid, not by flag: only the process that created the segment may unlink it.
        self._owner_pid = os.getpid() if owner else None
        self._stride = _stride(spec.slot_size)
        self._mmap: mmap.mmap | None = mm
        # One view for the life of the store; slices of it are cheap and keep the mapping alive for as
        # long as any Arrow buffer built on them lives (the mmap refuses to close while they exist).
        self._view: memoryview | None = memoryview(mm)

    @classmethod
    def create(
        cls, slot_size: int, n_slots: int, prefix: str = DEFAULT_PREFIX, warm_slots: int | None = None
    ) -> ShmRing:
        """Create, size, and pre-fault a new segment (supervisor only); the caller must ``destroy`` it.

        ``warm_slots``: pre-fault only the first so many slots now, the others as they are first granted
        (``ready``); None pre-faults all of them.
        """
        if slot_size <= 0 or n_slots <= 0:
            raise ValueError(f"slot_size and n_slots must be positive, got {slot_size} and {n_slots}")
        if warm_slots is not None and warm_slots >= n_slots:
            warm_slots = None
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
            if warm_slots is not None:
                mm = mmap.mmap(fd, size, mmap.MAP_SHARED)  # populating holes would allocate them all
                _populate(mm, 0, warm_slots * _stride(slot_size), write=True, need=size, free=free)
                os.close(fd)
                spec = StoreSpec(kind="shm", name=name, slot_size=slot_size, n_slots=n_slots, warm_slots=warm_slots)
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
            if spec.warm_slots is None:
                mm = mmap.mmap(fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE)
            else:  # the warm slots only: the others are mapped as they are first touched (already allocated)
                mm = mmap.mmap(fd, size, mmap.MAP_SHARED)
                _populate(mm, 0, spec.warm_slots * _stride(spec.slot_size), write=False)
        finally:
            os.close(fd)
        return cls(spec, path, mm, owner=False)

    def ready(self, slot: int) -> None:
        """Pre-fault ``slot`` if it is not yet (supervisor, when granting it): allocated, zeroed and mapped."""
        if self._ready[slot]:
            return
        if self._mmap is None:
            raise ValueError(f"ring {self.spec.name} is closed")
        free = os.statvfs(SHM_DIR)
        _populate(
            self._mmap,
            slot * self._stride,
            self._stride,
            write=True,
            need=self._stride,
            free=free.f_bavail * free.f_frsize,
        )
        self._ready[slot] = 1

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


def _populate(mm: mmap.mmap, offset: int, length: int, *, write: bool, need: int = 0, free: int = 0) -> None:
    """Fault ``length`` bytes of ``mm`` from ``offset`` in now; ``write`` allocates holes (a full tmpfs: UserError).

    ``MADV_POPULATE_*`` does it in one call; on a kernel without it, one touch per page does the same
    (a write allocates; /dev/shm was checked for room when the ring was made).
    """
    if length <= 0:
        return
    try:
        mm.madvise(_MADV_POPULATE_WRITE if write else _MADV_POPULATE_READ, offset, length)
        return
    except OSError as exc:
        if exc.errno in (errno.EFAULT, errno.ENOMEM, errno.ENOSPC):
            raise _no_room(need, free) from exc
        if exc.errno != errno.EINVAL:  # EINVAL: a kernel before 5.14
            raise
    pages = np.frombuffer(mm, dtype=np.uint8)[offset : offset + length : mmap.PAGESIZE]
    if write:
        pages[:] = pages  # a write per page allocates it, keeping whatever a slot held
    else:
        int(pages.sum())


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
