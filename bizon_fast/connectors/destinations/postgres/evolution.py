"""Schema evolution of an existing Postgres target: what a column of the rows does to the table's column.

The consumer that creates the stage decides, per column of its first batch, against the target's catalog:

- a column the table lacks: ``evolve`` stages it with its Arrow type (``publish`` adds it, old rows NULL),
  ``freeze`` drops it from the rows, ``fail`` fails the job;
- a column whose type is a compatible widening (int2 -> int4 -> int8, real -> double precision,
  numeric(p, s) -> more digits, an integer into a numeric too small for it): ``evolve`` stages the wider
  type (``publish`` runs ``ALTER COLUMN ... TYPE``), ``freeze`` keeps the table's type (a value that does
  not fit fails), ``fail`` fails the job;
- an incompatible change (text -> integer, integer -> text, a float into an integer...) fails the job,
  whatever the policy, with one line naming the column and both types; nothing is published.

``varchar(n)`` takes strings of any length in the stage (staged as text); ``publish`` widens it to text
when a staged value is longer than n (``evolve``), or fails naming the column. Everything else keeps
today's rule: the table's type decides and the value is cast to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from bizon_fast.connectors.destinations.postgres.pgbinary import (
    BOOL,
    BPCHAR,
    BYTEA,
    DATE,
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    INTERVAL,
    JSON,
    JSONB,
    NUMERIC,
    TEXT,
    TIME,
    TIMESTAMP,
    TIMESTAMPTZ,
    UUID,
    VARCHAR,
    ddl_type,
)

KEEP, WIDEN, INCOMPATIBLE = "keep", "widen", "incompatible"
_INT_RANK = {INT2: 1, INT4: 2, INT8: 3}
_INT_OF_DDL = {"smallint": INT2, "integer": INT4, "bigint": INT8}
_INT_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19, "numeric(20,0)": 20}
MAX_NUMERIC_PRECISION = 1000


@dataclass(frozen=True)
class Decision:
    verdict: str  # keep | widen | incompatible
    stage_type: str  # the type the stage gets for the column


def arrow_kind(kind: pa.DataType) -> str:
    """The family of an Arrow type, as the rules below compare it."""
    t = pa.types
    if t.is_dictionary(kind):
        return arrow_kind(kind.value_type)
    checks = (
        ("null", t.is_null),
        ("bool", t.is_boolean),
        ("int", t.is_integer),
        ("float", t.is_floating),
        ("decimal", t.is_decimal),
        ("string", lambda k: t.is_string(k) or t.is_large_string(k) or t.is_string_view(k)),
        ("binary", lambda k: t.is_binary(k) or t.is_large_binary(k) or t.is_fixed_size_binary(k)),
        ("date", t.is_date),
        ("timestamp", t.is_timestamp),
        ("time", t.is_time),
        ("duration", t.is_duration),
        ("list", lambda k: t.is_list(k) or t.is_large_list(k) or t.is_fixed_size_list(k)),
    )
    return next((name for name, check in checks if check(kind)), "nested")


def numeric_typmod(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of a ``numeric(p, s)`` typmod; None for an unconstrained numeric."""
    if typmod < 4:
        return None
    return ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF


def _numeric(int_digits: int, scale: int) -> str:
    precision = int_digits + scale
    return f"numeric({precision},{scale})" if precision <= MAX_NUMERIC_PRECISION else "numeric"


def decide(oid: int, typmod: int, sqltype: str, elem: int, kind: pa.DataType) -> Decision:
    """What rows of Arrow type ``kind`` do to a target column of type ``sqltype`` (base ``oid``, ``typmod``)."""
    family = arrow_kind(kind)
    keep = Decision(KEEP, sqltype)
    bad = Decision(INCOMPATIBLE, sqltype)
    if family == "null":
        return keep
    if elem:
        return keep if family == "list" else bad
    if oid in _INT_RANK:
        if family != "int":
            return bad
        mapped = ddl_type(kind)
        if mapped == "numeric(20,0)":
            return Decision(WIDEN, mapped)
        return Decision(WIDEN, mapped) if _INT_RANK[_INT_OF_DDL[mapped]] > _INT_RANK[oid] else keep
    if oid in (FLOAT4, FLOAT8):
        if family == "float":
            wider = oid == FLOAT4 and pa.types.is_float64(kind)
            return Decision(WIDEN, "double precision") if wider else keep
        return keep if family in ("int", "decimal") else bad
    if oid == NUMERIC:
        return _numeric_decision(typmod, kind, family, keep, bad)
    if oid in (TEXT, VARCHAR, BPCHAR):
        return Decision(KEEP, "text") if family == "string" else bad  # varchar(n): the length is checked at publish
    if oid in (JSON, JSONB):
        return keep
    allowed = {
        BOOL: ("bool",),
        UUID: ("string", "binary"),
        BYTEA: ("binary", "string"),
        DATE: ("date", "string"),
        TIMESTAMP: ("timestamp", "date", "string"),
        TIMESTAMPTZ: ("timestamp", "date", "string"),
        TIME: ("time", "string"),
        INTERVAL: ("duration", "string"),
    }.get(oid)
    if allowed is None:  # a type the encoder does not write (inet, money...): cast at publish, as before
        return keep
    return keep if family in allowed else bad


def _numeric_decision(typmod: int, kind: pa.DataType, family: str, keep: Decision, bad: Decision) -> Decision:
    if family == "float":
        return keep
    if family not in ("int", "decimal"):
        return bad
    bounds = numeric_typmod(typmod)
    if bounds is None:
        return keep
    precision, scale = bounds
    if family == "int":
        need, new_scale = _INT_DIGITS.get(ddl_type(kind), 20), 0
    else:
        need, new_scale = kind.precision - kind.scale, kind.scale
    if need <= precision - scale and new_scale <= scale:
        return keep
    return Decision(WIDEN, _numeric(max(need, precision - scale), max(scale, new_scale)))


def widens(target: tuple[int, int], staged: tuple[int, int]) -> bool:
    """Whether the staged column's (oid, typmod) is a compatible widening of the target's (publish's check)."""
    (oid, typmod), (new_oid, new_typmod) = target, staged
    if oid in _INT_RANK and new_oid in _INT_RANK:
        return _INT_RANK[new_oid] > _INT_RANK[oid]
    if oid in _INT_RANK and new_oid == NUMERIC:
        return True
    if oid == FLOAT4 and new_oid == FLOAT8:
        return True
    if oid == NUMERIC and new_oid == NUMERIC:
        old, new = numeric_typmod(typmod), numeric_typmod(new_typmod)
        if old is None:
            return False
        if new is None:
            return True
        return new != old and new[0] - new[1] >= old[0] - old[1] and new[1] >= old[1]
    return False
