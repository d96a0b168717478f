"""The producer: reads a split's pages, coalesces them into batches, and hands each batch to an outlet.

One producer serves both roads a batch can take. What is the same on both -- the skip of rows a
resumed cursor already covered, the coalescing of pages, the extraction stamp, the cursor position of
every batch, the stream-mode wait for commits -- lives here once; where the batch goes is the outlet's:

- ``RingOutlet``: a ring slot granted by the supervisor, written with Arrow IPC, reported ``Filled``;
- ``BrokerOutlet`` (``engine/broker_io.py``): a Kafka or RabbitMQ message, reported ``Sent``.

Positions. Every batch's cursor position is ``[source position, rows to skip]``, encoded here with
msgpack and carried as bytes by the supervisor and the checkpoint backend until a producer decodes it
again to resume. A batch that ends inside a source page (a page larger than a ring slot is cut) gets
``[position before that page, rows of it already sent]``, so a resume is exact at any batch boundary.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Protocol

import msgspec
import pyarrow as pa

from bizon_fast.cursor import decode_position, encode_position
from bizon_fast.engine import messages as m
from bizon_fast.engine.build import build_source
from bizon_fast.engine.channel import Channel, StopRequested
from bizon_fast.engine.incremental import apply_to_source
from bizon_fast.engine.spec import WorkerSpec
from bizon_fast.engine.streaming import commit_source_offsets, source_pages
from bizon_fast.faults import fault_point
from bizon_fast.source.base import Split
from bizon_fast.source.incremental import Watermark, batch_watermark
from bizon_fast.source.records import EXTRACTED_AT_KEY
from bizon_fast.transport.base import BatchStore
from bizon_fast.transport.fit import fit_to_slots

log = logging.getLogger("bizon_fast.worker")

LINGER_S = 0.5  # ring: a producer writes what it has after this long, even below batch_bytes


class Outlet(Protocol):
    """Where a producer's batches go."""

    #: write what is pending after this many seconds even below ``batch_bytes``; None: by size only
    #: (broker mode: a split re-read from its committed cursor must cut the same batches under the same seqs)
    linger_s: float | None

    def attach(self, producer: Producer) -> None:
        """Bind to the producer: its channel for reports, its ``receive`` to serve control while waiting."""

    def accept(self, msg: m.Msg) -> bool:
        """Take a control message meant for the outlet (a ring slot grant); False if it is not one."""

    def groups(self, batches: list[pa.RecordBatch]) -> list[list[pa.RecordBatch]]:
        """Cut the stamped pending batches into the groups sent one seq each."""

    def put(self, split: Split, seq: int, epoch: int, group: list[pa.RecordBatch], batch: BatchInfo) -> None:
        """Send one batch (seq ``seq`` of ``split``) and report it to the supervisor."""

    def end(self, split: Split, last_seq: int, epoch: int) -> None:
        """Every batch of the split is sent (``last_seq`` -1: none)."""

    def close(self) -> None: ...


class BatchInfo(msgspec.Struct, frozen=True):
    """What the supervisor learns of a batch besides its bytes."""

    position: bytes  # msgpack [source position, rows to skip] after this batch
    rows: int
    watermark: Watermark | None  # incremental: max(cursor_field) of the batch


