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
from operator import attrgetter
from typing import Any

import msgspec
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


def _field(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def _data_text(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data).decode()
    return _encoder.encode(data).decode()


def _utc(ts: Any, now: datetime) -> datetime:
    if ts is None:
        return now
    if not isinstance(ts, datetime):
        raise TypeError(f"record timestamp must be a datetime, got {type(ts).__name__}")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _columns(records: list[Any]) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """The four raw columns. Records of one class are read with one attribute getter per column.

    A class may name the attribute that holds its *unset-or-given* timestamp in
    ``__bizon_fast_timestamp__`` (bizon-fast's ``bizon.source.models.SourceRecord`` does), so a record
    that never had its timestamp read does not pay for a ``datetime.now()`` of its own.
    """
    kinds = set(map(type, records))  # map/set loop in C: the type checks cost next to nothing
    kind = kinds.pop() if len(kinds) == 1 else dict
    if not issubclass(kind, Mapping):
        ts_name = getattr(kind, "__bizon_fast_timestamp__", "timestamp")
        getters = [attrgetter(name) for name in ("id", "data", ts_name, "destination_id")]
        try:
            ids, datas, stamps, dests = (list(map(get, records)) for get in getters)
            return ids, datas, stamps, dests
        except AttributeError:
            pass  # a record without one of the attributes: read each one leniently below
    ids = [_field(r, "id") for r in records]
    datas = [_field(r, "data") for r in records]
    stamps = [_field(r, "timestamp") for r in records]
    dests = [_field(r, "destination_id") for r in records]
    return ids, datas, stamps, dests


def _timestamps(stamps: list[Any], now: datetime) -> pa.Array:
    """Arrow converts aware datetimes to UTC and takes naive ones as UTC; a missing timestamp is ``now``."""
    try:
        array = pa.array(stamps, TIMESTAMP_TYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        bad = next(s for s in stamps if s is not None and not isinstance(s, datetime))
        raise TypeError(f"record timestamp must be a datetime, got {type(bad).__name__}") from None
    if array.null_count:
        array = pc.fill_null(array, pa.scalar(now, TIMESTAMP_TYPE))
    return array


def records_to_batch(records: Iterable[Any]) -> pa.RecordBatch:
    """One source-records batch from objects or dicts with ``id``, ``data``, ``timestamp``, ``destination_id``.

    ``data`` dicts are encoded as compact JSON with msgspec; ``id`` is coerced to str (bizon stringifies
    ids too); a missing timestamp is now, a naive one is taken as UTC. This is the one place where a
    bizon-style source pays per-record Python work (a few list comprehensions); everything downstream
    is columnar.
    """
    records = records if isinstance(records, list) else list(records)
    now = datetime.now(UTC)
    ids, datas, stamps, dests = _columns(records)
    if set(map(type, ids)) - {str}:
        if any(i is None for i in ids):
            raise ValueError("source record without an id")
        ids = [i if type(i) is str else str(i) for i in ids]
    if set(map(type, datas)) <= {dict}:
        texts = list(map(bytes.decode, map(_encoder.encode, datas)))
    else:
        texts = [_data_text(d) for d in datas]
    if set(map(type, dests)) - {str, type(None)}:
        dests = [None if d is None else str(d) for d in dests]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(texts, pa.string()),
            _timestamps(stamps, now),
            pa.array(dests, pa.string()),
        ],
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
