"""Kafka as the transport between machines (confluent-kafka / librdkafka).

Producers are idempotent (``enable.idempotence``: no duplicate or reordered message from retries) and
key each message by split, so a split lives on one partition and arrives in order. Consumers form a
consumer group with auto-commit off: an offset is committed only after the batches before it are
written and their cursors committed to the checkpoint backend, so a crash or a rebalance replays,
never skips.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from bizon_fast.errors import UserError
from bizon_fast.faults import ENV_POINT, fault_point
from bizon_fast.transport.broker import (
    BrokerReceiver,
    BrokerSender,
    Frame,
    Received,
    decode_frame,
    headers_of,
    skip_frame,
)

log = logging.getLogger("bizon_fast.kafka")

#: librdkafka's default message.max.bytes is 1,000,000; headers and framing need some room
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
ASSIGNMENT_WARNING_S = 30.0  # default of consumer.no_partitions_warning_s
SPLIT_MESSAGE_POINT = "kafka.split_message"  # fault point: between the parts of a batch sent in several messages
MESSAGE_OVERHEAD = 4096  # record and batch headers, our frame header (a cursor is a few dozen bytes)


def _kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - a packaging problem, reported clearly
        raise UserError("engine.queue.type: kafka needs confluent-kafka: pip install 'bizon-fast[kafka]'") from exc
    return confluent_kafka


def ensure_topic(bootstrap: str, topic: str, partitions: int, extra: dict[str, Any], timeout: float = 10) -> None:
    """Create the topic when it is missing (an existing topic keeps its partition count)."""
    ck = _kafka()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **extra})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except ck.KafkaException as exc:
        raise UserError(
            f"engine.queue.config.queue.bootstrap_server: cannot reach Kafka at {bootstrap}: {exc}"
        ) from exc
    if topic in metadata.topics and not metadata.topics[topic].error:
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for fut in futures.values():
        try:
            fut.result(timeout)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise UserError(f"engine.queue.config.queue.topic: cannot create topic '{topic}': {exc}") from exc


def probe(bootstrap: str, topic: str, extra: dict[str, Any], timeout: float = 5) -> str:
    """``bizon-fast check``: reach the brokers and look the topic up (created by a run, never here)."""
    ck = _kafka()
    from confluent_kafka.admin import AdminClient

    # log_level 0: librdkafka's own connection errors would flood stderr; the one line below says it
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **extra})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except ck.KafkaException as exc:
        raise UserError(
            f"engine.queue.config.queue.bootstrap_server: cannot reach Kafka at {bootstrap}: {exc}"
        ) from None
    found = metadata.topics.get(topic)
    state = "to be created" if found is None or found.error else f"{len(found.partitions)} partitions"
    brokers = len(metadata.brokers)
    return f"{bootstrap} ({brokers} broker{'' if brokers == 1 else 's'}), topic {topic} ({state})"


class KafkaSender(BrokerSender):
    def __init__(self, bootstrap: str, topic: str, extra: dict[str, Any], max_message_bytes: int) -> None:
        ck = _kafka()
        self.topic = topic
        self.max_message_bytes = max_message_bytes - MESSAGE_OVERHEAD
        self.errors: list[str] = []
        # a test armed the split-message fault point: parts sent before the kill are flushed to the broker
        # first, so the consumers really see the head of a batch whose tail never comes (without it the
        # kill mostly lands while the head still sits in librdkafka's local queue, and proves nothing)
        self._settle_parts = os.environ.get(ENV_POINT, "").partition("@")[0].strip() == SPLIT_MESSAGE_POINT
        self.producer = ck.Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.max.bytes": max_message_bytes,
                "compression.type": "none",  # the Arrow IPC body is already LZ4/zstd compressed
                **extra,
            }
        )

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def send(self, key: str, frame: Frame, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic, value=value, key=key.encode(), headers=headers_of(frame), on_delivery=self._delivered
                )
                break
            except BufferError:  # the local queue is full: wait for deliveries (backpressure)
                self.producer.poll(0.1)
        self.producer.poll(0)
        self._raise()
        if frame.part + 1 < frame.parts:  # more parts of this batch follow
            if self._settle_parts:
                self.flush()
            fault_point(SPLIT_MESSAGE_POINT)

    def flush(self) -> None:
        while self.producer.flush(1.0) > 0:
            self._raise()
        self._raise()

    def _raise(self) -> None:
        if self.errors:
            raise RuntimeError(f"Kafka delivery failed: {self.errors[0]}")


class KafkaReceiver(BrokerReceiver):
    """``static=(index, count)``: no group membership; this consumer reads the partitions ``p % count == index``
    from the group's committed offsets (and still commits there). For one consumer machine, and for brokers
    whose group coordinator cannot be trusted with dead members (see native_bench/services.py on Tansu)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        extra: dict[str, Any],
        job_filter: Callable[[Frame], bool],
        static: tuple[int, int] | None = None,
        warn_after_s: float = ASSIGNMENT_WARNING_S,
    ) -> None:
        ck = _kafka()
        self.ck = ck
        self.warn_after_s = warn_after_s
        self.accept = job_filter
        self._revoked = False
        self.consumer = ck.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                "fetch.max.bytes": 64 * 1024 * 1024,
                **extra,
            }
        )
        self.waiting_since: float | None = None  # group mode: since when this consumer waits for partitions
        if static is None:
            self.waiting_since = time.monotonic()
            self.consumer.subscribe([topic], on_revoke=self._on_revoke, on_lost=self._on_revoke)
        else:
            self._assign_static(topic, *static)

    def _check_assignment(self) -> None:
        """Say so when the group gives this consumer nothing for long: a silent wait looks like a hang."""
        assert self.waiting_since is not None
        if self.consumer.assignment():
            self.waiting_since = None
        elif time.monotonic() - self.waiting_since > self.warn_after_s:
            log.warning(
                "no Kafka partitions assigned after %.0f s: the consumer group is still rebalancing (a dead member "
                "holds it until the rebalance timeout, max.poll.interval.ms), or the topic has fewer partitions "
                "than the group has consumers; with one consumer machine, "
                "engine.queue.config.consumer.assignment: static needs no rebalance",
                self.warn_after_s,
            )
            self.waiting_since = None

    def _assign_static(self, topic: str, index: int, count: int) -> None:
        ck = self.ck
        metadata = self.consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
        if not partitions:
            raise RuntimeError(f"Kafka topic {topic} has no partitions")
        mine = [ck.TopicPartition(topic, p) for p in partitions if p % count == index]
        if not mine:
            return  # more consumers than partitions: this one idles
        committed = self.consumer.committed(mine, timeout=10)
        start = [
            ck.TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else ck.OFFSET_BEGINNING)
            for tp in committed
        ]
        self.consumer.assign(start)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if partitions:
            self._revoked = True
            self.waiting_since = time.monotonic()

    def revoked(self) -> bool:
        flag, self._revoked = self._revoked, False
        return flag

    def poll(self, timeout: float) -> list[Received]:
        out: list[Received] = []
        if self.waiting_since is not None:
            self._check_assignment()
        for msg in self.consumer.consume(num_messages=64, timeout=timeout):
            if msg.error():
                if msg.error().code() == self.ck.KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"Kafka consumer error: {msg.error()}")
            headers = dict(msg.headers() or [])
            token = (msg.topic(), msg.partition(), msg.offset())
            raw = headers.get("bf")
            if raw is None:
                log.warning("skipping a message without a bizon-fast frame at %s", token)
                out.append(Received(skip_frame(), b"", token))
                continue
            frame = decode_frame(raw)
            out.append(Received(frame if self.accept(frame) else skip_frame(), msg.value(), token))
        return out

    def ack(self, tokens: list[object]) -> None:
        if not tokens:
            return
        last: dict[tuple[str, int], int] = {}
        for topic, partition, offset in tokens:  # type: ignore[misc]
            key = (topic, partition)
            last[key] = max(last.get(key, -1), offset)
        offsets = [self.ck.TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except self.ck.KafkaException as exc:
            # a rebalance took the partition: its new owner replays from the last commit (safe)
            log.info("offset commit skipped (%s); the partition's next owner replays from its last commit", exc)

    def close(self) -> None:
        self.consumer.close()
