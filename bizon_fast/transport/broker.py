"""Message-broker transports (Kafka, RabbitMQ): one Arrow IPC stream per batch, its identity in headers.

A batch (``seq`` of a split) travels as one message when it fits the broker's message limit and as
``parts`` consecutive messages otherwise; nothing is dropped. Every message carries a ``Frame`` header
(msgpack) with the split, seq, cursor position and rows, plus plain ``split``/``seq`` headers for people
reading the topic with other tools. A split's messages share a key (Kafka: one partition; RabbitMQ:
one queue), so they arrive in order.

A batch is identified by (split, seq) *and* the producer epoch: a split whose producer died is leased
again with a higher epoch and re-read from its committed cursor, and its batches may then appear twice
in the log. Producers batch deterministically in broker mode (pages coalesced by size only), so a seq
re-read from a committed cursor holds the same rows, and consumers drop seqs they have already written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import msgspec
import pyarrow as pa

from bizon_fast.source.incremental import Watermark

BATCH = "batch"
END = "end"  # the split is exhausted: ``seq`` is its last seq (-1: it produced nothing)
SKIP = "skip"  # not ours (another job, or not a bizon-fast message): acknowledged and ignored

#: IPC body compression (lz4 or zstd); the broker's own compression is off for these (already compressed)
IPC_OPTIONS = {c: pa.ipc.IpcWriteOptions(compression=c) for c in ("lz4", "zstd")}


class Frame(msgspec.Struct, array_like=True, frozen=True):
    kind: str  # BATCH | END | SKIP
    job_id: str  # a topic or queue outlives jobs: consumers ignore other jobs' messages
    split_id: str
    seq: int
    epoch: int  # the producer lease that sent it
    part: int = 0  # a batch over the message limit is sent as ``parts`` messages
    parts: int = 1
    position: bytes | None = None  # msgpack cursor position after this batch
    rows: int = 0
    watermark: Watermark | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode_frame(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def decode_frame(data: bytes) -> Frame:
    return _decoder.decode(data)


def skip_frame() -> Frame:
    return Frame(SKIP, "", "", -1, -1)


def headers_of(frame: Frame) -> list[tuple[str, bytes]]:
    return [
        ("bf", encode_frame(frame)),
        ("split", frame.split_id.encode()),
        ("seq", str(frame.seq).encode()),
        ("cursor", frame.position or b""),
    ]


def ipc_bytes(batches: list[pa.RecordBatch], compression: str = "lz4") -> bytes:
    """Serialize one schema's batches as a compressed Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema, options=IPC_OPTIONS[compression]) as writer:
        for b in batches:
            writer.write_batch(b)
    return sink.getvalue().to_pybytes()


def read_ipc(data: bytes) -> list[pa.RecordBatch]:
    return list(pa.ipc.open_stream(pa.py_buffer(data)))


def chunks(payload: bytes, limit: int) -> list[bytes]:
    """``payload`` cut into pieces of at most ``limit`` bytes (one piece when it fits)."""
    if len(payload) <= limit:
        return [payload]
    return [payload[i : i + limit] for i in range(0, len(payload), limit)]


@dataclass
class Received:
    """A message as a consumer sees it; ``token`` is what ``ack`` needs to confirm it."""

    frame: Frame
    value: bytes
    token: object


class BrokerSender(ABC):
    """The producer side: durable, ordered per key."""

    max_message_bytes: int

    @abstractmethod
    def send(self, key: str, frame: Frame, value: bytes) -> None: ...

    @abstractmethod
    def flush(self) -> None:
        """Block until everything sent is acknowledged by the broker; raise if anything failed."""

    def close(self) -> None:
        self.flush()


class BrokerReceiver(ABC):
    """The consumer side: a message is acknowledged only after its batch's cursor is committed."""

    #: True where a split's messages, redelivered after a consumer died, still arrive in order (Kafka: a
    #: partition is a log). Then a missing seq means lost messages. False (RabbitMQ) where a takeover can
    #: deliver a later seq before the dead consumer's unacknowledged earlier ones are back in the queue:
    #: the consumer gives the early message back (``requeue``) and waits for the missing ones.
    redelivers_in_order: bool = True

    def requeue(self, tokens: list[object]) -> None:
        """Give these unacknowledged messages back to the broker, to be delivered again later."""
        raise NotImplementedError(f"{type(self).__name__} delivers in order: it never requeues")

    @abstractmethod
    def poll(self, timeout: float) -> list[Received]:
        """Messages in order; may return an empty list. Drops state of partitions the group took away."""

    @abstractmethod
    def ack(self, tokens: list[object]) -> None:
        """Acknowledge these messages (and, per partition/queue, everything before them)."""

    def revoked(self) -> bool:
        """True once after the broker took messages this receiver had not acknowledged (a rebalance)."""
        return False

    def close(self) -> None: ...
