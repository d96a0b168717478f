"""The batch stores: shared-memory ring across processes, the in-process store, and slot fitting.

Children are started with the ``spawn`` context, as the engine does, so these tests exercise a real
attach from a fresh interpreter rather than an inherited mapping.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from bizon_fast.errors import UserError
from bizon_fast.transport import (
    MemoryStore,
    ShmRing,
    SlotOverflow,
    StoreSpec,
    cleanup_stale_segments,
    create_store,
    fit_to_slots,
    ipc_size,
    open_store,
)
from bizon_fast.transport import ring as shm_module

SPAWN = mp.get_context("spawn")
TEST_PREFIX = "bizon_fast_test"


def _sample_batch(seed: int, rows: int = 10_000) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    ints = rng.integers(0, 1 << 40, rows)
    return pa.record_batch(
        {
            "id": pa.array(np.arange(rows) + seed * rows),
            "value": pa.array(rng.random(rows)),
            "name": pa.array([f"n{seed}-{i}" for i in range(rows)]),
            "maybe": pa.array(ints, mask=ints % 7 == 0),
        }
    )


def _buffer_addresses(batches: list[pa.RecordBatch]) -> list[tuple[int, int]]:
    return [
        (buf.address, buf.size)
        for batch in batches
        for column in batch.columns
        for buf in column.buffers()
        if buf is not None and buf.size > 0
    ]


def _mapping_range(ring: ShmRing) -> tuple[int, int]:
    base = pa.py_buffer(ring._view).address
    return base, base + len(ring._view)


def _all_inside(batches: list[pa.RecordBatch], lo: int, hi: int) -> bool:
    return all(lo <= addr and addr + size <= hi for addr, size in _buffer_addresses(batches))


@pytest.fixture
def ring():
    store = ShmRing.create(slot_size=1 << 20, n_slots=4, prefix=TEST_PREFIX)
    yield store
    store.destroy()


# -- children (module level: spawn pickles them by reference) ------------------------------------


def _child_roundtrip(spec: StoreSpec, nbytes: int, conn) -> None:
    store = open_store(spec)
    got = store.read(0, nbytes)
    equal = pa.Table.from_batches(got).equals(pa.Table.from_batches([_sample_batch(0)]))
    zero_copy = _all_inside(got, *_mapping_range(store))
    written = store.write(1, [_sample_batch(1), _sample_batch(2)])
    del got
    store.close()
    conn.send((equal, zero_copy, written))


def _child_write_then_hang(spec: StoreSpec, conn) -> None:
    store = open_store(spec)
    conn.send(store.write(2, [_sample_batch(7)]))
    time.sleep(60)


# -- sizing -----------------------------------------------------------------------------------------


def _real_stream_size(batches: list[pa.RecordBatch]) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().size


def test_ipc_size_is_exact_for_whole_sliced_and_dictionary_batches():
    batch = _sample_batch(0)
    cases = [
        [batch],
        [batch, batch],
        [batch.slice(3, 1000)],
        [batch.slice(0, 10), batch.slice(5000, 17), batch.slice(9999)],
        [pa.record_batch({"d": pa.array(["a", "b", "a"] * 500).dictionary_encode()})],
    ]
    for batches in cases:
        assert ipc_size(batches) == _real_stream_size(batches)


def test_slice_is_measured_truncated_not_as_its_parent():
    batch = _sample_batch(0)
    tenth = batch.slice(0, batch.num_rows // 10)
    assert pa.ipc.get_record_batch_size(tenth) < pa.ipc.get_record_batch_size(batch) / 5


# -- shm ring ---------------------------------------------------------------------------------------


def test_round_trip_across_processes_both_ways(ring):
    nbytes = ring.write(0, [_sample_batch(0)])
    parent_end, child_end = SPAWN.Pipe()
    proc = SPAWN.Process(target=_child_roundtrip, args=(ring.spec, nbytes, child_end))
    proc.start()
    try:
        assert parent_end.poll(60), "child did not answer"
        equal, zero_copy, written = parent_end.recv()
    finally:
        proc.join(30)
    assert proc.exitcode == 0
    assert equal, "child read different data than the parent wrote"
    assert zero_copy, "child's batches do not point into its mapping"
    got = pa.Table.from_batches(ring.read(1, written))
    assert got.equals(pa.Table.from_batches([_sample_batch(1), _sample_batch(2)]))


def test_read_is_zero_copy(ring):
    written = ring.write(3, [_sample_batch(0)])
    got = ring.read(3, written)
    lo, hi = _mapping_range(ring)
    slot_lo = lo + 3 * shm_module._stride(ring.spec.slot_size)
    assert _all_inside(got, slot_lo, slot_lo + written)
    assert got[0].column("id").to_pylist()[:3] == [0, 1, 2]


def test_overflow_raises_before_writing(ring):
    offset = shm_module._stride(ring.spec.slot_size)
    marker = b"\xab" * 4096
    ring._view[offset : offset + len(marker)] = marker
    big = _sample_batch(0, rows=60_000)  # ~1.7 MiB > 1 MiB slot
    with pytest.raises(SlotOverflow):
        ring.write(1, [big])
    assert bytes(ring._view[offset : offset + len(marker)]) == marker, "overflowing write touched the slot"


def test_dev_shm_too_small_names_the_knob(monkeypatch):
    real = os.statvfs("/dev/shm")

    class Tiny:
        f_bavail = 10
        f_frsize = real.f_frsize

    monkeypatch.setattr(os, "statvfs", lambda path: Tiny())
    before = set(os.listdir("/dev/shm"))
    with pytest.raises(UserError) as info:
        ShmRing.create(slot_size=8 << 20, n_slots=8, prefix=TEST_PREFIX)
    message = str(info.value)
    assert "engine.queue.config.ring_size_mb" in message
    assert "64 MiB" in message and "\n" not in message
    assert set(os.listdir("/dev/shm")) == before


@pytest.mark.parametrize("fallocate", ["supported", "unsupported"])
def test_prefault_allocates_and_maps_every_page(monkeypatch, fallocate):
    if fallocate == "unsupported":

        def no_fallocate(fd, offset, length):
            raise OSError(errno.EOPNOTSUPP, "not supported")

        monkeypatch.setattr(os, "posix_fallocate", no_fallocate)
    ring = ShmRing.create(slot_size=2 << 20, n_slots=4, prefix=TEST_PREFIX)
    try:
        size = len(ring._view)
        assert os.stat(ring.path).st_blocks * 512 >= size, "segment pages not allocated"
        resident = _resident_bytes(ring.path)
        assert resident >= size, f"only {resident} of {size} bytes mapped in"
        worker = open_store(ring.spec)
        assert _resident_bytes(ring.path) >= 2 * size, "attach did not populate its mapping"
        worker.close()
    finally:
        ring.destroy()


def test_full_dev_shm_at_allocation_is_a_user_error(monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    before = set(os.listdir("/dev/shm"))
    with pytest.raises(UserError, match="engine.queue.config.ring_size_mb"):
        ShmRing.create(slot_size=1 << 20, n_slots=2, prefix=TEST_PREFIX)
    assert set(os.listdir("/dev/shm")) == before, "a failed create left its file behind"


def test_only_the_creator_destroys(ring):
    worker = open_store(ring.spec)
    with pytest.raises(RuntimeError, match="only the process that created"):
        worker.destroy()
    worker.close()
    assert os.path.exists(ring.path)


def _resident_bytes(path: str) -> int:
    """Sum of Rss over this process's mappings of ``path``."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                inside = line.rstrip().endswith(path)
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def test_sigkill_of_attached_child_keeps_segment(ring):
    parent_end, child_end = SPAWN.Pipe()
    proc = SPAWN.Process(target=_child_write_then_hang, args=(ring.spec, child_end))
    proc.start()
    try:
        assert parent_end.poll(60), "child did not answer"
        written = parent_end.recv()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    assert os.path.exists(ring.path)
    assert ring.spec.name not in cleanup_stale_segments(TEST_PREFIX)
    assert pa.Table.from_batches(ring.read(2, written)).equals(pa.Table.from_batches([_sample_batch(7)]))


