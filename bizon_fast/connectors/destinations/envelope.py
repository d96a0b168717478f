"""bizon's destination-record envelope and unnesting, built column-wise.

bizon turns every record into ``bizon_id, bizon_extracted_at, bizon_loaded_at, source_record_id,
source_timestamp, source_data`` with one ``uuid4()`` and one ``datetime.now()`` call per row; here
the whole batch is one polars ``select``. ``bizon_id`` is a 128-bit hash of (job, split, seq, row)
instead of a random uuid, so a replayed batch gets the very same ids and an idempotent write really
is idempotent, byte for byte.

Two batch layouts come in: source-records batches (bizon-style sources; ``data`` already holds the
record as JSON text) and typed batches (native sources), whose rows are turned into JSON text
column-wise (``jsontext``). As NDJSON (``envelope_lines``) neither goes through polars: a source-records
line is constant text, the ids, the escaped record id and data and the timestamp, joined in Arrow, byte for
byte what polars' ``write_ndjson`` of ``envelope`` wrote. polars is imported only by the functions that use
it, so a json consumer of source records never loads it (~18 MB and 0.1-0.3 s a process).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bizon_fast.connectors.destinations.jsontext import (
    LARGE_STRING,
    Piece,
    autosi_format,
    autosi_timestamps,
    escaped,
    evaluate,
    isoformat,
    join,
    json_string,
    object_pieces,
    or_null,
    plain_strings,
    row_json,
    timestamps_as_text,
)
from bizon_fast.errors import UserError
from bizon_fast.source.records import TIMESTAMP_TYPE, extracted_at_of, is_source_records

if TYPE_CHECKING:  # polars is imported by the functions that use it: a json consumer of source records never does
    import polars as pl

ENVELOPE_COLUMNS = (
    "bizon_id",
    "bizon_extracted_at",
    "bizon_loaded_at",
    "source_record_id",
    "source_timestamp",
    "source_data",
)

_M64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HEX_PAIRS = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), dtype="<u2")  # byte -> 2 hex chars


def _splitmix(values: np.ndarray, key: int) -> np.ndarray:
    """splitmix64 of ``values * golden + key`` (a bijection of uint64, so distinct rows get distinct words)."""
    x = values * _GOLDEN + np.uint64(key & _M64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def row_origins(
    batches: list[pa.RecordBatch], first_seq: int, last_seq: int
) -> Iterator[tuple[int, int, pa.RecordBatch]]:
    """(seq, row offset, batch) of the non-empty batches of a write of seqs ``first_seq..last_seq``.

    ``bizon_id`` keys on them: with one batch per seq a row is (its seq, its row), stable however a
    replay groups the batches; otherwise (a transform regrouped them) rows count from ``first_seq``.
    """
    one_per_seq = len(batches) == last_seq - first_seq + 1
    row_offset = 0
    for i, batch in enumerate(batches):
        seq, offset = (first_seq + i, 0) if one_per_seq else (first_seq, row_offset)
        row_offset += batch.num_rows
        if batch.num_rows:
            yield seq, offset, batch


def bizon_ids(job_id: str, split_id: str, seq: int, n: int, row_offset: int = 0) -> pa.Array:
    """``n`` 32-hex-char ids for rows ``row_offset..`` of batch ``seq`` of ``split_id`` in ``job_id``.

    Same inputs, same ids: a replay after a crash rewrites identical lines.
    """
    digest = hashlib.blake2b(msgspec.msgpack.encode([job_id, split_id, seq]), digest_size=16).digest()
    rows = np.arange(row_offset, row_offset + n, dtype=np.uint64)
    words = np.empty((n, 2), dtype=">u8")
    words[:, 0] = _splitmix(rows, int.from_bytes(digest[:8], "big"))
    words[:, 1] = _splitmix(rows, int.from_bytes(digest[8:], "big"))
    text = np.take(_HEX_PAIRS, words.view(np.uint8))
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def _utc_micros() -> pl.DataType:
    import polars as pl

    return pl.Datetime("us", "UTC")


def _frame(batch: pa.RecordBatch) -> pl.DataFrame:
    import polars as pl

    return pl.from_arrow(batch.replace_schema_metadata(None))  # type: ignore[return-value]


def source_data(batch: pa.RecordBatch) -> pa.Array:
    """bizon's ``source_data``: each record as JSON text, for either batch layout."""
    if is_source_records(batch.schema):
        return batch.column("data")
    return row_json(batch)


