"""Batch stores: where producers put Arrow batches for consumers (shared-memory ring or in-process).

``create_store`` is for the supervisor, which owns the store's lifetime; ``open_store`` is for workers,
which receive the msgpack-encodable ``StoreSpec`` over their pipe and attach to it.
"""

from __future__ import annotations

from bizon_fast.transport.base import BatchStore, SlotOverflow, StoreSpec
from bizon_fast.transport.fit import fit_to_slots, ipc_size
from bizon_fast.transport.memory import MemoryStore
from bizon_fast.transport.ring import ShmRing, cleanup_stale_segments

__all__ = [
    "BatchStore",
    "MemoryStore",
    "ShmRing",
    "SlotOverflow",
    "StoreSpec",
    "cleanup_stale_segments",
    "create_store",
    "fit_to_slots",
    "ipc_size",
    "open_store",
]


def create_store(kind: str, slot_size: int, n_slots: int, prefault: bool = True) -> BatchStore:
    """A new store of ``kind`` ("shm" or "memory"); the caller (the supervisor) must ``destroy`` it.

    ``prefault`` False: the ring takes memory only as far as batches reach (see ``transport/ring.py``).
    """
    if kind == "shm":
        return ShmRing.create(slot_size, n_slots, prefault=prefault)
    if kind == "memory":
        return MemoryStore.create(slot_size, n_slots)
    raise ValueError(f"unknown store kind {kind!r}: expected 'shm' or 'memory'")


def open_store(spec: StoreSpec) -> BatchStore:
    """Attach to the store ``spec`` describes: map the segment ("shm"), or find the same-process store ("memory")."""
    if spec.kind == "shm":
        return ShmRing.attach(spec)
    if spec.kind == "memory":
        return MemoryStore.attach(spec)
    raise ValueError(f"unknown store kind {spec.kind!r}: expected 'shm' or 'memory'")
