"""The slot pool: the ring's free slots, and which producer holds which grant.

A producer never asks for a slot: the pool grants each producer reading a split ``GRANTS_PER_PRODUCER``
free slots ahead of need, so a batch is written the moment it is cut. A producer without a grant waits
in line and is served first when slots come back. A slot comes back when a consumer reports the batch
in it written, or when the producer holding its grant dies (a granted slot holds nothing published).
Grants are recorded on the producer's handle (``WorkerHandle.granted``), so a death says which to take back.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bizon_fast.config.engine import QueueDetails
from bizon_fast.engine import messages as m
from bizon_fast.engine.handles import WorkerHandle
from bizon_fast.errors import UserError

MiB = 1024 * 1024
GRANTS_PER_PRODUCER = 2


#: the batch size of a source that holds a core when the config names none (engine.queue.config.batch_size_mb
#: defaults to 4): its producer makes ~1M records a second at best, so smaller batches cost the supervisor nothing
#: measurable, while the consumer starts writing sooner and the write left after the source's last page is a
#: quarter as long (1M generator records -> json, 2 x 7 interleaved rounds: 0.934 -> 0.897 s and 0.919 -> 0.892 s
#: after start-up)
HELD_CORE_BATCH_MB = 1.0


def batch_size_mb(queue: QueueDetails, holds_a_core: bool) -> float:
    """The producers' batch size: ``queue.batch_size_mb`` when the config gives it, else the default, or
    ``HELD_CORE_BATCH_MB`` for a source that holds a core (a bizon source)."""
    if holds_a_core and "batch_size_mb" not in queue.model_fields_set:
        return min(queue.batch_size_mb, HELD_CORE_BATCH_MB)
    return queue.batch_size_mb


@dataclass(frozen=True)
class RingLayout:
    slot_size: int
    n_slots: int
    max_held: int  # slots a consumer may hold at once


def ring_layout(
    *,
    batch_size_mb: float,
    ring_size_mb: float | None,
    buffer_size_mb: float,
    producers: int,
    consumers: int,
    slot_batch_mb: float | None = None,
) -> RingLayout:
    """Slot size (twice a batch, so a batch over its target fits), slot count and per-consumer held-slot budget.

    ``slot_batch_mb`` sizes the slots for batches of that size instead of ``batch_size_mb``: a source that sends
    smaller batches than the config's (a bizon source's 1 MiB) keeps the config's slots, so the largest row a
    slot takes does not shrink with its batches, while the slot count and the held-slot budget follow its batches
    (a consumer's buffer still fills)."""
    batch_bytes = int(batch_size_mb * MiB)
    slot_batch = int((slot_batch_mb or batch_size_mb) * MiB)
    slot_size = max(64 * 1024, math.ceil(2 * max(batch_bytes, slot_batch) / 4096) * 4096)
    buffer_bytes = int(buffer_size_mb * MiB)
    max_held = 2 if buffer_bytes == 0 else max(2, math.ceil(buffer_bytes / batch_bytes) + 1)
    minimum = producers * GRANTS_PER_PRODUCER + consumers * 2 + 1
    if ring_size_mb:
        n_slots = int(ring_size_mb * MiB) // slot_size
        if n_slots < minimum:
            raise UserError(
                f"engine.queue.config.ring_size_mb: {ring_size_mb} MiB holds {n_slots} slots of "
                f"{slot_size // MiB} MiB; {producers} producers and {consumers} consumers need at least "
                f"{math.ceil(minimum * slot_size / MiB)} MiB (or lower engine.queue.config.batch_size_mb)"
            )
        max_held = max(2, min(max_held, (n_slots - producers * GRANTS_PER_PRODUCER) // consumers))
    else:
        n_slots = producers * GRANTS_PER_PRODUCER + consumers * max_held + 2
    return RingLayout(slot_size, n_slots, max_held)


class SlotPool:
    def __init__(self, n_slots: int, send: Callable[[WorkerHandle, m.Msg], None]) -> None:
        self.size = n_slots
        self.free: list[int] = list(range(n_slots - 1, -1, -1))
        self.waiting: deque[WorkerHandle] = deque()  # producers waiting for a slot
        self.send = send

    def top_up(self, w: WorkerHandle) -> None:
        """Grant ``w`` free slots up to its budget; with none free, it waits in line."""
        if w.exited or w.split_id is None:
            return
        while len(w.granted) < GRANTS_PER_PRODUCER and self.free:
            slot = self.free.pop()
            w.granted.append(slot)
            self.send(w, m.Grant(slot))
        if not w.granted and w not in self.waiting:
            self.waiting.append(w)

    def serve(self, producers: Iterable[WorkerHandle]) -> None:
        """Slots came back: the producers in line first, then any reading producer below its budget."""
        while self.waiting and self.free:
            self.top_up(self.waiting.popleft())
        for w in producers:
            if w.split_id is not None and len(w.granted) < GRANTS_PER_PRODUCER and self.free:
                self.top_up(w)

    def filled(self, w: WorkerHandle, slot: int) -> None:
        """``w`` wrote a batch into its granted ``slot``: the slot now belongs to the batch."""
        w.granted.remove(slot)

    def release(self, slots: Iterable[int]) -> None:
        """The batches in ``slots`` are written: the slots are free."""
        self.free.extend(slots)

    def reclaim(self, w: WorkerHandle) -> None:
        """``w`` is gone: its grants, empty or half-written, are free (nothing was published from them)."""
        self.free.extend(w.granted)
        w.granted.clear()
        if w in self.waiting:
            self.waiting.remove(w)
