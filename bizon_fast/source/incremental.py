"""Incremental sync state: the watermark a run leaves for the next one, computed column-wise per batch.

bizon handed ``get_records_after`` the *start time* of the last successful job and nothing else (its
``state`` was never filled). bizon-fast keeps a real watermark: the maximum of ``source.cursor_field``
over every batch the job committed, plus the last ``next_state`` a bizon >= 0.6 source emitted. It is
computed by the producer for each ring slot (one ``pyarrow.compute.max`` per batch, or a polars JSON
path over ``data`` for bizon source records), carried in the ``Filled`` report, folded into the split's
committed cursor by the ledger, and stored by the supervisor only when the whole job succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from bizon_fast.errors import ConfigError
from bizon_fast.source.records import is_source_records

#: schema metadata of a batch: the ``next_state`` its bizon page returned (JSON)
NEXT_STATE_KEY = b"bizon_fast.next_state"


class CursorFieldMissing(ConfigError):
    """A batch has rows but no ``cursor_field`` to take a watermark from.

    Raised by the producer, so the job fails before anything is published: a run that cannot say
    how far it read would otherwise store no watermark and read everything again next time.
    """


class Watermark(msgspec.Struct, array_like=True):
    """What committed batches have shown: ``max`` of the cursor field, the latest ``state`` a page returned."""

    max: Any = None
    state: dict[str, Any] | None = None


class IncrementalRun(msgspec.Struct, kw_only=True):
    """What a producer needs to read incrementally (sent in its WorkerSpec)."""

    reset: bool = False  # a stream reset: read everything, ignore the watermark
    watermark: Any = None  # max(cursor_field) of the last successful job; None on the first run
    state: dict[str, Any] = {}  # what the last successful job left (``watermark`` plus a source's next_state)
    last_run: datetime | None = None  # start of the last successful job (bizon's ``last_run``)
    run_started_at: datetime | None = None  # start of this job
    cursor_field: str | None = None

    @property
    def has_previous(self) -> bool:
        return not self.reset and self.last_run is not None


def _plain(value: Any) -> Any:
    """A value msgpack stores as itself: dates and decimals become text, naive datetimes keep their wall time."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date | Decimal):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def later(a: Any, b: Any) -> Any:
    """The larger of two watermark values (None is smallest); values of different kinds compare as text."""
    if a is None:
        return b
    if b is None:
        return a
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return max(a, b)
    if type(a) is type(b):
        return max(a, b)
    return a if str(a) >= str(b) else b


def merge_states(current: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any] | None:
    """Two states merged key by key, ``new``'s value winning: a bizon source's ``next_state`` (the same keys
    every page) is replaced as before, and a source whose batches each report their own keys (the file
    source: one key per file loaded) accumulates them over the job's splits."""
    if new is None:
        return current
    if current is None:
        return new
    return {**current, **new}


def fold(current: Watermark | None, new: Watermark | None) -> Watermark | None:
    """``current`` advanced by the next batch's ``new`` (batches in seq order: the later state's keys win)."""
    if new is None:
        return current
    if current is None:
        return new
    return Watermark(max=later(current.max, new.max), state=merge_states(current.state, new.state))


def _has_path(text: str, parts: list[str]) -> bool:
    try:
        node: Any = json.loads(text)
    except ValueError:
        return False
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _missing_in_records(data: pa.Array, cursor_field: str) -> None:
    """Raise unless some record holds ``cursor_field`` (as null: a batch of nulls has no max, but is fine).

    Only called when no record has a value, so the per-record parse is paid on that rare path only.
    """
    parts = cursor_field.split(".")
    texts = data.to_pylist()
    if any(_has_path(t, parts) for t in texts if t):
        return
    try:
        first = json.loads(texts[0]) if texts and texts[0] else None
    except ValueError:
        first = None
    fields = ", ".join(map(str, first)) if isinstance(first, dict) else "not a JSON object"
    raise CursorFieldMissing(
        f"source.cursor_field: {cursor_field!r} is in none of the {len(texts)} records of a batch "
        f"(fields of its first record: {fields}); no watermark can be kept, so the job stops before publishing"
    )


def _json_max(data: pa.Array, cursor_field: str) -> Any:
    """max(cursor_field) over JSON records, vectorized: a polars JSON path, then the tightest type that fits."""
    import polars as pl

    path = "$." + ".".join(f'["{part}"]' if not part.isidentifier() else part for part in cursor_field.split("."))
    texts = pl.Series(values=data).str.json_path_match(path).drop_nulls()
    if texts.is_empty():
        _missing_in_records(data, cursor_field)
        return None
    for dtype in (pl.Int64, pl.Float64):
        cast = texts.cast(dtype, strict=False)
        if cast.null_count() == 0:
            return cast.max()
    return texts.max()


def _column_max(batch: pa.RecordBatch, cursor_field: str) -> Any:
    if cursor_field not in batch.schema.names:
        raise CursorFieldMissing(
            f"source.cursor_field: {cursor_field!r} is not a column of the source's batches "
            f"(columns: {', '.join(batch.schema.names)}); no watermark can be kept, so the job stops before publishing"
        )
    try:
        return pc.max(batch.column(cursor_field)).as_py()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        kind = batch.schema.field(cursor_field).type
        raise CursorFieldMissing(
            f"source.cursor_field: {cursor_field!r} is of type {kind}, which has no order to keep a watermark by"
        ) from None


def batch_watermark(batches: Sequence[pa.RecordBatch], cursor_field: str | None) -> Watermark | None:
    """The watermark of a run of batches; None when there is nothing to record."""
    top: Any = None
    state: dict[str, Any] | None = None
    for batch in batches:
        if cursor_field and batch.num_rows:
            if is_source_records(batch.schema):
                value = _json_max(batch.column("data"), cursor_field)
            else:
                value = _column_max(batch, cursor_field)
            top = later(top, _plain(value))
        raw = (batch.schema.metadata or {}).get(NEXT_STATE_KEY)
        if raw:
            state = json.loads(raw)
    if top is None and state is None:
        return None
    return Watermark(max=top, state=state)


def with_next_state(batch: pa.RecordBatch, state: dict[str, Any] | None) -> pa.RecordBatch:
    """``batch`` carrying a bizon page's ``next_state`` in its schema metadata (no data copied)."""
    if state is None:
        return batch
    return batch.replace_schema_metadata({**(batch.schema.metadata or {}), NEXT_STATE_KEY: json.dumps(state)})
