"""Broker mode's ends of the producer and the consumer: batches through Kafka or RabbitMQ instead of the ring.

The supervisor still decides everything shared (which split a producer reads, when a cursor is
committed), over the same pipe protocol as the ring; only the batches take another road, so the
producer (``engine/producer.py``) and the consumer (``engine/consumer.py``) are the ring's, with a
``BrokerOutlet`` and a ``BrokerInlet`` plugged in. A consumer acknowledges broker messages only after
the supervisor answered ``Synced``: their batches are then written *and* their cursors committed, so a
crash anywhere replays and never skips.

Producers batch deterministically here -- pages are coalesced by size only, never by a timer
(``BrokerOutlet.linger_s`` is None) -- so that a split re-read from its committed cursor after a crash
produces the same rows under the same seqs, and a consumer that already wrote a seq can drop its second copy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from bizon_fast.engine import messages as m
from bizon_fast.engine.consumer import Consumer
from bizon_fast.engine.producer import BatchInfo, Producer
from bizon_fast.engine.spec import BrokerSpec, WorkerSpec
from bizon_fast.faults import fault_point
from bizon_fast.source.base import Split
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

log = logging.getLogger("bizon_fast.broker_io")

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
    from bizon_fast.config.engine import RabbitMQQueueSettings
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
    from bizon_fast.config.engine import RabbitMQQueueSettings
    from bizon_fast.transport.rabbitmq import RabbitReceiver

    settings = RabbitMQQueueSettings.model_validate(q)
    return RabbitReceiver(settings.url(), settings.queue_name, spec.partitions, index, settings.prefetch, ours)


# ---------------------------------------------------------------- producer side


class BrokerOutlet:
    """A batch becomes one broker message (or ``parts`` of them, over the message limit), reported ``Sent``."""

    linger_s: float | None = None  # by size only: a re-read split cuts the same batches

    def __init__(self, spec: WorkerSpec) -> None:
        assert spec.broker is not None
        self.broker = spec.broker
        self.compression = spec.broker.queue["queue"].get("compression", "lz4")
        self.sender: BrokerSender | None = None
        self.producer: Producer | None = None

    def attach(self, producer: Producer) -> None:
        self.producer = producer
        self.sender = make_sender(self.broker)

    def accept(self, msg: m.Msg) -> bool:
        return False

    def groups(self, batches: list[pa.RecordBatch]) -> list[list[pa.RecordBatch]]:
        return [batches]  # a message may be larger than a ring slot: it is cut into parts instead

    def put(self, split: Split, seq: int, epoch: int, group: list[pa.RecordBatch], batch: BatchInfo) -> None:
        assert self.sender is not None and self.producer is not None
        payload = ipc_bytes(group, self.compression)
        parts = chunks(payload, self.sender.max_message_bytes)
        for i, part in enumerate(parts):
            frame = Frame(
                BATCH,
                self.broker.job_id,
                split.id,
                seq,
                epoch,
                i,
                len(parts),
                batch.position,
                batch.rows,
                batch.watermark,
            )
            self.sender.send(split.id, frame, part)
        self.producer.chan.send(m.Sent(split.id, seq, batch.rows, len(payload)))

    def end(self, split: Split, last_seq: int, epoch: int) -> None:
        assert self.sender is not None
        self.sender.send(split.id, Frame(END, self.broker.job_id, split.id, last_seq, epoch), b"")
        self.sender.flush()  # every batch of the split is acknowledged by the broker

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()


# ---------------------------------------------------------------- consumer side


@dataclass
class _Assembly:
    """The parts of one batch too large for a single message."""

    frame: Frame
    first_token: object  # nothing from this message on may be acknowledged before the batch is written
    parts: list[bytes] = field(default_factory=list)
    tokens: list[object] = field(default_factory=list)  # one per part


class BrokerInlet:
    """Batches from the broker: reassembled from parts, deduplicated by seq, acknowledged after their commit."""

    def __init__(self, spec: WorkerSpec) -> None:
        assert spec.broker is not None
        self.spec = spec
        self.broker = spec.broker
        self.receiver: BrokerReceiver | None = None
        self.consumer: Consumer | None = None
        self.durable: dict[str, int] = dict(spec.broker.committed)  # split -> highest seq made durable
        self.high: dict[str, int] = dict(self.durable)  # split -> highest seq written or buffered
        self.assembling: dict[str, _Assembly] = {}
        self.ends: list[Frame] = []
        self.tokens: list[object] = []
        self.oldest = 0.0
        self.syncs = 0
        self.stopping = False
        self.gaps: dict[str, float] = {}  # split -> since when a later seq arrives before the next one

    def attach(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.receiver = make_receiver(self.broker, self.spec.index)

    def run(self) -> None:
        assert self.consumer is not None and self.receiver is not None
        c = self.consumer
        while True:
            while (msg := c.chan.recv(0)) is not None:
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
            if c.buffered_bytes >= max(1, self.spec.buffer_bytes) or (idle and self.tokens) or timed_out or self.ends:
                self.flush()

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.close()

    def _drop_unwritten(self) -> None:
        """The group moved partitions away: their next owner replays whatever was not acknowledged."""
        assert self.consumer is not None
        self.consumer.drop_buffered()
        self.assembling.clear()
        self.ends.clear()
        self.tokens.clear()
        self.high = dict(self.durable)

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
        assert self.consumer is not None
        self.high[frame.split_id] = frame.seq
        self.consumer.take(frame.split_id, frame.seq, read_ipc(value), frame.rows, frame)

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
        assert self.consumer is not None and self.receiver is not None
        chan = self.consumer.chan
        self.consumer.write_buffered()  # each run reported by ``written``
        for frame in self.ends:
            chan.send(m.SplitEnded(frame.split_id, frame.seq))
        self.ends.clear()
        if not self.tokens and not ask:
            return
        self.syncs += 1
        chan.send(m.Sync(self.syncs, ask or []))
        while True:
            msg = chan.recv(None)
            if isinstance(msg, m.Synced) and msg.n == self.syncs:
                break
            if isinstance(msg, m.Stop):
                self.stopping = True
        for split_id, seq in msg.committed.items():
            self.durable[split_id] = max(self.durable.get(split_id, -1), seq)
            self.high[split_id] = max(self.high.get(split_id, -1), seq)
        held = [a.first_token for a in self.assembling.values()] + ([hold] if hold is not None else [])
        cut = min((i for i, t in enumerate(self.tokens) if any(t is h for h in held)), default=len(self.tokens))
        tokens, self.tokens = self.tokens[:cut], self.tokens[cut:]
        if tokens:
            # the riskiest moment: cursors committed, the broker not told; a crash here replays batches
            # already written and committed, which the next owner must drop by seq
            fault_point("broker.commit")
        self.receiver.ack(tokens)

    def written(
        self, split_id: str, first: int, last: int, refs: list[Any], rows: int, nbytes: int, large_rows: int = 0
    ) -> None:
        assert self.consumer is not None
        self.durable[split_id] = last
        frames: list[Frame] = refs
        positions = [f.position or b"" for f in frames]
        marks = [f.watermark for f in frames]
        self.consumer.chan.send(
            m.Wrote(split_id, first, positions, [f.rows for f in frames], nbytes, marks, large_rows)
        )
