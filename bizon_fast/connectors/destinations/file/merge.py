"""Merge by key and schema evolution of the ``file`` destination's Parquet dataset: a new snapshot per job.

A merge job (``write_disposition: merge``) or a job whose rows change the dataset's schema does not move its
parts into the dataset: :func:`build_snapshot` writes a complete new dataset folder, which the destination
then swaps in the way a full refresh is (``destination.py``). The snapshot holds:

- every existing file, cast to the unified schema (new columns null, widened types) with the rows whose key
  the job wrote removed (a Table join, ``left anti``, on the key columns); a file that loses no row and
  keeps its schema is hard-linked, not rewritten, so a merge of few keys into a big dataset copies little;
- the job's rows, one per key: the last version, by ``cursor_field`` when the pipeline has one, then by
  arrival (split, seq, row: the order of the staged parts), vectorized (sort, then ``Table.group_by`` max of
  the rank), less those whose ``deleted_flag`` is true.

Within the dataset this is what Postgres' ``INSERT ... ON CONFLICT DO UPDATE`` does: a key the job wrote
holds the job's version (or none, when deleted), whatever the cursor of the row it replaces. Everything is
pyarrow (``pyarrow.compute``, Acero joins and aggregations; polars is not a dependency).

Schema rules (:func:`unify`): a column new in the job's rows is added (``evolve``; old rows null), dropped
(``freeze``) or fails the job (``fail``); a compatible widening (int8/16/32 -> int64, float32 -> float64,
decimal precision up at the same scale, string -> large_string, a null-typed column to any type) is applied
under ``evolve`` and fails otherwise; any other change fails the job, before anything is published, in one
line naming the column and both types. Rows narrower than the dataset (int32 into an int64 column) are cast up.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bizon_fast.errors import StepFailed
from bizon_fast.faults import fault_point

logger = logging.getLogger("bizon_fast.destination.file")

#: schema metadata a source sets on its batches to name its primary key (a JSON list of column names)
PRIMARY_KEY_META = b"bizon_fast.primary_key"
_ORDER = "__bizon_fast_order"
_RANK = "__bizon_fast_rank"
_ROW = "__bizon_fast_row"
#: rows per file of the job's merged rows
ROWS_PER_FILE = 2_000_000


def dictionary_columns(table: pa.Table, sample: int = 4096) -> list[str]:
    """Columns worth dictionary-encoding, judged on a sample: at most half its values distinct.

    Arrow tries a dictionary for every column and gives up only after 1 MiB of distinct values;
    on high-cardinality columns (ids, payloads) that attempt costs ~40% of the write.
    """
    head = table.slice(0, sample)
    chosen = []
    for name, column in zip(head.column_names, head.columns, strict=True):
        try:
            distinct = pc.count_distinct(column).as_py()
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            continue
        if distinct * 2 <= max(len(column), 1):
            chosen.append(name)
    return chosen


def _int_rank(t: pa.DataType) -> tuple[bool, int] | None:
    if pa.types.is_integer(t):
        return pa.types.is_signed_integer(t), t.bit_width
    return None


def widens(old: pa.DataType, new: pa.DataType) -> bool:
    """True when every value of ``old`` is a value of ``new`` and the change is one the dataset may take."""
    if old.equals(new) or pa.types.is_null(old):
        return True
    o, n = _int_rank(old), _int_rank(new)
    if o and n:
        if o[0] == n[0]:
            return n[1] >= o[1]
        return n[0] and n[1] > o[1]  # unsigned into a wider signed
    if pa.types.is_floating(old) and pa.types.is_floating(new):
        return new.bit_width >= old.bit_width
    if pa.types.is_decimal(old) and pa.types.is_decimal(new):
        return new.scale == old.scale and new.precision >= old.precision
    strings = pa.types.is_string(old) and pa.types.is_large_string(new)
    return strings or (pa.types.is_binary(old) and pa.types.is_large_binary(new))


@dataclass
class SchemaPlan:
    """The dataset's schema after the job, and what changed in it (one log line each)."""

    schema: pa.Schema
    changes: list[str] = field(default_factory=list)


