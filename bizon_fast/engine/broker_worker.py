"""Broker-mode workers: a producer sends a split's batches to Kafka/RabbitMQ, a consumer writes them.

The supervisor still decides everything shared (which split a producer reads, when a cursor is
committed), over the same pipe protocol as the ring; only the batches take another road. A consumer
acknowledges broker messages only after the supervisor answered ``Synced``: their batches are then
written *and* their cursors committed, so a crash anywhere replays and never skips.

Producers batch deterministically here -- pages are coalesced by size only, never by a timer -- so
that a split re-read from its committed cursor after a crash produces the same rows under the same
seqs, and a consumer that already wrote a seq can drop its second copy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa

from bizon_fast.cursor import decode_position, encode_position
from bizon_fast.engine import messages as m
from bizon_fast.engine.build import build_destination, build_source
from bizon_fast.engine.channel import Channel, StopRequested
from bizon_fast.engine.incremental import apply_to_source
from bizon_fast.engine.spec import BrokerSpec, WorkerSpec
from bizon_fast.engine.streaming import commit_source_offsets, source_pages
from bizon_fast.engine.writes import write_with_retries
from bizon_fast.faults import fault_point
from bizon_fast.source.incremental import batch_watermark
from bizon_fast.source.records import EXTRACTED_AT_KEY
from bizon_fast.transport.broker import (
    BATCH,
    END,
    SKIP,
    BrokerReceiver,
    BrokerSender,
    Frame,
    Received,
    chunks,
    ipc_bytes,
    read_ipc,
)

log = logging.getLogger("bizon_fast.broker_worker")

IDLE_POLL_S = 0.2  # a consumer with nothing new for this long writes what it holds
#: a transport that may redeliver out of order (RabbitMQ takeover): how long a missing seq may stay missing
#: before it counts as lost. The dead consumer's messages come back when its channel closes, in milliseconds;
#: this bounds a wait for messages that really are gone.
REORDER_TIMEOUT_S = 60.0
REORDER_RETRY_S = 0.1  # pause after giving an early message back, so its redelivery is not a busy loop


def make_sender(spec: BrokerSpec) -> BrokerSender:
    q = spec.queue["queue"]
    if spec.kind == "kafka":
        from bizon_fast.transport.kafka import KafkaSender

        return KafkaSender(q["bootstrap_server"], q["topic"], q.get("producer_config") or {}, q["max_message_bytes"])
    from bizon_fast.config.models import RabbitMQQueueSettings
    from bizon_fast.transport.rabbitmq import RabbitSender

    settings = RabbitMQQueueSettings.model_validate(q)
    return RabbitSender(settings.url(), settings.queue_name, spec.partitions, settings.max_message_bytes)


def make_receiver(spec: BrokerSpec, index: int) -> BrokerReceiver:
    q = spec.queue["queue"]

    def ours(frame: Frame) -> bool:
        return frame.job_id == spec.job_id

    if spec.kind == "kafka":
        from bizon_fast.transport.kafka import ASSIGNMENT_WARNING_S, KafkaReceiver

        c = spec.queue.get("consumer") or {}
        extra = {
            "auto.offset.reset": c.get("auto_offset_reset", "earliest"),
            "session.timeout.ms": c.get("session_timeout_ms", 10_000),
            **(c.get("consumer_config") or {}),
        }
        static = (index, spec.consumers) if c.get("assignment") == "static" else None
        warn_s = c.get("no_partitions_warning_s", ASSIGNMENT_WARNING_S)
        return KafkaReceiver(
            q["bootstrap_server"], q["topic"], c.get("group_id", "bizon"), extra, ours, static, warn_after_s=warn_s
        )
    from bizon_fast.config.models import RabbitMQQueueSettings
    from bizon_fast.transport.rabbitmq import RabbitReceiver

    settings = RabbitMQQueueSettings.model_validate(q)
    return RabbitReceiver(settings.url(), settings.queue_name, spec.partitions, index, settings.prefetch, ours)


# ---------------------------------------------------------------- producer


class BrokerProducer:
    def __init__(self, chan: Channel, spec: WorkerSpec) -> None:
        assert spec.broker is not None
        self.chan = chan
        self.spec = spec
        self.broker = spec.broker
        self.source = build_source(spec.source)
        apply_to_source(self.source, spec.incremental)
        self.sender = make_sender(spec.broker)
        self.compression = spec.broker.queue["queue"].get("compression", "lz4")
        self.stopping = False
        self.filled: dict[str, int] = {}  # stream mode: split -> last seq sent
        self.committed: dict[str, int] = {}
        self.split: Any = None  # the split being read

    def _handle(self, msg: m.Msg) -> None:
        if isinstance(msg, m.Stop):
            self.stopping = True
        elif isinstance(msg, m.Committed):
            self.committed[msg.split_id] = msg.seq
            commit_source_offsets(self.source, self.split, msg)
        else:
            raise RuntimeError(f"broker producer got unexpected {type(msg).__name__}")

    def _poll_control(self) -> None:
        while (msg := self.chan.recv(0)) is not None:
            self._handle(msg)
            if self.stopping:
                raise StopRequested()

    def run(self) -> None:
        try:
            while True:
                msg = self.chan.recv(None)
                if isinstance(msg, m.Lease):
                    self.read_split(msg)
                elif isinstance(msg, m.NoMoreSplits):
                    return
                else:
                    self._handle(msg)
                    if self.stopping:
                        return
        finally:
            self.sender.close()

    def read_split(self, lease: m.Lease) -> None:
        split = self.split = lease.split
        source_pos, skip = (None, 0) if lease.position is None else decode_position(lease.position)
        seq = lease.next_seq
        pending: list[pa.RecordBatch] = []
        pending_bytes = 0

        def emit(end_pos: Any) -> None:
            nonlocal seq, pending, pending_bytes
            extracted = str(time.time_ns() // 1000).encode()
            stamped = [
                b.replace_schema_metadata({**(b.schema.metadata or {}), EXTRACTED_AT_KEY: extracted}) for b in pending
            ]
            rows = sum(b.num_rows for b in stamped)
            payload = ipc_bytes(stamped, self.compression)
            mark = batch_watermark(stamped, self.spec.incremental.cursor_field) if self.spec.incremental else None
            position = encode_position([end_pos, 0])
            parts = chunks(payload, self.sender.max_message_bytes)
            for i, part in enumerate(parts):
                frame = Frame(
                    BATCH, self.broker.job_id, split.id, seq, lease.epoch, i, len(parts), position, rows, mark
                )
                self.sender.send(split.id, frame, part)
            self.chan.send(m.Sent(split.id, seq, rows, len(payload)))
            self.filled[split.id] = seq
            seq += 1
            pending, pending_bytes = [], 0

        last_pos = source_pos
        for batch, position in source_pages(self, split, source_pos):
            self._poll_control()
            if skip:
                if batch.num_rows <= skip:
                    skip -= batch.num_rows
                    last_pos = position
                    continue
                batch = batch.slice(skip)
                skip = 0
            last_pos = position
            if batch.num_rows == 0:
                continue
            pending.append(batch)
            pending_bytes += batch.nbytes
            if pending_bytes >= self.spec.batch_bytes:
                emit(position)
        if pending:
            emit(last_pos)
        self.sender.send(split.id, Frame(END, self.broker.job_id, split.id, seq - 1, lease.epoch), b"")
        self.sender.flush()  # every batch of the split is acknowledged by the broker
        self.chan.send(m.SplitDone(split.id, seq - 1))


# ---------------------------------------------------------------- consumer


@dataclass
class _Assembly:
    """The parts of one batch too large for a single message."""

    frame: Frame
    first_token: object  # nothing from this message on may be acknowledged before the batch is written
    parts: list[bytes] = field(default_factory=list)
    tokens: list[object] = field(default_factory=list)  # one per part


class BrokerConsumer:
    def __init__(self, chan: Channel, spec: WorkerSpec) -> None:
        from bizon_fast.transform.apply import build_transforms

        assert spec.broker is not None
        self.chan = chan
        self.spec = spec
        context = msgspec.structs.replace(spec.context, worker=f"consumer-{spec.index}")
        self.destination = build_destination(spec.destination_name, spec.destination, context)
        self.transform = build_transforms(spec.transforms)
        self.receiver = make_receiver(spec.broker, spec.index)
        self.written: dict[str, int] = dict(spec.broker.committed)  # split -> highest seq made durable
        self.high: dict[str, int] = dict(self.written)  # split -> highest seq written or buffered
        self.assembling: dict[str, _Assembly] = {}
        self.buffer: dict[str, list[tuple[Frame, list[pa.RecordBatch]]]] = {}
        self.ends: list[Frame] = []
        self.tokens: list[object] = []
        self.buffered_bytes = 0
        self.oldest = 0.0
        self.syncs = 0
        self.stopping = False
        self.gaps: dict[str, float] = {}  # split -> since when a later seq arrives before the next one

    def run(self) -> None:
        try:
            while True:
                while (msg := self.chan.recv(0)) is not None:
                    if isinstance(msg, m.Stop):
                        self.stopping = True
                    else:
                        raise RuntimeError(f"broker consumer got unexpected {type(msg).__name__}")
                if self.stopping:
                    self.flush()
                    return
                received = self.receiver.poll(IDLE_POLL_S)
                if self.receiver.revoked():
                    self._drop_unwritten()
                for item in received:
                    self.take(item)
                idle = not received
                timed_out = (
                    self.spec.flush_timeout > 0
                    and self.tokens
                    and time.monotonic() - self.oldest >= self.spec.flush_timeout
                )
                if (
                    self.buffered_bytes >= max(1, self.spec.buffer_bytes)
                    or (idle and self.tokens)
                    or timed_out
                    or self.ends
                ):
                    self.flush()
        finally:
            self.receiver.close()
            self.destination.close()

    def _drop_unwritten(self) -> None:
        """The group moved partitions away: their next owner replays whatever was not acknowledged."""
        self.buffer.clear()
        self.assembling.clear()
        self.ends.clear()
        self.tokens.clear()
        self.buffered_bytes = 0
        self.high = dict(self.written)

    def take(self, item: Received) -> None:
        frame = item.frame
        if not self.tokens:
            self.oldest = time.monotonic()
        self.tokens.append(item.token)
        if frame.kind == SKIP:
            return
        if frame.kind == END:
            self.ends.append(frame)
            return
        first_token = item.token
        batch_tokens = [item.token]
        if frame.parts > 1:
            asm = self.assembling.get(frame.split_id)
            if frame.part == 0:
                asm = self.assembling[frame.split_id] = _Assembly(frame, item.token)
            elif asm is None or (asm.frame.seq, asm.frame.epoch, len(asm.parts)) != (
                frame.seq,
                frame.epoch,
                frame.part,
            ):
                return  # the tail of a batch whose producer died mid-send: its re-read sends it whole
            asm.parts.append(item.value)
            asm.tokens.append(item.token)
            if len(asm.parts) < frame.parts:
                return
            del self.assembling[frame.split_id]
            value, first_token, batch_tokens = b"".join(asm.parts), asm.first_token, asm.tokens
        else:
            value = item.value
        high = self.high.get(frame.split_id, -1)
        if frame.seq > high + 1:
            # the partition changed hands: another consumer wrote the seqs before this one
            self.flush(ask=[frame.split_id], hold=first_token)
            high = self.high.get(frame.split_id, -1)
            if frame.seq > high + 1:
                self._early(frame, high, batch_tokens)
                return
        self.gaps.pop(frame.split_id, None)  # in order (or a duplicate): no gap to wait out
        if frame.seq <= high:
            return  # a split re-read after its producer died: this seq is already written or buffered
        batches = read_ipc(value)
        if self.transform is not None:
            batches = self.transform(batches)
        self.high[frame.split_id] = frame.seq
        self.buffer.setdefault(frame.split_id, []).append((frame, batches))
        self.buffered_bytes += sum(b.nbytes for b in batches)

    def _early(self, frame: Frame, high: int, tokens: list[object]) -> None:
        """A batch arrived before the one after the last committed seq: lost messages, or a takeover's reorder.

        Kafka redelivers a partition in order, so there it is a loss. RabbitMQ may give a standby that takes
        over a queue the later messages before the dead consumer's unacknowledged earlier ones are requeued:
        the early batch goes back to the queue (it is never held here, so a full prefetch window cannot stall
        the redelivery of the missing ones) and comes again after them, until ``REORDER_TIMEOUT_S``.
        """
        lost = f"split {frame.split_id}: batch seq {frame.seq} arrived but seq {high} is the last committed"
        if self.receiver.redelivers_in_order:
            raise RuntimeError(f"{lost}; the broker lost messages")
        now = time.monotonic()
        since = self.gaps.setdefault(frame.split_id, now)
        if now - since > REORDER_TIMEOUT_S:
            raise RuntimeError(
                f"{lost}, and the missing seqs were not redelivered within {REORDER_TIMEOUT_S:g}s; "
                "the broker lost messages"
            )
        if since == now:
            log.info(
                "%s; giving it back to the broker until the missing seqs are redelivered (a takeover)",
                lost,
            )
        gone = set(tokens)
        self.tokens = [t for t in self.tokens if t not in gone]
        self.receiver.requeue(tokens)
        time.sleep(REORDER_RETRY_S)

    def flush(self, ask: list[str] | None = None, hold: object = None) -> None:
        """Write what is held, have the supervisor commit the cursors, then acknowledge the broker.

        ``ask``: splits whose committed seq the supervisor should report (written by another consumer).
        Messages from ``hold`` on, and from the first part of a batch still being assembled on, stay
        unacknowledged: a crash must replay them.
        """
        buffer, self.buffer = self.buffer, {}
        for split_id, items in buffer.items():
            self._write_run(split_id, items)
        for frame in self.ends:
            self.chan.send(m.SplitEnded(frame.split_id, frame.seq))
        self.ends.clear()
        self.buffered_bytes = 0
        if not self.tokens and not ask:
            return
        self.syncs += 1
        self.chan.send(m.Sync(self.syncs, ask or []))
        while True:
            msg = self.chan.recv(None)
            if isinstance(msg, m.Synced) and msg.n == self.syncs:
                break
            if isinstance(msg, m.Stop):
                self.stopping = True
        for split_id, seq in msg.committed.items():
            self.written[split_id] = max(self.written.get(split_id, -1), seq)
            self.high[split_id] = max(self.high.get(split_id, -1), seq)
        held = [a.first_token for a in self.assembling.values()] + ([hold] if hold is not None else [])
        cut = min((i for i, t in enumerate(self.tokens) if any(t is h for h in held)), default=len(self.tokens))
        tokens, self.tokens = self.tokens[:cut], self.tokens[cut:]
        if tokens:
            # the riskiest moment: cursors committed, the broker not told; a crash here replays batches
            # already written and committed, which the next owner must drop by seq
            fault_point("broker.commit")
        self.receiver.ack(tokens)

    def _write_run(self, split_id: str, items: list[tuple[Frame, list[pa.RecordBatch]]]) -> None:
        first, last = items[0][0].seq, items[-1][0].seq
        batches = [b for _, bs in items for b in bs]
        write_with_retries(self.destination, split_id, first, last, batches)
        self.written[split_id] = last
        frames = [f for f, _ in items]
        self.chan.send(
            m.Wrote(
                split_id,
                first,
                [f.position or b"" for f in frames],
                [f.rows for f in frames],
                sum(b.nbytes for b in batches),
                [f.watermark for f in frames],
            )
        )