def test_cleanup_removes_segments_of_dead_pids_only():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = f"{TEST_PREFIX}_{child.pid}_deadbeef"
    alive = f"{TEST_PREFIX}_{os.getpid()}_cafef00d"
    other = f"{TEST_PREFIX}x_{child.pid}_deadbeef"  # another prefix: not ours to judge
    for name in (dead, alive, other):
        with open(os.path.join("/dev/shm", name), "wb") as f:
            f.write(b"x")
    try:
        removed = cleanup_stale_segments(TEST_PREFIX)
        assert removed == [dead]
        assert not os.path.exists(os.path.join("/dev/shm", dead))
        assert os.path.exists(os.path.join("/dev/shm", alive))
        assert os.path.exists(os.path.join("/dev/shm", other))
    finally:
        for name in (dead, alive, other):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join("/dev/shm", name))


def test_recycled_pid_is_not_mistaken_for_the_creator():
    # A live pid whose process started long after the segment was made cannot have made it.
    assert shm_module._pid_is_alive(os.getpid(), time.time()) is True
    assert shm_module._pid_is_alive(os.getpid(), time.time() - 3600) is False


def test_close_with_live_batches_keeps_them_valid():
    ring = ShmRing.create(slot_size=1 << 20, n_slots=2, prefix=TEST_PREFIX)
    got = ring.read(0, ring.write(0, [_sample_batch(3)]))
    ring.destroy()  # must not raise although `got` still points into the mapping
    assert not os.path.exists(ring.path)
    assert pa.Table.from_batches(got).equals(pa.Table.from_batches([_sample_batch(3)]))
    with pytest.raises(ValueError):
        ring.read(0, 100)
    del got
    gc.collect()