def _signature(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


def same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    """Same names and types in the same order (nullability and metadata aside)."""
    return _signature(a) == _signature(b)


def fold_schemas(schemas: Iterable[pa.Schema], where: str) -> pa.Schema | None:
    """One schema for files that should agree (the job's parts, or the dataset's files): widened, never narrowed."""
    fields: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            old = fields.get(f.name)
            if old is None or widens(old, f.type):
                fields[f.name] = f.type
            elif not widens(f.type, old):
                raise StepFailed(
                    f"file destination: column {f.name!r} is {old} in some of {where} and {f.type} in others: "
                    "an incompatible change; nothing was published"
                )
    if not fields:
        return None
    return pa.schema([pa.field(name, t) for name, t in fields.items()])


def unify(existing: pa.Schema | None, staged: pa.Schema, policy: str, target: Path) -> SchemaPlan:
    """The dataset's schema once the job's rows (``staged``) are in, under ``schema_evolution: policy``."""
    if existing is None:
        return SchemaPlan(staged)
    fields = {f.name: f.type for f in existing}
    changes: list[str] = []
    for f in staged:
        old = fields.get(f.name)
        if old is None:
            if policy == "freeze":
                changes.append(
                    f"column {f.name!r} ({f.type}) is new at the source: not added (schema_evolution: freeze)"
                )
                continue
            if policy == "fail":
                raise StepFailed(
                    f"file destination: column {f.name!r} ({f.type}) is new at the source and "
                    f"schema_evolution is fail: nothing was published to {target}"
                )
            fields[f.name] = f.type
            changes.append(f"column {f.name!r} added ({f.type}); earlier rows hold null")
        elif old.equals(f.type) or widens(f.type, old):
            continue  # the same, or narrower rows cast up to the dataset's type
        elif widens(old, f.type):
            if policy != "evolve":
                raise StepFailed(
                    f"file destination: column {f.name!r} widens from {old} to {f.type} and schema_evolution is "
                    f"{policy}: nothing was published to {target}"
                )
            fields[f.name] = f.type
            changes.append(f"column {f.name!r} widened from {old} to {f.type}")
        else:
            raise StepFailed(
                f"file destination: column {f.name!r} is {old} in {target} and {f.type} in this job's rows: "
                "an incompatible change; nothing was published"
            )
    return SchemaPlan(pa.schema([pa.field(name, t) for name, t in fields.items()]), changes)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: cast up, missing ones null, others dropped."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            column = table.column(f.name)
            columns.append(column if column.type.equals(f.type) else column.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def primary_key(configured: list[str] | None, staged: list[pa.Schema]) -> list[str]:
    """``destination.config.primary_key``, else the key a source named in its batches' schema metadata."""
    if configured:
        return list(configured)
    for schema in staged:
        raw = (schema.metadata or {}).get(PRIMARY_KEY_META)
        if raw:
            key = json.loads(raw)
            if isinstance(key, list) and key and all(isinstance(k, str) for k in key):
                return key
    raise StepFailed(
        "destination.config.primary_key: merge needs a key: set primary_key (the source named none in its "
        "rows' schema); nothing was published"
    )


def check_keys(staged: pa.Table, keys: list[str]) -> None:
    """A merge key holds no NULL: StepFailed (nothing published) naming the key and how many rows have one."""
    missing = pc.is_null(staged.column(keys[0]))
    for k in keys[1:]:
        missing = pc.or_(missing, pc.is_null(staged.column(k)))
    nulls = pc.sum(missing).as_py() or 0
    if nulls:
        raise StepFailed(
            f"destination.config.primary_key: {nulls} rows have a NULL in the merge key ({', '.join(keys)}); "
            "nothing was published"
        )


def check_flag(flag: str, kind: pa.DataType) -> None:
    """A deleted_flag column is a boolean: StepFailed (nothing published) naming its type otherwise."""
    if not pa.types.is_boolean(kind) and not pa.types.is_null(kind):
        raise StepFailed(
            f"destination.config.deleted_flag: column {flag!r} is {kind}, a boolean is needed; nothing was published"
        )


@dataclass
class MergeSpec:
    keys: list[str] | None  # None: append (a schema change only), no row replaced
    cursor_field: str | None
    deleted_flag: str | None


def _arange(n: int) -> pa.Array:
    return pa.array(np.arange(n, dtype=np.int64))


def latest_per_key(staged: pa.Table, spec: MergeSpec) -> pa.Table:
    """One row per key: the greatest cursor (a null cursor loses), then the last to arrive; in that order."""
    assert spec.keys is not None
    staged = staged.append_column(_ORDER, _arange(staged.num_rows))
    if spec.cursor_field and spec.cursor_field in staged.column_names:
        cursor = staged.column(spec.cursor_field)
        # a null cursor loses to any value (first in the ascending order); among equals, the later arrival wins
        keys = pa.table({"valid": pc.is_valid(cursor), "cursor": cursor, "order": staged.column(_ORDER)})
        order = pc.sort_indices(
            keys, sort_keys=[("valid", "ascending"), ("cursor", "ascending"), ("order", "ascending")]
        )
        staged = staged.take(order)
    staged = staged.drop_columns([_ORDER]).append_column(_RANK, _arange(staged.num_rows))
    last = staged.group_by(spec.keys).aggregate([(_RANK, "max")])
    ranks = last.column(f"{_RANK}_max")
    return staged.take(pc.take(ranks, pc.sort_indices(ranks))).drop_columns([_RANK])


def _not_deleted(rows: pa.Table, flag: str | None) -> pa.Table:
    if not flag:
        return rows
    deleted = pc.fill_null(rows.column(flag).cast(pa.bool_()), False)
    return rows.filter(pc.invert(deleted))


def _without_keys(table: pa.Table, keys: list[str], written: pa.Table) -> pa.Table:
    """``table`` less its rows whose key is in ``written`` (row order kept)."""
    left = table.select(keys).append_column(_ROW, _arange(table.num_rows))
    kept = left.join(written, keys=keys, join_type="left anti", use_threads=True).column(_ROW)
    if len(kept) == table.num_rows:
        return table
    return table.take(pc.take(kept, pc.sort_indices(kept)))


def _write(table: pa.Table, path: Path, fsync: bool) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, str(tmp), use_dictionary=dictionary_columns(table))
    if fsync:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, path)


