"""The in-process batch store (``engine.queue.type: python_queue``): slots hold batch lists, no serialization.

Producers and consumers are threads of one process, so the batches themselves can be handed over.
The slot size is still enforced with the same exact IPC size as the shared-memory ring, so a pipeline
that runs here splits its batches exactly as it would with ``shm``: debugging in-process shows the
same batch boundaries as production.
"""

from __future__ import annotations

import os
import secrets
import threading

import pyarrow as pa

from bizon_fast.transport.base import BatchStore, SlotOverflow, StoreSpec
from bizon_fast.transport.fit import ipc_size

# name -> store, so that threads "attach" by spec name the way processes attach to a segment.
_registry: dict[str, MemoryStore] = {}
_registry_lock = threading.Lock()


class MemoryStore(BatchStore):
    """Slots as a dict ``slot -> (batches, nbytes)``; thread-safe for distinct slots."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self._slots: dict[int, tuple[list[pa.RecordBatch], int]] = {}

    @classmethod
    def create(cls, slot_size: int, n_slots: int, prefix: str = "bizon_fast") -> MemoryStore:
        """A new store registered under a name carrying this pid, so another process cannot mistake it."""
        if slot_size <= 0 or n_slots <= 0:
            raise ValueError(f"slot_size and n_slots must be positive, got {slot_size} and {n_slots}")
        name = f"{prefix}_mem_{os.getpid()}_{secrets.token_hex(4)}"
        store = cls(StoreSpec(kind="memory", name=name, slot_size=slot_size, n_slots=n_slots))
        with _registry_lock:
            _registry[name] = store
        return store

    @classmethod
    def attach(cls, spec: StoreSpec) -> MemoryStore:
        """The store registered under ``spec.name``; only threads of the creating process can share it."""
        with _registry_lock:
            store = _registry.get(spec.name)
        # A forked child inherits a copy of the registry: the pid in the name tells the copy from the store.
        if store is None or spec.name.rsplit("_", 2)[-2] != str(os.getpid()):
            raise RuntimeError(
                f"memory store {spec.name} lives in another process (or was destroyed): the in-process "
                "store (engine.queue.type python_queue) is shared by threads only; use shm across processes"
            )
        return store

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.spec.n_slots:
            raise IndexError(f"slot {slot} out of range 0..{self.spec.n_slots - 1}")

    def write(self, slot: int, batches: list[pa.RecordBatch]) -> int:
        """Keep ``batches`` in ``slot``; return the IPC size they would take in the ring (SlotOverflow alike)."""
        self._check_slot(slot)
        if not batches:
            raise ValueError("write needs at least one batch")
        schema = batches[0].schema
        for batch in batches[1:]:
            if not batch.schema.equals(schema):
                raise ValueError("all batches written to one slot must share one schema")
        need = ipc_size(batches)
        if need > self.spec.slot_size:
            raise SlotOverflow(f"{need} bytes do not fit a slot of {self.spec.slot_size} bytes")
        self._slots[slot] = (list(batches), need)
        return need

    def read(self, slot: int, nbytes: int) -> list[pa.RecordBatch]:
        """The very batch objects written to ``slot`` (nothing to copy within one process)."""
        self._check_slot(slot)
        try:
            batches, written = self._slots[slot]
        except KeyError:
            raise ValueError(f"slot {slot} of {self.spec.name} holds nothing") from None
        if nbytes != written:
            raise ValueError(f"slot {slot} holds {written} bytes, reader expected {nbytes}")
        return list(batches)

    def destroy(self) -> None:
        """Drop every slot and unregister the name."""
        self._slots.clear()
        with _registry_lock:
            _registry.pop(self.spec.name, None)
