"""Transforms, applied by consumers so they scale with workers.

``python:`` is bizon's per-record transform (the record's ``data`` dict, edited in place) and only
applies to bizon source-record batches; ``sql:`` (polars SQL over the table ``batch``) and
``polars:`` (an expression list evaluated with ``select``) work on the whole batch and are the fast path.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa

from bizon_fast.errors import JobFailed

Transform = Callable[[list[pa.RecordBatch]], list[pa.RecordBatch]]


def _python_transform(label: str, code: str) -> Transform:
    compiled = compile(textwrap.dedent(code), f"<transform {label}>", "exec")

    def apply(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        out = []
        for batch in batches:
            if "data" not in batch.schema.names:
                raise JobFailed(f"transform '{label}': python transforms need bizon source records (a 'data' column)")
            col = batch.schema.get_field_index("data")
            new_data = []
            for text in batch.column(col).to_pylist():
                scope: dict[str, Any] = {"data": json.loads(text)}
                try:
                    exec(compiled, {}, scope)  # noqa: S102 - bizon's transform semantics
                except Exception as exc:
                    raise JobFailed(f"Error applying transformation '{label}': {type(exc).__name__}: {exc}") from exc
                new_data.append(json.dumps(scope["data"], ensure_ascii=False))
            arr = pa.array(new_data, pa.string())
            out.append(batch.set_column(col, batch.schema.field(col), arr))
        return out

    return apply


def _frame_transform(label: str, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Transform:
    def apply(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        if not batches:
            return batches
        metadata = batches[0].schema.metadata
        try:
            df = pl.from_arrow(pa.Table.from_batches(batches))
            result = fn(df).to_arrow()
        except Exception as exc:
            raise JobFailed(f"Error applying transformation '{label}': {type(exc).__name__}: {exc}") from exc
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
            expr_text = spec["polars"]
            exprs = eval(expr_text, {"pl": pl})  # noqa: S307 - user-authored pipeline code, like python transforms
            steps.append(_frame_transform(label, lambda df, e=exprs: df.select(e)))
    if not steps:
        return None

    def chain(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        for step in steps:
            batches = step(batches)
        return batches

    return chain
