"""The consumer: takes batches from an inlet, transforms and buffers them, writes runs of a split's seqs.

One consumer serves both roads a batch can arrive by. What is the same on both -- the transforms, the
buffer per split, the cut into runs of consecutive seqs (one destination write each, retried by
``write_with_retries``) -- lives here once; where batches come from, when to write, and how a write is
reported are the inlet's:

- ``RingInlet``: ring slots handed over by the supervisor (``Deliver``), reported ``Written`` with the
  slots to free;
- ``BrokerInlet`` (``engine/broker_io.py``): Kafka or RabbitMQ messages, reported ``Wrote`` with their
  cursor positions, then acknowledged to the broker once the supervisor committed them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import pyarrow as pa

from bizon_fast.engine import messages as m
from bizon_fast.engine.build import build_destination
from bizon_fast.engine.channel import Channel
from bizon_fast.engine.spec import WorkerSpec
from bizon_fast.errors import StepFailed, UserError
from bizon_fast.faults import fault_point
from bizon_fast.transport.base import BatchStore

log = logging.getLogger("bizon_fast.worker")

WRITE_RETRIES = 3  # attempts after the first for a failing destination write


def write_with_retries(destination: Any, split_id: str, first: int, last: int, batches: list[pa.RecordBatch]) -> None:
    """A destination write, retried with backoff: a transient outage is not worth a restart.

    A UserError or StepFailed is final: retrying a lock wait that hit ``lock_timeout`` would multiply it.
    """
    for attempt in range(WRITE_RETRIES + 1):
        try:
            destination.write(split_id, first, last, batches)
            return
        except (UserError, StepFailed):
            raise
        except Exception as exc:
            if attempt == WRITE_RETRIES:
                raise
            delay = 0.5 * 2**attempt
            log.warning("write of %s seq %d-%d failed (%s); retrying in %.1fs", split_id, first, last, exc, delay)
            time.sleep(delay)


@dataclass(slots=True)
class Held:
    """A batch in the consumer's buffer: transformed, not yet written."""

    seq: int
    batches: list[pa.RecordBatch]
    rows: int
    nbytes: int  # after transforms
    ref: Any  # what the inlet needs to report it: the ring slot, or the broker frame


class Inlet(Protocol):
    """Where a consumer's batches come from, and how their writes are reported."""

    def attach(self, consumer: Consumer) -> None:
        """Bind to the consumer whose buffer the inlet fills."""

    def run(self) -> None:
        """Receive batches into the consumer until told to stop."""

    def written(
        self, split_id: str, first: int, last: int, refs: list[Any], rows: int, nbytes: int, large_rows: int = 0
    ) -> None:
        """Seqs ``first..last`` of ``split_id`` are durable: report them (``large_rows``: see Destination)."""

    def close(self) -> None: ...


class Consumer:
    def __init__(self, chan: Channel, spec: WorkerSpec, inlet: Inlet) -> None:
        self.chan = chan
        self.spec = spec
        self.inlet = inlet
        context = msgspec.structs.replace(spec.context, worker=f"consumer-{spec.index}")
        self.destination = build_destination(spec.destination_name, spec.destination, context)
        self.transform: Callable[[list[pa.RecordBatch]], list[pa.RecordBatch]] | None = None
        if spec.transforms:  # the transform machinery imports polars: a pipeline without transforms never loads it
            from bizon_fast.transform.apply import build_transforms

            self.transform = build_transforms(spec.transforms)
        self.buffer: dict[str, list[Held]] = {}
        self.buffered_bytes = 0
        self.held = 0
        inlet.attach(self)

    def run(self) -> None:
        try:
            self.inlet.run()
        finally:
            self.inlet.close()
            self.destination.close()

    def take(self, split_id: str, seq: int, batches: list[pa.RecordBatch], rows: int, ref: Any) -> None:
        """Transform a received batch and buffer it."""
        if self.transform is not None:
            batches = self.transform(batches)
        nbytes = sum(b.nbytes for b in batches)
        self.buffer.setdefault(split_id, []).append(Held(seq, batches, rows, nbytes, ref))
        self.buffered_bytes += nbytes
        self.held += 1

    def drop_buffered(self) -> None:
        """Forget what is buffered, unwritten (broker mode: the partitions moved to another consumer)."""
        self.buffer = {}
        self.buffered_bytes = 0
        self.held = 0

    def write_buffered(self) -> None:
        """Write what is buffered: one destination write per run of consecutive seqs of a split."""
        buffer, self.buffer = self.buffer, {}
        self.buffered_bytes = 0
        self.held = 0
        for split_id, items in buffer.items():
            items.sort(key=lambda h: h.seq)
            run: list[Held] = []
            for item in items:
                if run and item.seq != run[-1].seq + 1:
                    self._write_run(split_id, run)
                    run = []
                run.append(item)
            self._write_run(split_id, run)

    def _write_run(self, split_id: str, run: list[Held]) -> None:
        first, last = run[0].seq, run[-1].seq
        batches = [b for item in run for b in item.batches]
        large_before = self.destination.large_rows
        write_with_retries(self.destination, split_id, first, last, batches)
        del batches
        for item in run:
            item.batches = []  # no reference into a ring slot may outlive the report that frees it
        self.inlet.written(
            split_id,
            first,
            last,
            [item.ref for item in run],
            sum(i.rows for i in run),
            sum(i.nbytes for i in run),
            self.destination.large_rows - large_before,
        )


class RingInlet:
    """Batches from ring slots, delivered by the supervisor; a write frees its slots (``Written``).

    The consumer writes when it holds ``buffer_bytes`` or its slot budget (``max_held``), when the oldest
    held batch is ``flush_timeout`` old (the receive timeout of its pipe), or when told (``Flush``, ``Stop``).
    """

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self.oldest = 0.0
        self.consumer: Consumer | None = None

    def attach(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def run(self) -> None:
        c = self.consumer
        assert c is not None
        while True:
            timeout = None
            if c.held and c.spec.flush_timeout > 0:
                timeout = max(0.0, self.oldest + c.spec.flush_timeout - time.monotonic())
            msg = c.chan.recv(timeout)
            if msg is None:
                c.write_buffered()
            elif isinstance(msg, m.Deliver):
                self.take(c, msg)
            elif isinstance(msg, m.Flush):
                c.write_buffered()
            elif isinstance(msg, m.Stop):
                c.write_buffered()
                return
            else:
                raise RuntimeError(f"consumer got unexpected {type(msg).__name__}")

    def take(self, c: Consumer, msg: m.Deliver) -> None:
        batches = self.store.read(msg.slot, msg.nbytes)
        if not c.held:
            self.oldest = time.monotonic()
        c.take(msg.split_id, msg.seq, batches, msg.rows, msg.slot)
        if c.buffered_bytes >= c.spec.buffer_bytes or c.held >= c.spec.max_held:
            c.write_buffered()

    def written(
        self, split_id: str, first: int, last: int, refs: list[Any], rows: int, nbytes: int, large_rows: int = 0
    ) -> None:
        fault_point("consumer.after_write")  # durable but unreported: the supervisor must replay it
        assert self.consumer is not None
        self.consumer.chan.send(m.Written(split_id, first, last, refs, rows, nbytes, large_rows))

    def close(self) -> None:
        """Nothing to release: the supervisor owns the ring and re-delivers what this consumer held."""
