"""The "source records" batch layout: how bizon-style sources (one JSON document per record) travel.

bizon moves a polars frame of ``id, data, timestamp, destination_id`` per page; bizon-fast keeps the
same four columns in an Arrow batch so destinations can build bizon's envelope (``source_record_id``,
``source_timestamp``, ``source_data``) without looking inside ``data``. A schema-metadata flag tells
destinations that a batch is in this layout rather than typed columns of a native source.

The producer also stamps each batch's schema with the extraction time (``EXTRACTED_AT_KEY``), which
is bizon's ``bizon_extracted_at``: it travels with the batch through IPC, so consumers need no side
channel for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter, countOf
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KIND_KEY = b"bizon_fast.kind"
SOURCE_RECORDS_KIND = b"source_records"
#: schema metadata stamped by the producer: extraction time, microseconds since the epoch, ASCII digits
EXTRACTED_AT_KEY = b"bizon_fast.extracted_at"

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

SOURCE_RECORDS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("data", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),
        pa.field("destination_id", pa.string(), nullable=True),
    ],
    metadata={KIND_KEY: SOURCE_RECORDS_KIND},
)

_encoder = msgspec.json.Encoder()
_NAMES = ("id", "data", "timestamp", "destination_id")
_NEWLINE = ord("\n")
_QUOTE = ord('"')
_MAX_STRING_BYTES = 2**31 - 1
_ID, _DATA = attrgetter("id"), attrgetter("data")


def _field(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def _data_text(data: Any) -> str:
    """A str (bytes: UTF-8) is taken as the JSON text itself; any other value, a str subclass such as a StrEnum
    member included, is encoded (as the bulk path does)."""
    if type(data) is str:
        return data
    if type(data) in (bytes, bytearray, memoryview):
        return bytes(data).decode()
    return _encoder.encode(data).decode()


def _utc(ts: Any, now: datetime) -> datetime:
    if ts is None:
        return now
    if not isinstance(ts, datetime):
        raise TypeError(f"record timestamp must be a datetime, got {type(ts).__name__}")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _columns(records: list[Any]) -> tuple[list[Any], list[Any], list[Any] | None, list[Any] | None]:
    """The four raw columns, each read in one C-level pass (``map``) over the page.

    Records of one class are read with one attribute getter per column; plain dicts with ``dict.get``.
    A class may name the attribute that holds its *unset-or-given* timestamp in
    ``__bizon_fast_timestamp__`` (bizon-fast's ``bizon.source.models.SourceRecord`` does), so a record
    that never had its timestamp read does not pay for a ``datetime.now()`` of its own; and it may say
    with a true ``__bizon_fast_plain__`` that none of its records has a timestamp or a destination_id:
    those two columns are then None (all unset) without a pass over the page.
    """
    kind = type(records[0]) if records else dict
    if countOf(map(type, records), kind) != len(records):  # one pass in C: cheaper than a set of the types
        kind = Mapping  # a mixed page: each record read leniently below
    if kind is dict:
        return tuple(list(map(dict.get, records, repeat(name, len(records)))) for name in _NAMES)  # type: ignore[return-value]
    if not issubclass(kind, Mapping):
        if getattr(kind, "__bizon_fast_plain__", False):
            try:
                return list(map(_ID, records)), list(map(_DATA, records)), None, None
            except AttributeError:
                pass  # read leniently below
        ts_name = getattr(kind, "__bizon_fast_timestamp__", "timestamp")
        getters = [attrgetter(name) for name in ("id", "data", ts_name, "destination_id")]
        try:
            ids, datas, stamps, dests = (list(map(get, records)) for get in getters)
            return ids, datas, stamps, dests
        except AttributeError:
            pass  # a record without one of the attributes: read each one leniently below
    return tuple([_field(r, name) for r in records] for name in _NAMES)  # type: ignore[return-value]


def _json_column(datas: list[Any]) -> pa.Array:
    """The ``data`` column: each value as compact JSON (msgspec), a str as is, bytes decoded as UTF-8.

    Why one encode: ``encode_lines`` writes the whole page as NDJSON in one C call, and JSON text never
    holds a raw newline (msgspec escapes it inside strings), so the newlines are exactly the record
    boundaries. The offsets come from a vectorised scan for them and the newlines are dropped in the same
    pass; no Python object is made per record (encoding each value alone made a ``bytes`` and a ``str`` per
    record: ~3x slower on 1000-record pages of ``{id, name, age}``). The text is the same byte for byte.
    """
    raw = _encoder.encode_lines(datas)
    text = np.frombuffer(raw, np.uint8)
    ends = np.flatnonzero(text == _NEWLINE)
    count = len(ends)
    # text values (str, bytes) encode as JSON strings: a line that starts with a quote takes the exact path,
    # checked here on the encoded lines instead of a type check of every value beforehand
    starts_quoted = count and (text[0] == _QUOTE or (text[ends[:-1] + 1] == _QUOTE).any())
    if starts_quoted or len(text) - count > _MAX_STRING_BYTES:  # or beyond what int32 offsets hold
        return pa.array([_data_text(d) for d in datas], pa.string())
    offsets = np.zeros(count + 1, np.int32)
    offsets[1:] = ends - np.arange(count)  # each end, less the newlines before it
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(raw.replace(b"\n", b"")))


def _timestamps(stamps: list[Any] | None, now: datetime, rows: int) -> pa.Array:
    """Arrow converts aware datetimes to UTC and takes naive ones as UTC; a missing timestamp is ``now``."""
    if stamps is None or stamps.count(None) == len(stamps):  # the usual page: none set, one value repeated
        return pa.repeat(pa.scalar(now, TIMESTAMP_TYPE), rows)
    try:
        array = pa.array(stamps, TIMESTAMP_TYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        bad = next(s for s in stamps if s is not None and not isinstance(s, datetime))
        raise TypeError(f"record timestamp must be a datetime, got {type(bad).__name__}") from None
    if array.null_count:
        array = pc.fill_null(array, pa.scalar(now, TIMESTAMP_TYPE))
    return array


def _text_column(values: list[Any] | None, rows: int) -> pa.Array:
    """A nullable string column; an all-null one (``destination_id`` of most sources) is made without a look."""
    if values is None or values.count(None) == len(values):
        return pa.nulls(rows, pa.string())
    if set(map(type, values)) - {str, type(None)}:
        values = [None if v is None else str(v) for v in values]
    return pa.array(values, pa.string())


def records_to_batch(records: Iterable[Any]) -> pa.RecordBatch:
    """One source-records batch from objects or dicts with ``id``, ``data``, ``timestamp``, ``destination_id``.

    ``data`` values are encoded as compact JSON with msgspec, the whole page at once; ``id`` is coerced to
    str (bizon stringifies ids too); a missing timestamp is now, a naive one is taken as UTC. The engine's
    per-record work is a few C-level passes over the page (attribute getters, one encode, Arrow builds):
    it makes no Python object per record, and everything downstream is columnar.
    """
    records = records if isinstance(records, list) else list(records)
    now = datetime.now(UTC)
    ids, datas, stamps, dests = _columns(records)
    rows = len(records)
    try:  # all str (the usual page): a string array at once, without a type check per id
        id_array: pa.Array | None = pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: made text below
        id_array = None
    if id_array is None or id_array.type != pa.string() or id_array.null_count:
        if None in ids:
            raise ValueError("source record without an id")
        id_array = pa.array([i if type(i) is str else str(i) for i in ids], pa.string())
    return pa.RecordBatch.from_arrays(
        [id_array, _json_column(datas), _timestamps(stamps, now, rows), _text_column(dests, rows)],
        schema=SOURCE_RECORDS_SCHEMA,
    )


def is_source_records(schema: pa.Schema) -> bool:
    """True when ``schema`` is the source-records layout.

    The metadata flag is the contract; the exact column names and types are accepted too because a
    transform that rebuilds the batch (through polars, say) drops schema metadata but not the layout.
    """
    meta = schema.metadata or {}
    if meta.get(KIND_KEY) == SOURCE_RECORDS_KIND:
        return True
    if schema.names != SOURCE_RECORDS_SCHEMA.names:
        return False
    return all(
        schema.field(f.name).type.equals(f.type)
        or (f.type == pa.string() and schema.field(f.name).type == pa.large_string())
        for f in SOURCE_RECORDS_SCHEMA
    )


def extracted_at_of(schema: pa.Schema) -> datetime:
    """The extraction time stamped on ``schema`` by the producer; now (UTC) when it is missing or malformed."""
    raw = (schema.metadata or {}).get(EXTRACTED_AT_KEY)
    if raw:
        try:
            micros = int(raw)
        except ValueError:
            micros = None
        if micros is not None:
            return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
    return datetime.now(UTC)


def with_extracted_at(batch: pa.RecordBatch, at: datetime) -> pa.RecordBatch:
    """``batch`` with ``at`` stamped into its schema metadata (what the producer does); no data is copied."""
    at = _utc(at, at)
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    meta = dict(batch.schema.metadata or {})
    meta[EXTRACTED_AT_KEY] = str(micros).encode()
    return batch.replace_schema_metadata(meta)