def envelope(
    batch: pa.RecordBatch, *, job_id: str, split_id: str, seq: int, loaded_at: datetime, row_offset: int = 0
) -> pl.DataFrame:
    """The batch as bizon destination records: the six ``ENVELOPE_COLUMNS`` in bizon's order, typed.

    Typed batches: ``source_record_id`` is the ``id`` column as text when there is one (else
    ``"{split}:{seq}:{row}"``), ``source_timestamp`` is the extraction time, ``source_data`` the row as JSON.
    """
    import polars as pl

    utc_micros = _utc_micros()
    n = batch.num_rows
    extracted_at = extracted_at_of(batch.schema)
    frame = _frame(batch)
    head = [
        pl.lit(pl.from_arrow(bizon_ids(job_id, split_id, seq, n, row_offset))).alias("bizon_id"),
        pl.lit(extracted_at, dtype=utc_micros).alias("bizon_extracted_at"),
        pl.lit(loaded_at, dtype=utc_micros).alias("bizon_loaded_at"),
    ]
    if is_source_records(batch.schema):
        tail = [
            pl.col("id").cast(pl.String).alias("source_record_id"),
            pl.col("timestamp").cast(utc_micros).alias("source_timestamp"),
            pl.col("data").cast(pl.String).alias("source_data"),
        ]
    else:
        if "id" in frame.columns:
            record_id = pl.col("id").cast(pl.String)
        else:
            record_id = pl.concat_str(
                [pl.lit(f"{split_id}:{seq}:"), pl.int_range(row_offset, row_offset + pl.len()).cast(pl.String)]
            )
        tail = [
            record_id.alias("source_record_id"),
            pl.lit(extracted_at, dtype=utc_micros).alias("source_timestamp"),
            pl.lit(pl.from_arrow(row_json(batch))).alias("source_data"),
        ]
    return frame.select(*head, *tail)


def envelope_lines(
    batch: pa.RecordBatch, *, job_id: str, split_id: str, seq: int, loaded_at: datetime, row_offset: int = 0
) -> pa.Array:
    """``envelope`` of a batch as bizon NDJSON lines (newline included), one ``large_string`` per row.

    The line is assembled as text in one Arrow join (``jsontext.join``): the constant timestamps are
    formatted once, and ``source_data`` is built already escaped for its place inside a JSON string.
    Source-records batches must pass ``records_as_text``.
    """
    if is_source_records(batch.schema):
        return _records_lines(
            batch, job_id=job_id, split_id=split_id, seq=seq, loaded_at=loaded_at, row_offset=row_offset
        )
    extracted = isoformat(extracted_at_of(batch.schema))
    text_batch = timestamps_as_text(batch.replace_schema_metadata(None))
    ids = bizon_ids(job_id, split_id, seq, batch.num_rows, row_offset)
    pieces: list[Piece] = [
        '{"bizon_id":"',
        ids,
        f'","bizon_extracted_at":"{extracted}","bizon_loaded_at":"{isoformat(loaded_at)}","source_record_id":',
    ]
    int_texts: dict[str, pa.Array] = {}
    if "id" in text_batch.schema.names:
        id_array = text_batch.column("id")
        record_id: list[Piece]
        if pa.types.is_integer(id_array.type):
            int_texts["id"] = pc.cast(id_array, LARGE_STRING)  # cast once: the record id, and in source_data
            record_id = ['"', int_texts["id"], '"']
        elif plain_strings(id_array):
            record_id = ['"', id_array, '"']
        else:
            import polars as pl

            as_text = pl.col("id").cast(pl.String)
            record_id = [pl.struct(as_text.alias("v")).struct.json_encode().str.slice(5).str.head(-1)]
        if id_array.null_count:
            import polars as pl

            record_id = [or_null(record_id, pl.col("id"))]
        pieces += record_id
    else:
        prefix = json_string(f"{split_id}:{seq}:")[:-1]
        rows = pa.array(np.arange(row_offset, row_offset + batch.num_rows, dtype=np.int64))
        pieces += [prefix, pc.cast(rows, LARGE_STRING), '"']
    pieces += [
        f',"source_timestamp":"{extracted}","source_data":"',
        *object_pieces(text_batch, nested=True, int_texts=int_texts),
        '"}\n',
    ]
    return join(evaluate(pieces, text_batch))


def records_as_text(schema: pa.Schema) -> bool:
    """True when a source-records batch has the layout's own column types, which ``envelope_lines`` writes
    without polars (a transform may have left other types behind the layout's flag: those take ``envelope``)."""
    types = {field.name: field.type for field in schema}
    texts = (pa.string(), pa.large_string())
    return types.get("id") in texts and types.get("data") in texts and types.get("timestamp") == TIMESTAMP_TYPE


def _quoted_or_null(text: Piece, nulls: int) -> list[Piece]:
    return ['"', text, '"'] if not nulls else [pc.fill_null(join(['"', text, '"']), "null")]


