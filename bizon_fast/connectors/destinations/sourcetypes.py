"""A column's source type beyond its Arrow type, and the closest type a non-Postgres destination has for it.

The Postgres source tags each Arrow field with its column's PostgreSQL type (field metadata ``bizon_fast.pg_type``,
as ``format_type()`` writes it). Some types travel as Arrow strings because Arrow has no better form (``json``,
``jsonb``, ``uuid``, ``interval``, a ``numeric`` wider than decimal128): the tag lets a destination with a closer
type use it. The Postgres destination recreates the exact type (``postgres/columns.py``); BigQuery and Parquet take
what they have:

- ``json`` / ``jsonb`` -> BigQuery ``JSON``; Parquet's JSON logical type (pyarrow's ``arrow.json`` extension type:
  the same UTF-8 bytes, so a reader that does not know the logical type still reads a string);
- ``numeric(p, s)`` -> decimal128 already (Parquet DECIMAL; BigQuery NUMERIC / BIGNUMERIC by precision and scale);
  an unconstrained ``numeric`` or one past 38 digits stays a string: its values may not fit BIGNUMERIC (76 digits,
  scale 38) and it may hold NaN or infinities, which neither has;
- ``uuid`` stays a string: Parquet's UUID logical type is read back as 16 raw bytes by several readers (polars),
  which would lose the form every user knows; ``interval`` stays its PostgreSQL text.
"""

from __future__ import annotations

import pyarrow as pa

#: field metadata: the column's PostgreSQL type at the source (the Postgres source's ``PG_TYPE_META``)
PG_TYPE_META = b"bizon_fast.pg_type"
JSON_TYPES = frozenset(("json", "jsonb"))


def pg_type(field: pa.Field) -> str | None:
    """The PostgreSQL type a source tagged the field with, if any (e.g. ``numeric(12,2)``, ``jsonb[]``)."""
    raw = (field.metadata or {}).get(PG_TYPE_META)
    return raw.decode() if raw else None


def is_json(field: pa.Field) -> bool:
    """Whether the field holds JSON documents as text (a tagged json/jsonb column, or a list of them)."""
    tag = pg_type(field)
    if tag is None:
        return False
    kind = field.type
    if tag.endswith("[]"):
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            return False
        tag, kind = tag[:-2], kind.value_type
    return tag in JSON_TYPES and (pa.types.is_string(kind) or pa.types.is_large_string(kind))


def parquet_closest(table: pa.Table) -> pa.Table:
    """The table with its JSON text columns as Parquet JSON (``pa.json_()``); others as they are. Cheap: the
    extension type wraps the same string buffers."""
    fields = list(table.schema)
    if not any(is_json(f) for f in fields):
        return table
    for i, field in enumerate(fields):
        if is_json(field):
            json_type = pa.json_(field.type if not pa.types.is_list(field.type) else field.type.value_type)
            kind = json_type if not pa.types.is_list(field.type) else pa.list_(json_type)
            table = table.set_column(i, field.with_type(kind), table.column(i).cast(kind))
    return table