def stamp(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """The extraction time (microseconds) in each batch's schema metadata: one stamp per emitted run."""
    extracted = str(time.time_ns() // 1000).encode()
    return [b.replace_schema_metadata({**(b.schema.metadata or {}), EXTRACTED_AT_KEY: extracted}) for b in batches]


class Producer:
    def __init__(self, chan: Channel, spec: WorkerSpec, outlet: Outlet) -> None:
        self.chan = chan
        self.spec = spec
        self.outlet = outlet
        self.source = build_source(spec.source)
        apply_to_source(self.source, spec.incremental)  # incremental: the watermark to read after
        self.stopping = False
        self.sent: dict[str, int] = {}  # split -> last seq sent (stream mode waits for its commit)
        self.committed: dict[str, int] = {}  # split -> seq the supervisor reported committed
        self.split: Split | None = None  # the split being read
        outlet.attach(self)

    # ------------------------------------------------------------ control messages

    def handle(self, msg: m.Msg) -> None:
        if self.outlet.accept(msg):
            return
        if isinstance(msg, m.Stop):
            self.stopping = True
        elif isinstance(msg, m.Committed):
            self.committed[msg.split_id] = msg.seq
            commit_source_offsets(self.source, self.split, msg)
        else:
            raise RuntimeError(f"producer got unexpected {type(msg).__name__}")

    def receive(self, timeout: float | None) -> bool:
        """Handle one control message (waiting up to ``timeout``); False when none came. Raises on Stop."""
        msg = self.chan.recv(timeout)
        if msg is None:
            return False
        self.handle(msg)
        if self.stopping:
            raise StopRequested()
        return True

    def wait_committed(self, split_id: str) -> None:
        """Block until the supervisor reports the split committed through the last batch sent (stream mode)."""
        target = self.sent.get(split_id, -1)
        while self.committed.get(split_id, -1) < target:
            self.receive(None)  # a Stop replays the last page on restart: at-least-once, nothing lost

    # ------------------------------------------------------------ the split loop

    def run(self) -> None:
        try:
            while True:
                msg = self.chan.recv(None)
                if isinstance(msg, m.Assign):
                    self.read_split(msg)
                elif isinstance(msg, m.NoMoreSplits):
                    return
                else:
                    self.handle(msg)
                    if self.stopping:
                        return
        finally:
            self.outlet.close()

    def read_split(self, assign: m.Assign) -> None:
        split = self.split = assign.split
        source_pos, skip = (None, 0) if assign.position is None else decode_position(assign.position)
        seq = assign.next_seq
        pending: list[pa.RecordBatch] = []
        pending_bytes = 0
        first_at = 0.0
        linger = self.outlet.linger_s
        # position of the source before the first pending batch, and rows of it already sent
        base_pos, base_skip = source_pos, skip

        def emit(end_pos: Any) -> None:
            nonlocal seq, pending, pending_bytes, base_pos, base_skip
            groups = self.outlet.groups(stamp(pending))
            done_rows = 0
            for i, group in enumerate(groups):
                rows = sum(b.num_rows for b in group)
                done_rows += rows
                # first: a batch without its cursor_field fails the job before it is sent
                mark = batch_watermark(group, self.spec.incremental.cursor_field) if self.spec.incremental else None
                # a group that ends inside the pending rows resumes by skipping what it covered
                position = [end_pos, 0] if i == len(groups) - 1 else [base_pos, base_skip + done_rows]
                self.outlet.put(split, seq, assign.epoch, group, BatchInfo(encode_position(position), rows, mark))
                self.sent[split.id] = seq
                seq += 1
            pending, pending_bytes = [], 0
            base_pos, base_skip = end_pos, 0

        last_pos = source_pos
        for batch, position in source_pages(self.source, self.spec, split, source_pos, self.wait_committed):
            while self.receive(0):  # grants, commits; a Stop ends the split here
                pass
            if skip:
                if batch.num_rows <= skip:
                    skip -= batch.num_rows
                    last_pos, base_pos, base_skip = position, position, skip
                    continue
                batch = batch.slice(skip)
                skip = 0
            last_pos = position
            if batch.num_rows == 0:
                if not pending:
                    base_pos, base_skip = position, 0
                continue
            if not pending:
                first_at = time.monotonic()
            pending.append(batch)
            pending_bytes += batch.nbytes
            if pending_bytes >= self.spec.batch_bytes or (linger is not None and time.monotonic() - first_at >= linger):
                emit(position)
        if pending:
            emit(last_pos)
        self.outlet.end(split, seq - 1, assign.epoch)
        self.chan.send(m.SplitDone(split.id, seq - 1))


class RingOutlet:
    """Batches into ring slots: the supervisor grants free slots ahead of need; a filled one is reported ``Filled``."""

    linger_s: float | None = LINGER_S

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self.slots: deque[int] = deque()
        self.producer: Producer | None = None

    def attach(self, producer: Producer) -> None:
        self.producer = producer

    def accept(self, msg: m.Msg) -> bool:
        if isinstance(msg, m.Grant):
            self.slots.append(msg.slot)
            return True
        return False

    def groups(self, batches: list[pa.RecordBatch]) -> list[list[pa.RecordBatch]]:
        return fit_to_slots(batches, self.store.spec.slot_size)

    def put(self, split: Split, seq: int, epoch: int, group: list[pa.RecordBatch], batch: BatchInfo) -> None:
        assert self.producer is not None
        while not self.slots:
            self.producer.receive(None)  # a grant (a Stop raises StopRequested)
        slot = self.slots.popleft()
        nbytes = self.store.write(slot, group)
        fault_point("producer.after_fill")  # the slot holds the batch, the supervisor does not know it
        self.producer.chan.send(m.Filled(slot, nbytes, split.id, seq, batch.position, batch.rows, batch.watermark))

    def end(self, split: Split, last_seq: int, epoch: int) -> None:
        """Nothing to mark: the producer's ``SplitDone`` over the pipe is the ring's end of a split."""

    def close(self) -> None:
        """Nothing to release: the supervisor owns the ring and takes back this producer's grants."""