def _records_lines(
    batch: pa.RecordBatch, *, job_id: str, split_id: str, seq: int, loaded_at: datetime, row_offset: int
) -> pa.Array:
    """The source-records envelope as text, the bytes polars' ``write_ndjson`` of ``envelope`` gave.

    ``data`` is already JSON text, so a line is constant pieces, the ids, the escaped record id, the timestamp
    (chrono's rendering, ``autosi_timestamps``) and the escaped data, joined once in Arrow: no per-row encoder.
    """
    stamps = batch.column("timestamp")
    micros = stamps.cast(pa.int64())
    micros = (pc.fill_null(micros, 0) if stamps.null_count else micros).to_numpy(zero_copy_only=False)
    stamp_text = _constant_stamp(stamps, micros)
    if stamp_text is None:
        stamp_text = autosi_timestamps(micros)
    if stamp_text is None:  # years past 9999 or before 1: polars' own rendering
        stamp_text = evaluate([_utc_text("timestamp")], batch)[0]
    record_ids = batch.column("id")
    pieces: list[Piece] = [
        '{"bizon_id":"',
        bizon_ids(job_id, split_id, seq, batch.num_rows, row_offset),
        f'","bizon_extracted_at":"{autosi_format(extracted_at_of(batch.schema))}"'
        f',"bizon_loaded_at":"{autosi_format(loaded_at)}","source_record_id":',
        *_quoted_or_null(escaped(record_ids), record_ids.null_count),
        ',"source_timestamp":',
        *_quoted_or_null(stamp_text, stamps.null_count),
        ',"source_data":',
        *_quoted_or_null(escaped(batch.column("data")), batch.column("data").null_count),
        "}\n",
    ]
    return join(pieces)  # type: ignore[arg-type]


def _constant_stamp(stamps: pa.Array, micros: np.ndarray) -> str | None:
    """The text of a page's one timestamp, when all its records share it (a source that stamps pages): then it
    is a literal of the line, formatted once. None otherwise, or outside Python's years."""
    if not micros.size or stamps.null_count or micros.min() != micros.max():
        return None
    try:
        return autosi_format(stamps[0].as_py())
    except (ValueError, OverflowError):
        return None


def _utc_text(name: str) -> pl.Expr:
    """Polars' JSON text of a UTC timestamp column, quotes dropped."""
    import polars as pl

    return pl.struct(pl.col(name).cast(_utc_micros()).alias("v")).struct.json_encode().str.slice(6).str.head(-2)


# ---------------------------------------------------------------- unnest


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def record_columns(record_schemas: Sequence[Any] | None, destination_id: str | None) -> list[tuple[str, str]]:
    """``(name, type)`` of the ``record_schemas`` entry for ``destination_id``; UserError when there is none."""
    for entry in record_schemas or []:
        if _get(entry, "destination_id") == destination_id:
            return [(str(_get(c, "name")), str(_get(c, "type") or "")) for c in _get(entry, "record_schema") or []]
    known = ", ".join(str(_get(e, "destination_id")) for e in record_schemas or []) or "none"
    raise UserError(
        f"destination.config.record_schemas: unnest needs an entry with destination_id {destination_id!r} "
        f"(declared: {known})"
    )


def _casts() -> dict[str, pl.DataType]:
    import polars as pl

    return {
        "STRING": pl.String(),
        "INTEGER": pl.Int64(),
        "INT64": pl.Int64(),
        "INT": pl.Int64(),
        "FLOAT": pl.Float64(),
        "FLOAT64": pl.Float64(),
        "NUMERIC": pl.Float64(),
        "BIGNUMERIC": pl.Float64(),
        "BOOLEAN": pl.Boolean(),
        "BOOL": pl.Boolean(),
    }


def _typed(column: str, kind: str, dtype: pl.DataType) -> pl.Expr:
    """The column converted to its declared type (Parquet needs one type per column across parts)."""
    import polars as pl

    kind = kind.upper()
    casts = _casts()
    utc_micros = _utc_micros()
    col = pl.col(column)
    if kind in ("TIMESTAMP", "DATETIME"):
        if dtype == pl.String:
            return col.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
        return col.cast(utc_micros, strict=False) if dtype.is_temporal() else col
    if kind == "DATE" and dtype == pl.String:
        return col.str.to_date(strict=False)
    if kind in casts:
        return col.cast(casts[kind], strict=False)
    return col


def unnest(batch: pa.RecordBatch, columns: Sequence[tuple[str, str]], *, enforce_types: bool) -> pl.DataFrame:
    """Only the declared columns, in declared order.

    Source-records batches have ``data`` decoded as JSON (vectorized); like bizon, its keys must be
    exactly the declared names. Without ``enforce_types`` the JSON values are kept as they are (bizon's
    file destination writes an int declared ``string`` as an int); with it they are cast to the
    declared type, which a Parquet dataset needs.
    """
    import polars as pl

    names = [name for name, _ in columns]
    if is_source_records(batch.schema):
        decoded = pl.from_arrow(batch.column("data")).str.json_decode(infer_schema_length=None)  # type: ignore[union-attr]
        if not isinstance(decoded.dtype, pl.Struct):
            raise UserError("destination.config.unnest: records are not JSON objects, so they cannot be unnested")
        frame = decoded.struct.unnest()
        if set(frame.columns) != set(names):
            raise UserError(
                f"destination.config.record_schemas: record keys {sorted(frame.columns)} "
                f"do not match the declared columns {sorted(names)}"
            )
    else:
        frame = _frame(batch)
        missing = [name for name in names if name not in frame.columns]
        if missing:
            raise UserError(f"destination.config.record_schemas: columns {missing} are not in the source's batches")
    if not enforce_types:
        return frame.select(names)
    return frame.select(_typed(name, kind, frame.schema[name]).alias(name) for name, kind in columns)
