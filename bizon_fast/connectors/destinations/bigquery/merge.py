"""What a BigQuery publish that appends or merges into an existing table needs beyond the append itself:
the schema evolution of the target (``schema_evolution: evolve | freeze | fail``) and the ``MERGE`` statement.

**Schema evolution.** The job's columns (the stage's, created from its rows) are compared with the target's,
as a query sees them (``SELECT * ... WHERE FALSE``: its schema is the live one, and it bills nothing; the
table's metadata adds the ``STRING(n)`` / ``NUMERIC(p, s)`` parameters). Per column of the job:

- not in the target: a new column. ``evolve`` adds it (``ALTER TABLE ADD COLUMN IF NOT EXISTS``: old rows
  null), ``freeze`` leaves it out of the publish, ``fail`` fails the job;
- the same type: nothing (Arrow's int32 and int64 are both INT64, float32 and float64 both FLOAT64);
- a type the target's takes as it is (INT64 into NUMERIC, BIGNUMERIC or FLOAT64; NUMERIC into BIGNUMERIC or
  FLOAT64): nothing;
- a lossless widening of the target's type (INT64 -> NUMERIC / BIGNUMERIC, NUMERIC -> BIGNUMERIC,
  ``STRING(n)`` -> STRING, ``NUMERIC(p, s)`` -> NUMERIC): ``evolve`` applies it (``ALTER COLUMN SET DATA TYPE``),
  ``freeze`` and ``fail`` fail the job (the target's type cannot hold the job's values);
- anything else (STRING -> INT64, a RECORD whose fields changed, a column turned REPEATED): incompatible,
  the job fails naming the column and both types.

Every check is made before the first statement runs, so a failing job publishes nothing. The DDL statements
run before the publish transaction (BigQuery runs no DDL inside one); each is idempotent (``IF NOT EXISTS``,
a type set twice), so a rerun after a crash between them and the publish finds nothing left to do.

**Merge.** The kept rows of the stage, the last version of each key first (``ROW_NUMBER() OVER (PARTITION BY
key ORDER BY cursor DESC, split DESC, first seq DESC, position DESC)``), merged in one ``MERGE``: a matched key
whose ``deleted_flag`` is true is deleted, another matched key updated, an unmatched one inserted unless
deleted. A key of NULL never matches (BigQuery's ``=``): a NULL in the key fails the job before anything is
published (one line naming the key and the count), as with Postgres and the file destination. A full refresh
(or a reset) with ``merge`` replaces the table by the last version of each key, less the deleted
(``rebuild_sql``). ``freeze`` keeps the target's columns and types: new columns left out, a widening fails.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from bizon_fast.errors import StepFailed

log = logging.getLogger("bizon_fast.destination.bigquery")

KEY = "destination.config"
PRIMARY_KEY_META = b"bizon_fast.primary_key"
ROW_NUMBER = "_bizon_fast_rn"

#: legacy type names (a CTAS and the query API report them) -> standard names
STANDARD = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}
#: (job's type, target's type): the target takes the job's values as they are
COERCIBLE = {
    ("INT64", "NUMERIC"),
    ("INT64", "BIGNUMERIC"),
    ("INT64", "FLOAT64"),
    ("NUMERIC", "BIGNUMERIC"),
    ("NUMERIC", "FLOAT64"),
    ("BIGNUMERIC", "FLOAT64"),
}
#: (target's type, job's type): ``ALTER COLUMN SET DATA TYPE`` widens the target losslessly
WIDENINGS = {("INT64", "NUMERIC"), ("INT64", "BIGNUMERIC"), ("NUMERIC", "BIGNUMERIC")}


def quote(name: str) -> str:
    return f"`{name}`"


def type_sql(f: Any, params: bool = False) -> str:
    """A ``SchemaField``'s type in DDL: ``ARRAY<...>`` for REPEATED, ``STRUCT<...>`` for RECORD; with ``params``,
    ``STRING(n)`` / ``NUMERIC(p, s)`` where the field has them."""
    kind = STANDARD.get(f.field_type.upper(), f.field_type.upper())
    if kind == "STRUCT":
        inner = "STRUCT<" + ", ".join(f"{quote(s.name)} {type_sql(s, params)}" for s in f.fields) + ">"
    elif params and f.max_length:
        inner = f"{kind}({f.max_length})"
    elif params and f.precision:
        inner = f"{kind}({f.precision}, {f.scale or 0})"
    else:
        inner = kind
    return f"ARRAY<{inner}>" if (f.mode or "").upper() == "REPEATED" else inner


@dataclass
class Evolution:
    """What a publish into an existing target does to its schema, decided before anything runs."""

    columns: list[str]  # the job's columns the publish writes (freeze leaves new ones out)
    ddl: list[str] = field(default_factory=list)  # ALTER TABLE statements, in order
    changes: list[str] = field(default_factory=list)  # one line each, for the log


def evolve(table_id: str, job: list[Any], live: list[Any], meta: list[Any], policy: str) -> Evolution:
    """The target's schema changes for the job's columns ``job`` (SchemaFields) under ``policy``; StepFailed,
    before anything ran, for an incompatible change (or any change under ``fail``)."""
    have = {f.name.lower(): f for f in live}
    params = {f.name.lower(): f for f in meta}
    out = Evolution(columns=[])
    adds: list[str] = []

    def refuse(why: str) -> StepFailed:
        return StepFailed(f"{KEY}.schema_evolution: {why}; nothing was published to {table_id}")

    for f in job:
        target = have.get(f.name.lower())
        want = type_sql(f)
        if target is None:
            if policy == "fail":
                raise refuse(f"column {f.name!r} ({want}) is new and schema_evolution is fail")
            if policy == "freeze":
                log.info("bigquery destination: %s: new column %s (%s) left out (schema_evolution: freeze)",
                         table_id, f.name, want)  # fmt: skip
                continue
            adds.append(f"ADD COLUMN IF NOT EXISTS {quote(f.name)} {want}")
            out.changes.append(f"column {f.name} added ({want}; existing rows null)")
            out.columns.append(f.name)
            continue
        out.columns.append(f.name)
        base = type_sql(target)
        declared = params.get(f.name.lower())
        full = type_sql(declared, params=True) if declared is not None and type_sql(declared) == base else base
        if base == want:
            if full != base and policy == "evolve":  # STRING(n) / NUMERIC(p, s) -> the unbounded type
                out.ddl.append(f"ALTER TABLE `{table_id}` ALTER COLUMN {quote(f.name)} SET DATA TYPE {want}")
                out.changes.append(f"column {f.name} widened from {full} to {want}")
            continue
        if (want, base) in COERCIBLE:
            continue
        if (base, want) in WIDENINGS:
            if policy != "evolve":
                raise refuse(f"column {f.name!r} is {full} in the table and {want} in this job (a widening; "
                             f"schema_evolution is {policy})")  # fmt: skip
            out.ddl.append(f"ALTER TABLE `{table_id}` ALTER COLUMN {quote(f.name)} SET DATA TYPE {want}")
            out.changes.append(f"column {f.name} widened from {full} to {want}")
            continue
        raise refuse(f"column {f.name!r} is {full} in the table and {want} in this job (an incompatible change; "
                     "a full refresh replaces the table)")  # fmt: skip
    if adds:
        out.ddl.insert(0, f"ALTER TABLE `{table_id}` " + ", ".join(adds))
    return out


def source_key(batches: list[pa.RecordBatch]) -> list[str] | None:
    """The primary key a source named in its batches' schema metadata (``bizon_fast.primary_key``), if any."""
    for batch in batches:
        raw = (batch.schema.metadata or {}).get(PRIMARY_KEY_META)
        if raw:
            try:
                key = json.loads(raw)
            except ValueError:
                return None
            if isinstance(key, list) and key and all(isinstance(k, str) for k in key):
                return key
    return None


