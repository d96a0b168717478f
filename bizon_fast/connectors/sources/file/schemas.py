"""One schema for every file of a stream: unified at planning, every batch conformed to it when read.

The rules follow what the destinations accept as schema evolution: a column some files lack is null in
their rows; a column whose types differ takes the wider one (int32 + int64 -> int64, int + float ->
float64, string + large_string -> large_string; pyarrow's ``permissive`` promotion); types that do not
widen into each other fail at planning, naming both files. ``source.column_types`` overrides the result.
Every field is nullable. Text formats' all-null sample columns are read as strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pyarrow as pa

from bizon_fast.errors import ConfigError, UserError

#: what pyarrow raises when data does not fit a type or cannot be parsed (as opposed to an I/O failure)
ARROW_DATA_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)

_DECIMAL = re.compile(r"^decimal(128|256)?\(\s*(\d+)\s*,\s*(-?\d+)\s*\)$")
_TIMESTAMP = re.compile(r"^timestamp\[\s*(s|ms|us|ns)\s*(?:,\s*tz\s*=\s*(.+?)\s*)?\]$")


def parse_type(name: str, text: str) -> pa.DataType:
    """An Arrow type from its name in ``source.column_types`` (``int64``, ``timestamp[us, tz=UTC]``...)."""
    spec = text.strip()
    if match := _DECIMAL.match(spec):
        width, precision, scale = match.groups()
        factory = pa.decimal256 if width == "256" or int(precision) > 38 else pa.decimal128
        return factory(int(precision), int(scale))
    if match := _TIMESTAMP.match(spec):
        return pa.timestamp(match.group(1), tz=match.group(2))
    try:
        return pa.type_for_alias(spec)
    except (ValueError, KeyError):
        raise ConfigError(
            f"source.column_types.{name}: unknown Arrow type {text!r} (int64, float64, string, bool, date32, "
            "timestamp[us], timestamp[us, tz=UTC], decimal128(p, s)...)"
        ) from None


def column_types(types: dict[str, str]) -> dict[str, pa.DataType]:
    return {name: parse_type(name, text) for name, text in types.items()}


def plain(schema: pa.Schema, nulls_as_string: bool = False) -> pa.Schema:
    """``schema`` without metadata, every field nullable (all-null columns as strings when asked)."""
    fields = []
    for field in schema:
        kind = pa.string() if nulls_as_string and pa.types.is_null(field.type) else field.type
        fields.append(pa.field(field.name, kind, nullable=True))
    return pa.schema(fields)


def unify(schemas: Iterable[tuple[str, pa.Schema]], overrides: dict[str, pa.DataType]) -> pa.Schema:
    """The stream's schema from each file's (``uri``, schema); a conflict names the two files."""
    merged: pa.Schema | None = None
    first: dict[str, str] = {}
    for uri, schema in schemas:
        schema = pa.schema([f for f in schema if f.name not in overrides])
        if merged is None:
            merged = schema
        else:
            try:
                merged = pa.unify_schemas([merged, schema], promote_options="permissive")
            except ARROW_DATA_ERRORS as exc:
                clash = next(
                    (f.name for f in schema if f.name in merged.names and merged.field(f.name).type != f.type), None
                )
                where = (
                    f"column {clash!r} is {merged.field(clash).type} in the files before ({first.get(clash)}...) but "
                    if clash
                    else ""
                )
                detail = f"{schema.field(clash).type} in {uri}" if clash else f"{uri}: {exc}"
                raise UserError(
                    f"source.path: the files' schemas do not unify: {where}{detail}; set source.column_types"
                ) from None
        for field in schema:
            first.setdefault(field.name, uri)
    fields = list(merged or pa.schema([]))
    names = [f.name for f in fields]
    for name, kind in overrides.items():
        if name in names:
            fields[names.index(name)] = pa.field(name, kind)
        else:
            fields.append(pa.field(name, kind))
    return plain(pa.schema(fields))


def conform(batch: pa.RecordBatch, schema: pa.Schema, uri: str) -> pa.RecordBatch:
    """``batch`` with exactly ``schema``'s columns, in order: missing ones null, others cast (no copy when equal)."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch if batch.schema.metadata is None else batch.replace_schema_metadata(None)
    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(index)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except ARROW_DATA_ERRORS as exc:
                raise UserError(f"source: {uri}: column {field.name!r} cannot be read as {field.type}: {exc}") from None
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def to_bytes(schema: pa.Schema) -> bytes:
    return schema.serialize().to_pybytes()


def from_bytes(data: bytes) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(data))