def dataset_files(target: Path) -> list[Path]:
    if not target.is_dir():
        return []
    return sorted(
        p for p in target.iterdir() if p.is_file() and p.name.endswith(".parquet") and not p.name.startswith(".")
    )


@dataclass
class SnapshotResult:
    existing_rows: int = 0
    kept_rows: int = 0
    written_rows: int = 0
    deleted_keys: int = 0
    linked_files: int = 0
    rewritten_files: int = 0


def build_snapshot(
    *,
    target: Path | None,
    parts: list[Path],
    out: Path,
    plan: SchemaPlan,
    spec: MergeSpec,
    label: str,
    fsync: bool,
) -> SnapshotResult:
    """Write the dataset after the job into the empty folder ``out``: the existing files (less the rows whose key
    the job wrote), then the job's rows (one per key when merging, less the deleted). ``target`` None: a full
    refresh (or a reset) of a merge, the job's rows alone."""
    schema = plan.schema
    result = SnapshotResult()
    staged = (
        pa.concat_tables([conform(pq.read_table(str(p)), schema) for p in parts]) if parts else schema.empty_table()
    )
    written_keys = None
    if spec.keys is not None:
        check_keys(staged, spec.keys)
        staged = latest_per_key(staged, spec)
        written_keys = staged.select(spec.keys)
        before = staged.num_rows
        staged = _not_deleted(staged, spec.deleted_flag)
        result.deleted_keys = before - staged.num_rows
    for path in dataset_files(target) if target is not None else []:
        table = pq.read_table(str(path))
        result.existing_rows += table.num_rows
        changed = not same_columns(table.schema, schema)
        table = conform(table, schema) if changed else table
        if written_keys is not None and written_keys.num_rows:
            kept = _without_keys(table, spec.keys or [], written_keys)
            changed = changed or kept.num_rows != table.num_rows
            table = kept
        result.kept_rows += table.num_rows
        if not changed:
            try:
                os.link(path, out / path.name)
            except OSError:
                _write(table, out / path.name, fsync)
                result.rewritten_files += 1
            else:
                result.linked_files += 1
        elif table.num_rows:
            _write(table, out / path.name, fsync)
            result.rewritten_files += 1
    fault_point("file.merge_building")  # the existing rows are in the new snapshot, the job's rows not yet
    for i, start in enumerate(range(0, staged.num_rows, ROWS_PER_FILE)):
        _write(staged.slice(start, ROWS_PER_FILE), out / f"part-{label}-merged-{i:05d}.parquet", fsync)
    result.written_rows = staged.num_rows
    if not any(out.iterdir()):  # an empty dataset still names its columns
        _write(schema.empty_table(), out / f"part-{label}-merged-00000.parquet", fsync)
    return result