def stage_key(stage: Any) -> list[str] | None:
    """The source's key as the first write recorded it in the stage's description."""
    try:
        key = json.loads(stage.description or "{}").get("primary_key")
    except (ValueError, AttributeError):
        return None
    return key if isinstance(key, list) and key else None


def merge_key(configured: list[str] | None, stage: Any, columns: list[str]) -> list[str]:
    """``primary_key``, else the source's key; StepFailed (nothing published) when there is none or a key column
    is not in the job's rows."""
    key = list(configured) if configured else stage_key(stage)
    if not key:
        raise StepFailed(
            f"{KEY}.primary_key: merge needs a key: set primary_key (the source named none in its rows' schema); "
            "nothing was published"
        )
    missing = [k for k in key if k not in columns]
    if missing:
        raise StepFailed(
            f"{KEY}.primary_key: {missing} not in the job's columns ({', '.join(columns)}); nothing was published"
        )
    return key


def check_flag(flag: str | None, stage_fields: dict[str, Any]) -> None:
    if flag is None:
        return
    f = stage_fields.get(flag)
    if f is None:
        raise StepFailed(f"{KEY}.deleted_flag: column {flag!r} is not in the job's rows; nothing was published")
    if type_sql(f) != "BOOL":
        raise StepFailed(
            f"{KEY}.deleted_flag: column {flag!r} is {type_sql(f)}, a boolean is needed; nothing was published"
        )