# -- memory store -----------------------------------------------------------------------------------


def test_memory_store_matches_ring_sizes_and_overflow(ring):
    mem = create_store("memory", slot_size=ring.spec.slot_size, n_slots=4)
    try:
        batches = [_sample_batch(0), _sample_batch(1, rows=100)]
        assert mem.write(0, batches) == ring.write(0, batches)
        assert mem.read(0, ipc_size(batches))[1] is batches[1]
        with pytest.raises(SlotOverflow):
            mem.write(1, [_sample_batch(0, rows=60_000)])
    finally:
        mem.destroy()


def test_memory_store_is_shared_by_threads_only():
    mem = create_store("memory", slot_size=1 << 20, n_slots=2)
    try:
        seen = []
        thread = threading.Thread(target=lambda: seen.append(open_store(mem.spec)))
        thread.start()
        thread.join()
        assert seen == [mem]
        pid = os.getpid()
        foreign = StoreSpec(
            kind="memory", name=mem.spec.name.replace(f"_{pid}_", f"_{pid + 1}_"), slot_size=1, n_slots=1
        )
        with pytest.raises(RuntimeError, match="threads only"):
            open_store(foreign)
    finally:
        mem.destroy()
    with pytest.raises(RuntimeError):
        MemoryStore.attach(mem.spec)


# -- fitting ----------------------------------------------------------------------------------------


def test_fit_splits_a_batch_three_slots_large_in_order():
    batch = _sample_batch(0, rows=100_000)
    slot = ipc_size([batch]) // 3
    groups = fit_to_slots([batch], slot)
    assert len(groups) >= 3
    assert all(ipc_size(group) <= slot for group in groups)
    rejoined = pa.Table.from_batches([piece for group in groups for piece in group])
    assert rejoined.equals(pa.Table.from_batches([batch]))
    # Slices, not copies: every piece's fixed-width data lies inside the parent's buffer.
    parent = batch.column("id").buffers()[1]
    for piece in (p for group in groups for p in group):
        data = piece.column("id").buffers()[1]
        assert parent.address <= data.address < parent.address + parent.size


def test_fit_packs_small_batches_and_every_group_writes(ring):
    small = [_sample_batch(i, rows=2_000) for i in range(20)]
    groups = fit_to_slots(small, ring.spec.slot_size)
    assert 1 < len(groups) < len(small)
    assert [b for g in groups for b in g] == small
    for group in groups:
        ring.write(0, group)


def test_fit_rejects_a_single_row_larger_than_a_slot():
    wide = pa.record_batch({"blob": pa.array([b"x" * 5000, b"y"])})
    with pytest.raises(UserError, match="engine.queue.config.batch_size_mb"):
        fit_to_slots([wide], 4096)


def test_store_factories_reject_unknown_kinds():
    with pytest.raises(ValueError, match="unknown store kind"):
        create_store("kafka", slot_size=1 << 20, n_slots=2)
    with pytest.raises(ValueError, match="unknown store kind"):
        open_store(StoreSpec(kind="kafka", name="x", slot_size=1, n_slots=1))
    ring = create_store("shm", slot_size=64 << 10, n_slots=2)
    try:
        assert isinstance(ring, ShmRing) and ring.spec.name.startswith(f"bizon_fast_{os.getpid()}_")
        worker = open_store(ring.spec)
        assert worker.read(1, ring.write(1, [_sample_batch(9, rows=100)]))[0].num_rows == 100
        worker.close()
    finally:
        ring.destroy()
