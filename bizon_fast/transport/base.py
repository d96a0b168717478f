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
    #: slots 0..warm_slots-1 are pre-faulted at creation and mapped populated by workers; the others are
    #: made ready one by one (``BatchStore.ready``) the first time they are granted. None: all of them.
    warm_slots: int | None = None


class BatchStore(ABC):
    spec: StoreSpec

    @abstractmethod
    def write(self, slot: int, batches: list[pa.RecordBatch]) -> int:
        """Serialize ``batches`` (one schema) into ``slot``; return the bytes used. Raise SlotOverflow."""

    @abstractmethod
    def read(self, slot: int, nbytes: int) -> list[pa.RecordBatch]:
        """The batches in ``slot``, zero-copy where the store allows. Valid until the slot is freed."""

    def ready(self, slot: int) -> None:
        """Make ``slot`` writable without a page fault on the hot path (supervisor, before granting it)."""

    def close(self) -> None:
        """Detach (workers)."""

    def destroy(self) -> None:
        """Detach and remove the store (supervisor only)."""