def null_key_sql(stage: str, key: list[str], where: str) -> str:
    """How many of the stage's kept rows have a NULL in the key (a merge refuses them: NULL never matches)."""
    nulls = " OR ".join(f"{quote(k)} IS NULL" for k in key)
    return f"SELECT COUNT(*) AS n FROM `{stage}`{where}{' AND ' if where else ' WHERE '}({nulls})"


def null_key_failure(count: int, key: list[str]) -> StepFailed:
    return StepFailed(
        f"{KEY}.primary_key: {count} rows have a NULL in the merge key ({', '.join(key)}); nothing was published"
    )


def latest_sql(stage: str, columns: list[str], key: list[str], order: list[str], where: str) -> str:
    """The last version of each key among the stage's kept rows (see the module docstring)."""
    cols = ", ".join(quote(c) for c in columns)
    return (
        f"SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {', '.join(quote(k) for k in key)}"
        f" ORDER BY {', '.join(f'{quote(o)} DESC' for o in order)}) AS {ROW_NUMBER} FROM `{stage}`{where})"
        f" WHERE {ROW_NUMBER} = 1"
    )


def rebuild_sql(stage: str, columns: list[str], key: list[str], order: list[str], flag: str | None, where: str) -> str:
    """A merge's full refresh (or reset): the table becomes the last version of each key, less the deleted."""
    latest = latest_sql(stage, columns, key, order, where)
    if not flag:
        return latest
    return f"SELECT {', '.join(quote(c) for c in columns)} FROM ({latest}) WHERE NOT COALESCE({quote(flag)}, FALSE)"


def merge_sql(
    target: str,
    stage: str,
    columns: list[str],
    key: list[str],
    order: list[str],
    flag: str | None,
    where: str,
) -> str:
    """``MERGE`` of the last version of each key among the stage's kept rows (see the module docstring)."""
    cols = ", ".join(quote(c) for c in columns)
    latest = latest_sql(stage, columns, key, order, where)
    on = " AND ".join(f"T.{quote(k)} = S.{quote(k)}" for k in key)
    deleted = f"COALESCE(S.{quote(flag)}, FALSE)" if flag else ""
    clauses = [f"WHEN MATCHED AND {deleted} THEN DELETE"] if flag else []
    updates = [c for c in columns if c not in key]
    if updates:
        clauses.append("WHEN MATCHED THEN UPDATE SET " + ", ".join(f"{quote(c)} = S.{quote(c)}" for c in updates))
    values = ", ".join(f"S.{quote(c)}" for c in columns)
    clauses.append(f"WHEN NOT MATCHED{f' AND NOT {deleted}' if flag else ''} THEN INSERT ({cols}) VALUES ({values})")
    return f"MERGE `{target}` T USING ({latest}) S ON {on}\n" + "\n".join(clauses)
