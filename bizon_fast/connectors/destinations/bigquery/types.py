"""Arrow -> BigQuery types, in one place (load jobs, the Storage Write API and insertAll share it).

Timestamps with a zone are TIMESTAMP, naive ones DATETIME (BigQuery's own distinction); decimals up
to precision 38 / scale 9 are NUMERIC, wider ones BIGNUMERIC; lists are REPEATED, structs RECORD
(a list of lists has no BigQuery form, so it is stored as JSON). A source's json / jsonb text columns are JSON
(``sourcetypes.py``). Extension or odd types fall back to STRING so a load never fails on a type alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from bizon_fast.connectors.destinations.sourcetypes import is_json

#: bizon's declared type names -> BigQuery standard names
DECLARED = {
    "FLOAT": "FLOAT64",
    "INTEGER": "INT64",
    "INT": "INT64",
    "BOOLEAN": "BOOL",
}


def bq_type(t: pa.DataType) -> str:
    """The BigQuery type name of a (non-list) Arrow type."""
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_integer(t):
        return "INT64"
    if pa.types.is_floating(t):
        return "FLOAT64"
    if pa.types.is_decimal(t):
        return "NUMERIC" if t.precision - t.scale <= 29 and t.scale <= 9 else "BIGNUMERIC"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz is not None else "DATETIME"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_time(t):
        return "TIME"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "BYTES"
    if pa.types.is_struct(t):
        return "RECORD"
    if pa.types.is_dictionary(t):
        return bq_type(t.value_type)
    if getattr(t, "extension_name", "") in ("arrow.json", "json"):
        return "JSON"
    return "STRING"


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def schema_field(name: str, t: pa.DataType, nullable: bool = True, json: bool = False) -> Any:
    """The ``SchemaField`` of one Arrow field (REPEATED for lists, nested fields for structs).

    ``json``: the strings are JSON documents (a source's json / jsonb column, ``sourcetypes.is_json``): JSON."""
    from google.cloud.bigquery import SchemaField

    mode = "NULLABLE"
    if _is_list(t):
        if _is_list(t.value_type):
            return SchemaField(name, "JSON", mode="NULLABLE")
        t, mode = t.value_type, "REPEATED"
    kind = "JSON" if json else bq_type(t)
    fields: tuple[Any, ...] = ()
    if kind == "RECORD":
        fields = tuple(schema_field(f.name, f.type, f.nullable) for f in t)
    return SchemaField(name, kind, mode=mode, fields=fields)


def bq_schema(schema: pa.Schema) -> list[Any]:
    """The BigQuery schema of an Arrow schema, every column NULLABLE (bizon relaxed REQUIRED in 0.4.1); a source's
    json / jsonb columns (field metadata ``bizon_fast.pg_type``) are JSON."""
    return [schema_field(f.name, f.type, json=is_json(f)) for f in schema]


def declared_schema(columns: Sequence[Any]) -> list[Any]:
    """The BigQuery schema of bizon ``record_schema`` columns (name, type, mode, description)."""
    from google.cloud.bigquery import SchemaField

    out = []
    for column in columns:
        kind = str(column.type).upper()
        out.append(
            SchemaField(
                column.name,
                DECLARED.get(kind, kind),
                mode=getattr(column, "mode", None) or "NULLABLE",
                description=getattr(column, "description", None),
                default_value_expression=getattr(column, "default_value_expression", None),
            )
        )
    return out


def arrow_type(kind: str) -> pa.DataType | None:
    """The Arrow type a declared BigQuery type is loaded from (None: keep what the data has)."""
    return {
        "STRING": pa.string(),
        "INT64": pa.int64(),
        "FLOAT64": pa.float64(),
        "BOOL": pa.bool_(),
        "TIMESTAMP": pa.timestamp("us", "UTC"),
        "DATETIME": pa.timestamp("us"),
        "DATE": pa.date32(),
        "TIME": pa.time64("us"),
        "NUMERIC": pa.decimal128(38, 9),
        "BYTES": pa.binary(),
        "JSON": pa.string(),
        "GEOGRAPHY": pa.string(),
    }.get(DECLARED.get(kind.upper(), kind.upper()))
