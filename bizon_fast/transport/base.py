"""A batch store: fixed slots that producers fill with Arrow IPC and consumers read zero-copy.

The control plane (which slot is free, filled, or held by whom) lives in the supervisor and travels
over pipes; the store only moves bytes. That split is what makes SIGKILL safe: no worker ever holds a
lock, and the supervisor alone decides when a slot is reused.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import msgspec
import pyarrow as pa


class SlotOverflow(Exception):
    """The batches do not fit in one slot; the caller splits them (see ``fit_to_slots``)."""


class StoreSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a worker needs to attach to the store; msgpack-encodable."""

    kind: str  # "shm" | "memory"
    name: str
    slot_size: int
    n_slots: int
    #: shm: every page allocated and mapped at creation; False: each page when a batch first reaches it
    prefaulted: bool = True


class BatchStore(ABC):
    spec: StoreSpec

    @abstractmethod
    def write(self, slot: int, batches: list[pa.RecordBatch]) -> int:
        """Serialize ``batches`` (one schema) into ``slot``; return the bytes used. Raise SlotOverflow."""

    @abstractmethod
    def read(self, slot: int, nbytes: int) -> list[pa.RecordBatch]:
        """The batches in ``slot``, zero-copy where the store allows. Valid until the slot is freed."""

    def close(self) -> None:
        """Detach (workers)."""

    def destroy(self) -> None:
        """Detach and remove the store (supervisor only)."""
