"""What a worker needs to start, encoded with msgpack so nothing is pickled but one bytes object."""

from __future__ import annotations

from typing import Any

import msgspec

from bizon_fast.destination.base import DestinationContext
from bizon_fast.source.incremental import IncrementalRun
from bizon_fast.transport.base import StoreSpec


class BrokerSpec(msgspec.Struct, kw_only=True):
    """Broker mode (Kafka, RabbitMQ): where batches go instead of the ring."""

    kind: str  # "kafka" | "rabbitmq"
    queue: dict[str, Any]  # the resolved ``engine.queue.config`` block
    job_id: str
    committed: dict[str, int] = {}  # consumers: split -> committed seq when the consumer started
    partitions: int = 1  # rabbitmq: queues queue_name.0..n-1
    consumers: int = 1  # consumer processes of this machine (a static Kafka assignment splits partitions by it)


class WorkerSpec(msgspec.Struct, kw_only=True):
    role: str  # "producer" | "consumer"
    index: int
    source: dict[str, Any]  # the resolved ``source:`` block
    destination_name: str
    destination: dict[str, Any]  # the resolved ``destination.config`` block
    transforms: list[dict[str, Any]] = []
    context: DestinationContext
    store: StoreSpec | None  # None in broker mode
    batch_bytes: int  # producers coalesce source batches up to this size before writing a slot
    buffer_bytes: int  # consumers write when this much is buffered (0: every batch)
    flush_timeout: float  # consumers write a buffered batch after this many seconds (0: never on a timer)
    max_held: int  # slots a consumer may hold at once
    parent_pid: int
    log_level: str = "INFO"
    log_file: str | None = None
    log_format: str = "text"  # "text" | "json": the supervisor's format, so the run's log file has one
    log_to_stderr: bool = False  # json with --quiet: every line also on stderr, for a log collector
    threaded: bool = False
    incremental: IncrementalRun | None = None  # producers: the watermark to read after (incremental mode)
    streaming: bool = False  # stream mode: a batch per page, written and committed one by one
    broker: BrokerSpec | None = None  # broker mode: batches travel through Kafka or RabbitMQ


def encode_spec(spec: WorkerSpec) -> bytes:
    return msgspec.msgpack.encode(spec)


def decode_spec(data: bytes) -> WorkerSpec:
    return msgspec.msgpack.decode(data, type=WorkerSpec)
