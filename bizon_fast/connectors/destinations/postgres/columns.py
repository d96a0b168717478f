"""The columns a table created by the Postgres destination gets: the source's exact types, NOT NULL, its key.

A Postgres source tags each Arrow field with its column's type as ``format_type()`` writes it (field metadata
``bizon_fast.pg_type``, ``sourcetypes.py``: ``jsonb``, ``numeric(12,2)``, ``integer[]``, ``character varying(20)``),
reads NOT NULL columns as non-nullable fields, and names its table's primary key in the schema metadata
(``bizon_fast.primary_key``). Arrow alone cannot tell ``jsonb`` from ``text`` or ``uuid`` from ``text`` (all are
strings), so without the tag a Postgres -> Postgres copy would change the data's shape.

For each field, the type a new column gets is:

- the tagged type, when it exists in the destination database (an enum or an extension's type may not) and the
  field's Arrow values can be written as it (``evolution.decide``; a transform may have changed the column);
  types the binary COPY encoder writes (``pgbinary``) are staged as they are, others (``inet``, ``money``,
  ``timetz``, enums...) are staged as ``text`` (``text[]``) and cast to the tagged type when the table is created;
- otherwise the closest type of the Arrow type (``pgbinary.ddl_type``), as for any other source.

A non-nullable field becomes a NOT NULL column.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from bizon_fast.connectors.destinations.postgres.evolution import INCOMPATIBLE, decide
from bizon_fast.connectors.destinations.postgres.pgbinary import NUMERIC, PgColumn, ddl_type
from bizon_fast.connectors.destinations.sourcetypes import pg_type

log = logging.getLogger("bizon_fast.destination.postgres")

#: schema metadata of a batch naming its source's primary key (a JSON list), as the Postgres source attaches it
PRIMARY_KEY_META = b"bizon_fast.primary_key"

_RESOLVE = """
SELECT x.t, r.oid, coalesce(nullif(r.typbasetype, 0), r.oid), r.typelem, r.typcategory
FROM unnest(%s::text[]) WITH ORDINALITY x(t, i) LEFT JOIN pg_type r ON r.oid = to_regtype(x.t) ORDER BY x.i
"""


@dataclass(frozen=True)
class StageColumn:
    """A column of the stage: its type there, NOT NULL, and the type it is cast to when the table is created."""

    name: str
    type: str
    not_null: bool = False
    cast: str | None = None  # the table's type when the stage holds text (a type the encoder does not write)

    def ddl(self, quoted: str) -> str:
        return f"{quoted} {self.type}" + (" NOT NULL" if self.not_null else "")


def source_key(schema: pa.Schema) -> list[str] | None:
    """The primary key a source named in the batch's schema metadata, if any."""
    raw = (schema.metadata or {}).get(PRIMARY_KEY_META)
    return list(json.loads(raw)) if raw else None


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def table_columns(cur: Any, fields: list[pa.Field], where: str) -> list[StageColumn]:
    """The stage columns of a table created from these fields (exact types where tagged, NOT NULL carried).

    ``where`` names the table in the log line that says a tagged type was not kept.
    """
    tagged = sorted({t for f in fields if (t := pg_type(f))})
    known: dict[str, tuple[int, int, int, str]] = {}
    if tagged:
        for name, oid, base, elem, category in cur.execute(_RESOLVE, (tagged,)).fetchall():
            if oid is not None:
                known[name] = (oid, base, elem if category == "A" else 0, category)
    out = []
    for field in fields:
        not_null = not field.nullable
        mapped = StageColumn(field.name, ddl_type(field.type), not_null)
        tag = pg_type(field)
        if tag is None:
            out.append(mapped)
            continue
        if tag not in known:
            log.info(
                "postgres destination: %s: type %s of column %s does not exist here: %s instead",
                where,
                tag,
                field.name,
                mapped.type,
            )
            out.append(mapped)
            continue
        _, base, elem, _ = known[tag]
        text_numeric = base == NUMERIC and _is_text(field.type)  # unconstrained or wider than decimal128
        if not text_numeric and decide(base, -1, tag, elem, field.type).verdict == INCOMPATIBLE:
            log.info(
                "postgres destination: %s: column %s holds %s, which is not written as %s: %s instead",
                where,
                field.name,
                field.type,
                tag,
                mapped.type,
            )
            out.append(mapped)
        elif PgColumn(field.name, base, -1, elem).supported:
            out.append(StageColumn(field.name, tag, not_null))
        else:
            out.append(StageColumn(field.name, "text[]" if elem else "text", not_null, cast=tag))
    return out
