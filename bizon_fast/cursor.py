"""The cursor: where a split stands after a batch, encoded with msgpack for the checkpoint backend.

A cursor is the unit of resumption. It is committed only after the destination has made the batch
``seq`` of split ``split_id`` durable, so resuming from it never skips or repeats a committed batch.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bizon_fast.source.incremental import Watermark


class Cursor(msgspec.Struct, frozen=True, kw_only=True):
    split_id: str
    seq: int = -1  # sequence number of the last batch covered; -1 = nothing read yet
    position: Any = None  # the source's position after batch ``seq`` (offset, page token, last key ...)
    rows: int = 0  # rows of this split up to and including ``seq``
    done: bool = False  # the split is exhausted
    watermark: Watermark | None = None  # incremental: max(cursor_field) and source state up to ``seq``


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Cursor)


def encode_cursor(cursor: Cursor) -> bytes:
    return _encoder.encode(cursor)


def decode_cursor(data: bytes) -> Cursor:
    return _decoder.decode(data)


def encode_position(position: Any) -> bytes:
    """Positions travel on the control plane as msgpack bytes (never pickle)."""
    return _encoder.encode(position)


def decode_position(data: bytes) -> Any:
    return msgspec.msgpack.decode(data)


def resume_position(cursor: Cursor) -> bytes | None:
    """A committed cursor's position as a producer resumes from it; None for a split not started.

    The engine carries positions as the bytes a producer encoded; this is the one place that encodes a
    position the engine did not get from a producer (a cursor loaded from the checkpoint backend).
    """
    return encode_position(cursor.position) if cursor.seq >= 0 else None
