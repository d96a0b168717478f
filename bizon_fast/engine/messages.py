"""Control-plane messages between the supervisor and its workers.

They are small msgspec structs sent as msgpack over pipes; batches never travel here, only slot
numbers and cursors. A tagged union lets one decoder read every message.
"""

from __future__ import annotations

import msgspec

from bizon_fast.source.base import Split
from bizon_fast.source.incremental import Watermark


class Msg(msgspec.Struct, tag=True, array_like=True):
    pass


# supervisor -> producer
class Assign(Msg):
    """Read ``split`` from ``position``, numbering its batches from ``next_seq``.

    ``position`` is the cursor position (published to the ring, or committed) in the bytes the producer
    that read the split before encoded: the supervisor hands them back as they are, and only a producer
    reads them. ``epoch`` is broker mode's lease epoch (stamped on every message the producer sends).
    """

    split: Split
    position: bytes | None  # msgpack [source position, rows to skip]; None = from the start
    next_seq: int
    epoch: int = 0


class Grant(Msg):
    slot: int


class Stop(Msg):
    """Producers: stop after the current batch. Consumers: flush, report and exit."""


class NoMoreSplits(Msg):
    pass


# producer -> supervisor
class Filled(Msg):
    slot: int
    nbytes: int
    split_id: str
    seq: int
    position: bytes
    rows: int  # rows in this batch
    watermark: Watermark | None = None  # incremental: max(cursor_field) of the batch (appended: keep last)


class SplitDone(Msg):
    split_id: str
    last_seq: int  # -1 when the split produced nothing


# supervisor -> consumer
class Deliver(Msg):
    """A batch in a ring slot, handed to the consumer that writes it.

    It is also the supervisor's own record of the batch: queued while no consumer can take it,
    kept per consumer until ``Written`` frees the slot, handed to another consumer if its holder dies.
    """

    slot: int
    nbytes: int
    split_id: str
    seq: int
    rows: int


class Flush(Msg):
    """Write whatever is buffered now: no more batches are coming soon."""


# consumer -> supervisor
class Written(Msg):
    split_id: str
    first_seq: int
    last_seq: int
    slots: list[int]
    rows: int
    nbytes: int
    large_rows: int = 0  # of ``rows``, those over bizon's large-row threshold (Destination.large_rows)


# any worker -> supervisor
class Failed(Msg):
    """The worker stopped on an error. ``resumable``: could the same command succeed on a rerun as is?

    A config mistake (a row larger than a ring slot, a missing cursor field) or a transform that raises on
    the data fails the same way every time; the CLI then does not tell the user to "run the same command".
    """

    error: str
    detail: str  # traceback text, for the log
    resumable: bool = True


class Started(Msg):
    pid: int


class Heartbeat(Msg):
    """I am still scheduled: a worker's daemon thread sends one every second, whatever its main thread does.

    A long write or a slow page keeps the beat going, so it is never mistaken for a hang; a process that
    is stopped (SIGSTOP, a frozen container) or cannot run Python at all goes silent, and the supervisor
    kills it and resumes its work elsewhere instead of waiting forever.
    """


# supervisor -> producer (stream mode)
class Committed(Msg):
    """The split's cursor is committed through ``seq``: a streaming source may commit its own offsets."""

    split_id: str
    seq: int
    position: bytes | None = None  # msgpack of the committed cursor's position ([source position, skip])


# ---------------------------------------------------------------- broker mode (Kafka, RabbitMQ)


class Sent(Msg):
    """broker producer -> supervisor: a batch is handed to the broker (progress only)."""

    split_id: str
    seq: int
    rows: int
    nbytes: int


class Wrote(Msg):
    """broker consumer -> supervisor: batches first_seq..last_seq of a split are durable."""

    split_id: str
    first_seq: int
    positions: list[bytes]  # per seq: the cursor position after it
    rows: list[int]  # per seq
    nbytes: int
    watermarks: list[Watermark | None] = []
    large_rows: int = 0  # rows over bizon's large-row threshold (Destination.large_rows)


class SplitEnded(Msg):
    """broker consumer -> supervisor: the split's end marker was read; its last seq is ``last_seq``."""

    split_id: str
    last_seq: int


class Sync(Msg):
    """broker consumer -> supervisor: commit what I reported, then answer ``Synced`` with the same ``n``."""

    n: int
    splits: list[str] = []  # also report how far these splits are committed (a partition changed hands)


class Synced(Msg):
    """supervisor -> broker consumer: cursors up to ``Sync(n)`` are committed; acknowledge the broker."""

    n: int
    committed: dict[str, int] = {}  # split -> committed seq, for the splits the Sync asked about


Message = (
    Assign
    | Grant
    | Stop
    | NoMoreSplits
    | Filled
    | SplitDone
    | Deliver
    | Flush
    | Written
    | Failed
    | Started
    | Heartbeat
    | Committed
    | Sent
    | Wrote
    | SplitEnded
    | Sync
    | Synced
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(msg: Msg) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes) -> Msg:
    return _decoder.decode(data)
