"""Transforms, applied by consumers so they scale with workers.

``python:`` is bizon's per-record transform with bizon's semantics: for each record, ``data`` is the
record decoded from JSON, the code runs as ``exec(code, {}, {"data": data})`` (so it may mutate or
reassign ``data`` and import modules), and the final ``data`` is encoded back. It applies to bizon
source-record batches. JSON goes through msgspec rather than the stdlib (same values, compact text,
several times faster), falling back to the stdlib for what msgspec refuses (integers beyond 64 bits).

``sql:`` (a polars SQL query over the table ``batch``) and ``polars:`` (a list of polars expressions,
evaluated with ``select``) are the vectorized fast path: one query per batch, no Python per record.
On typed batches (native sources) they see the batch's columns. On bizon source records they see
the *records*: ``data`` decoded into one typed column per key (a key a record lacks is null there, and
a column's values share one type: an int among floats comes back as ``1.0``), plus
``__bizon_record_id``, ``__bizon_record_timestamp`` and ``__bizon_destination_id``; the result's other
columns are encoded back into ``data``. A query that keeps the row count may drop the ``__bizon_*``
columns (they are restored by position); one that filters or reorders rows must keep them
(``SELECT *`` does).

Any error fails the job with bizon's wording, ``Error applying transformation '<label>': ...``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import polars as pl
import pyarrow as pa

from bizon_fast.config.transforms import compile_polars, compile_python
from bizon_fast.errors import DataError, JobFailed
from bizon_fast.source.records import SOURCE_RECORDS_SCHEMA, is_source_records

Transform = Callable[[list[pa.RecordBatch]], list[pa.RecordBatch]]

#: the envelope of a source record, as columns beside its decoded fields (sql/polars on source records)
META_COLUMNS = {
    "id": "__bizon_record_id",
    "timestamp": "__bizon_record_timestamp",
    "destination_id": "__bizon_destination_id",
}

SCHEMA_SAMPLE_ROWS = 1000
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _failed(label: str, exc: BaseException) -> DataError:
    return DataError(f"Error applying transformation '{label}': {type(exc).__name__}: {exc}")


def _dumps(value: Any) -> str:
    try:
        return _encode(value).decode()
    except (TypeError, OverflowError, msgspec.EncodeError):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _python_transform(label: str, code: str) -> Transform:
    compiled = compile_python(label, code)  # as config validation compiled it

    def apply(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        out = []
        for batch in batches:
            if "data" not in batch.schema.names:
                raise DataError(f"transform '{label}': python transforms need bizon source records (a 'data' column)")
            col = batch.schema.get_field_index("data")
            new_data = []
            for text in batch.column(col).to_pylist():
                try:
                    scope: dict[str, Any] = {"data": _decode(text)}
                    exec(compiled, {}, scope)  # noqa: S102 - bizon's transform semantics
                    new_data.append(_dumps(scope["data"]))
                except Exception as exc:
                    raise _failed(label, exc) from exc
            arr = pa.array(new_data, pa.string())
            out.append(batch.set_column(col, batch.schema.field(col), arr))
        return out

    return apply


def _decode_records(texts: pl.Series) -> pl.Series:
    """``texts`` JSON-decoded into a struct column, without losing a key that only late rows have.

    Inferring the struct from every row costs three times the decoding itself, so the schema is
    inferred from a sample first; when re-encoding the result gives back every row's text exactly,
    nothing was dropped. Otherwise (keys beyond the sample, another key order or number format) the
    column is decoded again with a schema inferred from all rows.
    """
    try:
        sampled = texts.str.json_decode(infer_schema_length=SCHEMA_SAMPLE_ROWS)
    except pl.exceptions.ComputeError:
        sampled = None  # a key or a type the sample did not have (polars may also narrow 1.5 to 1 silently)
    if sampled is not None and isinstance(sampled.dtype, pl.Struct) and (sampled.struct.json_encode() == texts).all():
        return sampled
    return texts.str.json_decode(infer_schema_length=None)


def _records_frame(table: pa.Table) -> pl.DataFrame:
    """Source records as a table: one column per key of ``data``, plus the ``__bizon_*`` envelope columns."""
    data = _decode_records(pl.from_arrow(table.column("data")))  # type: ignore[arg-type]
    if not isinstance(data.dtype, pl.Struct):
        raise ValueError("the records are not JSON objects, so they have no columns to query")
    fields = data.struct.unnest()
    meta = pl.from_arrow(table.select(list(META_COLUMNS)).rename_columns(list(META_COLUMNS.values())))
    return pl.concat([fields, meta], how="horizontal")  # type: ignore[list-item]


def _records_batches(result: pl.DataFrame, source: pa.Table) -> list[pa.RecordBatch]:
    """A query result over records, back in the source-records layout."""
    names = list(META_COLUMNS.values())
    fields = [c for c in result.columns if c not in names]
    if all(n in result.columns for n in names):
        meta = result.select(names)
    elif result.height == source.num_rows:
        meta = pl.from_arrow(source.select(list(META_COLUMNS)).rename_columns(names))
    else:
        raise ValueError(
            f"the query changed the number of records ({source.num_rows} -> {result.height}) and dropped "
            f"{', '.join(n for n in names if n not in result.columns)}; keep them (SELECT * does)"
        )
    data = result.select(pl.struct(fields).struct.json_encode().alias("data")) if fields else None
    text = data.to_series().to_arrow() if data is not None else pa.array(["{}"] * result.height, pa.string())
    arrays = [
        meta.get_column(META_COLUMNS["id"]).cast(pl.String).to_arrow(),  # type: ignore[union-attr]
        text,
        meta.get_column(META_COLUMNS["timestamp"]).cast(pl.Datetime("us", "UTC")).to_arrow(),  # type: ignore[union-attr]
        meta.get_column(META_COLUMNS["destination_id"]).cast(pl.String).to_arrow(),  # type: ignore[union-attr]
    ]
    arrays = [a.cast(f.type) for a, f in zip(arrays, SOURCE_RECORDS_SCHEMA, strict=True)]
    batch = pa.RecordBatch.from_arrays(arrays, schema=SOURCE_RECORDS_SCHEMA.with_metadata(source.schema.metadata))
    return [batch] if batch.num_rows else []


def _frame_transform(label: str, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Transform:
    def apply(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        if not batches:
            return batches
        metadata = batches[0].schema.metadata
        table = pa.Table.from_batches(batches)
        try:
            if is_source_records(table.schema):
                return _records_batches(fn(_records_frame(table)), table)
            result = fn(pl.from_arrow(table)).to_arrow()  # type: ignore[arg-type]
        except JobFailed:
            raise
        except Exception as exc:
            raise _failed(label, exc) from exc
        result = result.replace_schema_metadata(metadata)
        return result.combine_chunks().to_batches() or []

    return apply


def build_transforms(specs: list[dict[str, Any]]) -> Transform | None:
    steps: list[Transform] = []
    for spec in specs:
        label = spec.get("label", "transform")
        if spec.get("python"):
            steps.append(_python_transform(label, spec["python"]))
        elif spec.get("sql"):
            query = spec["sql"]
            steps.append(_frame_transform(label, lambda df, q=query: pl.SQLContext(batch=df).execute(q, eager=True)))
        elif spec.get("polars"):
            try:
                exprs = eval(compile_polars(label, spec["polars"]), {"pl": pl})  # noqa: S307 - user-authored pipeline code, like python
            except Exception as exc:
                raise _failed(label, exc) from exc
            steps.append(_frame_transform(label, lambda df, e=exprs: df.select(e)))
    if not steps:
        return None

    def chain(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        for step in steps:
            batches = step(batches)
        return batches

    return chain
