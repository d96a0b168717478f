"""Columnar chunks: one binary COPY of a key (or block) range, decoded to Arrow by the ADBC driver.

Each chunk is one ``SELECT`` with its bounds inlined as literals, run through the ADBC PostgreSQL
driver (``adbc_driver_postgresql``): a query without bind parameters goes out as ``COPY (...) TO
STDOUT (FORMAT binary)`` and the driver decodes the stream into Arrow arrays in C. What is left in
Python is a few vector operations per column and chunk (below), never a loop over rows.

Why ADBC and not the hand-written aggregate decoder this module used to hold (the server packed a
range of rows into a few ``string_agg`` values of fixed-width records that numpy unpacked): measured on
the same 3M-row table (bigint PK, text, int, timestamptz, jsonb; ``native_bench``'s ``pgread`` table),
same run, one split read in one process, 5 interleaved rounds on a busy 2-core machine, medians: the
aggregate decoder 8.5 s (0.5 s client CPU + 4.6 s server CPU), ADBC 5.4 s (1.1 s + 2.3 s): 1.6x the
rows/s, half the server's CPU, a third less CPU in all. Binary COPY costs the server only the
``*send`` functions, where the aggregates also built and concatenated a record per row.

Types (unchanged from the aggregate decoder, so batches look the same to every destination):
integers, floats, bool, date, time, timestamp and timestamptz (UTC) map to their Arrow types;
numeric(p,s) with p <= 38 to decimal128(p,s) (unconstrained numeric to string); bytea to binary;
json and jsonb to string (the driver's ``arrow.json`` storage); uuid to its canonical text (the
driver's 16 bytes formatted by numpy); one-dimensional arrays of integers, bools, floats, text,
dates and timestamps to lists of those; arrays of numeric to lists of decimals (or strings); every
other type, and arrays of them, to its PostgreSQL text form, cast to ``text`` in the select list
(char(n) loses its trailing blanks, as in any cast to text; interval is written in the session's
``IntervalStyle = postgres``). Values Arrow cannot hold ('infinity' dates and timestamps, numeric
NaN in a numeric(p,s) column) and arrays of more than one dimension fail the read with the
column's name. Every field carries its Postgres type as metadata (``PG_TYPE_META``) and is
non-nullable exactly when the column is NOT NULL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bizon_fast.errors import UserError

# oid -> arrow type of the fixed-width types ADBC decodes as is
FIXED: dict[int, pa.DataType] = {
    16: pa.bool_(),
    21: pa.int16(),
    23: pa.int32(),
    20: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
BYTEA = 17
NUMERIC = 1700
UUID = 2950
JSON_TYPES = (114, 3802)  # json, jsonb
#: strings ADBC decodes as is: text, varchar, name (char(n) is cast to text: that drops its padding)
STRINGS = (25, 1043, 19)
#: field metadata of every column read from Postgres: its type as ``format_type()`` writes it (domains resolved to
#: their base type), e.g. ``numeric(12,2)``, ``jsonb``, ``integer[]``; a Postgres destination recreates it exactly
PG_TYPE_META = b"bizon_fast.pg_type"
INTEGER_OIDS = (20, 21, 23)
#: array elements ADBC decodes into lists of these Arrow types (the types the aggregate decoder gave them)
LIST_ELEMENTS: dict[int, pa.DataType] = {
    16: pa.bool_(),
    21: pa.int16(),
    23: pa.int32(),
    20: pa.int64(),
    25: pa.string(),
    1043: pa.string(),
    1042: pa.string(),  # elements of char(n)[] keep their padding, as array_to_json wrote them
    19: pa.string(),
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
#: the values ADBC gives 'infinity' and '-infinity' (PostgreSQL's int extremes shifted to the Unix epoch, wrapped)
_EPOCH_DAYS, _EPOCH_US = 10_957, 946_684_800_000_000
_INFINITIES = {
    "date": np.array([2**31 - 1 + _EPOCH_DAYS - 2**32, -(2**31) + _EPOCH_DAYS], np.int64),
    "timestamp": np.array([2**63 - 1 + _EPOCH_US - 2**64, -(2**63) + _EPOCH_US], np.int64),
}
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


@dataclass(frozen=True)
class Column:
    """A result column, domains resolved to their base type."""

    name: str
    oid: int
    typmod: int
    elem: int  # element type of an array, 0 otherwise
    nullable: bool
    sqltype: str  # format_type(): for casts

    def numeric_type(self, typmod: int | None = None) -> pa.DataType:
        """decimal128(p, s) for numeric(p, s) with p <= 38 and 0 <= s <= p; string otherwise."""
        mod = self.typmod if typmod is None else typmod
        if mod < 4:
            return pa.string()
        precision, scale = ((mod - 4) >> 16) & 0xFFFF, (mod - 4) & 0xFFFF
        if scale >= 0x400:  # PostgreSQL 15 stores negative scales as an 11-bit two's complement
            return pa.string()
        if 1 <= precision <= 38 and scale <= precision:
            return pa.decimal128(precision, scale)
        return pa.string()

    def arrow_type(self) -> pa.DataType:
        if self.oid in FIXED:
            return FIXED[self.oid]
        if self.oid == BYTEA:
            return pa.binary()
        if self.oid == NUMERIC:
            return self.numeric_type()
        if self.elem:
            if self.elem in LIST_ELEMENTS:
                return pa.list_(LIST_ELEMENTS[self.elem])
            if self.elem == NUMERIC:
                return pa.list_(self.numeric_type())
            return pa.list_(pa.string())
        return pa.string()

    def select(self) -> str:
        """The select-list expression: the column as is where ADBC decodes it to its Arrow type, else as text.

        Unconstrained numeric goes as text because ADBC writes NaN as ``nan``, where the text form is ``NaN``;
        numeric arrays as ``text[]`` because ADBC's list of opaque numerics cannot be cast to decimals.
        """
        name = quote(self.name)
        if self.elem:
            return name if self.elem in LIST_ELEMENTS else f"{name}::text[]"
        if self.oid in FIXED or self.oid in STRINGS or self.oid in (BYTEA, UUID, *JSON_TYPES):
            return name
        if self.oid == NUMERIC and pa.types.is_decimal(self.numeric_type()):
            return name
        return f"{name}::text"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ChunkPlan:
    """The select list of a chunk query over some row source, and the conversion of ADBC's result to the schema."""

    def __init__(self, columns: Sequence[Column]) -> None:
        if not columns:
            raise UserError("source: the table or query has no columns")
        self.columns = list(columns)
        self.schema = pa.schema(
            [
                pa.field(c.name, c.arrow_type(), nullable=c.nullable, metadata={PG_TYPE_META: c.sqltype.encode()})
                for c in self.columns
            ]
        )
        items = [f"{c.select()} AS c{i}" for i, c in enumerate(self.columns)]
        # ADBC flattens a multi-dimensional array into one list: its dimensions ride along to be checked
        self.arrays = [i for i, c in enumerate(self.columns) if c.elem]
        items += [f"array_ndims({quote(self.columns[i].name)}) AS d{i}" for i in self.arrays]
        self.select_list = ", ".join(items)

    def query(self, source: str, where: str) -> str:
        """The chunk query: the rows of ``source`` matching ``where`` (bounds inlined: ADBC COPYs only then)."""
        return f"SELECT {self.select_list} FROM {source} WHERE {where}"

    def decode(self, table: pa.Table) -> pa.RecordBatch:
        """ADBC's result of ``query`` as one batch of ``schema``: each column a few vector operations."""
        batch = table.combine_chunks().to_batches()
        if not batch:
            return _empty(self.schema)
        columns = batch[0].columns
        for k, i in enumerate(self.arrays):
            dims = columns[len(self.columns) + k]
            if dims.null_count < len(dims) and pc.max(dims).as_py() > 1:
                raise UserError(
                    f"source: array column {self.columns[i].name!r} holds a multi-dimensional array (only "
                    "one-dimensional arrays are supported): read it through a query that flattens or casts it"
                )
        types = self.schema.types
        arrays = [self._convert(col, columns[i], types[i]) for i, col in enumerate(self.columns)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _convert(self, col: Column, array: pa.Array, target: pa.DataType) -> pa.Array:
        if isinstance(array.type, pa.BaseExtensionType):  # arrow.json (text), arrow.uuid (16 bytes), arrow.opaque
            array = _uuid_text(array.storage) if col.oid == UUID else array.storage
        if col.oid in (1082, 1114, 1184) or col.elem in (1082, 1114, 1184):
            _no_infinity(col, array.flatten() if col.elem else array)
        if array.type == target:
            return array
        try:
            return pc.cast(array, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise UserError(f"source: column {col.name!r} cannot be read as {target}: {exc}") from None


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def _no_infinity(col: Column, values: pa.Array) -> None:
    """'infinity' and '-infinity' have no Arrow value: fail the read rather than write a wrong date."""
    if len(values) == 0 or values.null_count == len(values):
        return
    ints = values.view(pa.int32() if pa.types.is_date32(values.type) else pa.int64())
    bounds = pc.min_max(ints).values()
    sentinels = _INFINITIES["date" if pa.types.is_date32(values.type) else "timestamp"]
    if any(b.as_py() in sentinels for b in bounds):
        raise UserError(
            f"source: column {col.name!r} holds 'infinity', which Arrow cannot represent; "
            "read it through a query: that maps it to NULL or a date"
        )


def _uuid_text(raw: pa.FixedSizeBinaryArray) -> pa.Array:
    """16-byte uuids as their canonical text (``8-4-4-4-12`` lowercase hex), by numpy lookups over the whole array."""
    n = len(raw)
    data = np.frombuffer(raw.buffers()[1], np.uint8, count=n * 16, offset=raw.offset * 16).reshape(n, 16)
    digits = np.empty((n, 32), np.uint8)
    digits[:, 0::2] = _HEX[data >> 4]
    digits[:, 1::2] = _HEX[data & 15]
    text = np.full((n, 36), ord("-"), np.uint8)
    for start, end, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        text[:, at : at + end - start] = digits[:, start:end]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    validity = None
    if raw.null_count:  # packed anew: the input's bitmap may start at a bit offset
        validity = pa.py_buffer(np.packbits(raw.is_valid().to_numpy(zero_copy_only=False), bitorder="little"))
    return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(text)])
