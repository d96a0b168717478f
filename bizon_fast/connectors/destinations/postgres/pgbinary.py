"""Arrow batches as PostgreSQL binary COPY rows, built column-wise (no per-row Python).

Why binary and not CSV: on a 1M-row, ~110 B/row table (2-vCPU guest), ``pyarrow.csv.write_csv``
took 2.06 s and the server's CSV ``COPY FROM`` 2.08 s; this encoder takes ~0.25 s and the server's
binary ``COPY FROM`` 1.30 s. The server's half matters most: on a small machine it shares the
cores with everything else.

A binary COPY row is ``int16 field count`` then, per field, ``int32 length`` (-1 = NULL) and the
value in the type's ``*send`` format. Fixed-width fields of consecutive columns are written into
one packed numpy record array (a *run*: one typed, strided copy per field); a variable-width
column closes the run with its length prefix and contributes one Arrow binary array of values.
The row bytes are then one ``binary_join_element_wise`` of [run, values, run, values, ...] -- or,
for an all-fixed table without NULLs, the run itself.

The encoder is driven by the *target* column types (read from the catalog), so a batch can be
appended to an existing table: the Arrow column is cast to what the PostgreSQL type needs.
Supported targets: bool, int2/4/8, float4/8, numeric, date, time, timestamp, timestamptz,
interval, uuid, text, varchar, char, json, jsonb, bytea, and one-dimensional arrays of those.
The destination stages any other type as text and casts it when publishing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bizon_fast.errors import UserError

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, header extension length
TRAILER = b"\xff\xff"
PG_EPOCH_DAYS = 10_957
PG_EPOCH_US = 946_684_800_000_000

BOOL, BYTEA, INT8, INT2, INT4, TEXT, JSON = 16, 17, 20, 21, 23, 25, 114
FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE, TIME, TIMESTAMP, TIMESTAMPTZ = 700, 701, 1042, 1043, 1082, 1083, 1114, 1184
INTERVAL, NUMERIC, UUID, JSONB = 1186, 1700, 2950, 3802
TEXT_LIKE = (TEXT, VARCHAR, BPCHAR, JSON)
SCALARS = frozenset(
    (BOOL, BYTEA, INT8, INT2, INT4, TEXT, JSON, FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE, TIME, TIMESTAMP, TIMESTAMPTZ)
    + (INTERVAL, NUMERIC, UUID, JSONB)
)
_FIXED_NUMPY = {BOOL: ("u1", pa.bool_()), INT2: (">i2", pa.int16()), INT4: (">i4", pa.int32())}
_FIXED_NUMPY |= {INT8: (">i8", pa.int64()), FLOAT4: (">f4", pa.float32()), FLOAT8: (">f8", pa.float64())}
_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
    _HEX[ord(chr(_c).upper())] = _i


@dataclass(frozen=True)
class PgColumn:
    """A target column: its base type, typmod and (for arrays) element type, as the catalog says."""

    name: str
    oid: int
    typmod: int = -1
    elem: int = 0

    @property
    def supported(self) -> bool:
        return self.elem in SCALARS if self.elem else self.oid in SCALARS


# ---------------------------------------------------------------- Arrow -> PostgreSQL DDL


def ddl_type(kind: pa.DataType) -> str:
    """The PostgreSQL type a new table gets for an Arrow type."""
    t = pa.types
    if t.is_dictionary(kind):
        return ddl_type(kind.value_type)
    if t.is_boolean(kind):
        return "boolean"
    if t.is_int8(kind) or t.is_uint8(kind) or t.is_int16(kind):
        return "smallint"
    if t.is_uint16(kind) or t.is_int32(kind):
        return "integer"
    if t.is_uint32(kind) or t.is_int64(kind):
        return "bigint"
    if t.is_uint64(kind):
        return "numeric(20,0)"
    if t.is_float16(kind) or t.is_float32(kind):
        return "real"
    if t.is_float64(kind):
        return "double precision"
    if t.is_decimal(kind):
        ok = 0 <= kind.scale <= kind.precision <= 1000
        return f"numeric({kind.precision},{kind.scale})" if ok else "numeric"
    if t.is_string(kind) or t.is_large_string(kind) or t.is_string_view(kind) or t.is_null(kind):
        return "text"
    if t.is_binary(kind) or t.is_large_binary(kind) or t.is_fixed_size_binary(kind) or t.is_binary_view(kind):
        return "bytea"
    if t.is_date(kind):
        return "date"
    if t.is_timestamp(kind):
        return "timestamp with time zone" if kind.tz else "timestamp without time zone"
    if t.is_time(kind):
        return "time without time zone"
    if t.is_duration(kind):
        return "interval"
    if t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind) or t.is_list_view(kind):
        inner = kind.value_type
        if not (t.is_nested(inner) or t.is_null(inner)):
            return f"{ddl_type(inner)}[]"
    return "jsonb"  # structs, maps, nested lists


# ---------------------------------------------------------------- values


def _json_text(array: pa.Array) -> pa.Array:
    """Nested values as JSON text, vectorized (polars)."""
    import polars as pl

    series = pl.from_arrow(pa.record_batch({"v": array}))
    encoded = series.select(pl.struct(pl.col("v")).struct.json_encode().str.slice(5).str.head(-1)).to_series()
    text = encoded.to_arrow().cast(pa.string())
    return pc.if_else(array.is_valid(), text, pa.scalar(None, pa.string()))


def _as_text(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_string(kind):
        return array
    if pa.types.is_nested(kind):
        return _json_text(array)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return array.cast(pa.large_binary()).cast(pa.large_string()).cast(pa.string())
    return pc.cast(array, pa.string())


def _decode(array: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        return array.dictionary_decode()
    if pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        return array.cast(pa.string())
    if pa.types.is_large_binary(array.type) or pa.types.is_binary_view(array.type):
        return array.cast(pa.binary())
    return array


def _cast(array: pa.Array, kind: pa.DataType, column: str, *, safe: bool = True) -> pa.Array:
    if array.type == kind:
        return array
    try:
        return pc.cast(array, kind, safe=safe)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UserError(f"destination: column {column!r} ({array.type}) cannot be written as {kind}: {exc}") from None


def _numpy(array: pa.Array, dtype: str) -> np.ndarray:
    """The values (NULLs as 0) as a contiguous numpy array of ``dtype`` (big-endian for the wire)."""
    if array.null_count:
        array = array.fill_null(pa.scalar(0, array.type) if not pa.types.is_boolean(array.type) else False)
    values = array.to_numpy(zero_copy_only=False)
    return values.astype(dtype, copy=False)


def _micros(array: pa.Array, column: str, want: pa.DataType) -> np.ndarray:
    """int64 microseconds of a timestamp/time/duration-like column, cast to ``want`` first."""
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = _cast(array, want, column)
    if pa.types.is_timestamp(array.type) and pa.types.is_timestamp(want) and bool(array.type.tz) != bool(want.tz):
        array = array.cast(pa.timestamp(array.type.unit, tz=want.tz or None))  # same UTC instants
    array = _cast(array, want, column, safe=False)  # PostgreSQL keeps microseconds: nanoseconds are cut
    return _numpy(array.cast(pa.int64()), "<i8")


def _limbs_decimal(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(low uint64, high int64) words of a decimal128 array's unscaled values."""
    words = np.frombuffer(array.buffers()[1], dtype="<u8").reshape(-1, 2)[array.offset : array.offset + len(array)]
    return words[:, 0].copy(), words[:, 1].view(np.int64).copy()


def numeric_values(array: pa.Array) -> np.ndarray:
    """``numeric_send`` of a decimal128 array: one fixed-width (void) value per row.

    Every row gets the same number of base-10000 digits (the server strips leading and trailing
    zero digits itself). Values that fit 64 bits once scaled to a multiple of four decimal places
    take a uint64 path; others are split into 32-bit limbs and divided by 10000 limb-wise (each
    step fits 46 bits).
    """
    precision, scale = array.type.precision, array.type.scale
    fgroups = -(-scale // 4)
    igroups = max(1, -(-(precision - scale) // 4))
    pad = 4 * fgroups - scale
    groups = igroups + fgroups
    low, high = _limbs_decimal(array)
    neg = high < 0
    digits = np.empty((len(array), groups), ">u2")
    base = np.uint64(10_000)
    if precision + pad <= 19:
        rest = np.abs(low.view(np.int64)).astype(np.uint64) * np.uint64(10**pad)
        for g in range(groups - 1, -1, -1):
            rest, digits[:, g] = np.divmod(rest, base)
    else:
        ulow, uhigh = low, high.view(np.uint64)
        nlow = ~ulow + np.uint64(1)
        nhigh = ~uhigh + (nlow == 0).astype(np.uint64)
        ulow, uhigh = np.where(neg, nlow, ulow), np.where(neg, nhigh, uhigh)
        mask = np.uint64(0xFFFFFFFF)
        limbs = [ulow & mask, ulow >> np.uint64(32), uhigh & mask, uhigh >> np.uint64(32), np.zeros_like(ulow)]
        if pad:
            carry = np.zeros_like(ulow)
            factor = np.uint64(10**pad)
            for j in range(5):
                cur = limbs[j] * factor + carry
                limbs[j], carry = cur & mask, cur >> np.uint64(32)
        for g in range(groups - 1, -1, -1):
            rem = np.zeros_like(ulow)
            for j in range(4, -1, -1):
                limbs[j], rem = np.divmod((rem << np.uint64(32)) | limbs[j], base)
            digits[:, g] = rem
    out = np.empty((len(array), 4 + groups), ">u2")
    out[:, 0] = groups
    out[:, 1] = (igroups - 1) & 0xFFFF
    out[:, 2] = np.where(neg, 0x4000, 0)
    out[:, 3] = scale
    out[:, 4:] = digits
    return out.view(f"V{2 * (4 + groups)}").reshape(len(array))


def _to_decimal(array: pa.Array, target: PgColumn) -> pa.Array:
    """The column as decimal128: at its own scale, then rounded like PostgreSQL to a numeric(p, s) target."""
    kind = array.type
    if pa.types.is_decimal128(kind):
        value = array
    elif pa.types.is_decimal256(kind):
        value = _cast(array, pa.decimal128(min(38, kind.precision), min(kind.scale, 38)), target.name)
    elif pa.types.is_integer(kind):
        value = _cast(array, pa.decimal128(20 if pa.types.is_uint64(kind) else 19, 0), target.name)
    else:
        text = _as_text(array)
        fraction = pc.max(pc.utf8_length(pc.extract_regex(text, r"\.(?P<f>\d*)").field("f"))).as_py() or 0
        value = _cast(text, pa.decimal128(38, min(fraction, 38)), target.name)
    if target.typmod >= 4:
        precision, scale = ((target.typmod - 4) >> 16) & 0xFFFF, (target.typmod - 4) & 0xFFFF
        if scale < 0x400:
            if value.type.scale > scale:  # half away from zero, as numeric's own rounding
                value = pc.round(value, ndigits=scale, round_mode="half_towards_infinity")
            value = _cast(value, pa.decimal128(min(38, max(precision, 1)), min(scale, 38)), target.name)
    return value


def _uuid_values(array: pa.Array, column: str) -> np.ndarray:
    """16-byte uuids (void values) from fixed_size_binary(16) or their text form."""
    if pa.types.is_fixed_size_binary(array.type) and array.type.byte_width == 16:
        raw = np.frombuffer(array.buffers()[1], "V16")
        return raw[array.offset : array.offset + len(array)].copy()
    text = pc.replace_substring(_as_text(array).fill_null("0" * 32), "-", "")
    if pc.any(pc.not_equal(pc.binary_length(text), 32)).as_py():
        raise UserError(f"destination: column {column!r} holds values that are not UUIDs")
    start = int(np.frombuffer(text.buffers()[1], np.int32)[text.offset])
    raw = np.frombuffer(text.buffers()[2], np.uint8)[start : start + 32 * len(text)]
    nibbles = _HEX[raw].reshape(-1, 16, 2)
    if (nibbles == 255).any():
        raise UserError(f"destination: column {column!r} holds values that are not UUIDs")
    return np.ascontiguousarray((nibbles[:, :, 0] << 4) | nibbles[:, :, 1], np.uint8).view("V16").reshape(len(text))


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


_INTERVAL = np.dtype([("us", ">i8"), ("days", ">i4"), ("months", ">i4")])
#: the unit words of an interval as PostgreSQL writes it (IntervalStyle ``postgres``, the default), in months / days
_INTERVAL_UNITS = {"year": (12, 0), "years": (12, 0), "mon": (1, 0), "mons": (1, 0), "day": (0, 1), "days": (0, 1)}


def _ints(text: pa.Array) -> np.ndarray:
    """int64 of a column of optional integer texts (an empty or NULL text is 0; a leading + is allowed)."""
    text = pc.utf8_ltrim(text, characters="+")  # PostgreSQL writes "-1 years +3 days"
    text = pc.if_else(pc.equal(pc.utf8_length(text), 0), pa.scalar(None, pa.string()), text)
    return _numpy(pc.cast(text, pa.int64()), "<i8")


def _pairs(text: pa.Array, separator: str) -> tuple[pa.Array, pa.Array]:
    """Each value cut at its first ``separator`` (the second part empty when there is none)."""
    marked = pc.binary_join_element_wise(text, pc.if_else(pc.match_substring(text, separator), "", separator), "")
    flat = pc.split_pattern(marked, separator, max_splits=1).flatten()
    return flat.take(pa.array(np.arange(0, len(flat), 2))), flat.take(pa.array(np.arange(1, len(flat), 2)))


def interval_values(array: pa.Array, column: str) -> np.ndarray:
    """``interval_send`` values (microseconds, days, months): from a duration, an Arrow month_day_nano interval,
    or PostgreSQL's text form (what the Postgres source reads an interval as). Microseconds, days and months stay
    apart, as PostgreSQL keeps them: ``1 mon`` is not ``30 days``.

    The text (``1 year 2 mons -3 days +04:05:06.789``) is split into words once for the whole column: a unit word
    takes the number before it, a word with colons is the time; anything else fails the write naming the value."""
    out = np.zeros(len(array), _INTERVAL)
    kind = array.type
    if pa.types.is_interval(kind):  # month_day_nano: int32 months, int32 days, int64 nanoseconds, little-endian
        parts = np.frombuffer(array.buffers()[1], [("m", "<i4"), ("d", "<i4"), ("ns", "<i8")])
        parts = parts[array.offset : array.offset + len(array)]
        out["months"], out["days"], out["us"] = parts["m"], parts["d"], parts["ns"] // 1000
        return out
    if not _is_text(kind):
        out["us"] = _micros(array, column, pa.duration("us"))
        return out
    text = _decode(array).cast(pa.string()).fill_null("00:00:00")
    words = pc.split_pattern(text, " ")
    flat = words.flatten()
    row = _numpy(pc.list_parent_indices(words), "<i8")
    units = pa.array(list(_INTERVAL_UNITS))
    unit = _numpy(pc.index_in(flat, value_set=units).fill_null(-1), "<i4")
    clock = _numpy(pc.match_substring(flat, ":"), "?")
    is_unit = unit >= 0
    number = np.zeros(len(flat), bool)  # the word before a unit word, in the same value
    number[:-1] = is_unit[1:] & (row[:-1] == row[1:])
    after_number = np.zeros(len(flat), bool)
    after_number[1:] = number[:-1]
    wrong = ~(number | clock | is_unit) | (number & (is_unit | clock)) | (is_unit & ~after_number)
    if wrong.any():
        bad = text[int(row[np.flatnonzero(wrong)[0]])].as_py()
        raise UserError(
            f"destination: column {column!r} holds {bad!r}, not an interval as PostgreSQL writes it "
            "(IntervalStyle postgres)"
        )
    if number.any():
        values = _ints(flat.filter(pa.array(number)))
        which = unit[np.flatnonzero(number) + 1]
        factor = np.array([_INTERVAL_UNITS[u] for u in units.to_pylist()], np.int64)[which]
        rows = row[number]
        out["months"] = np.bincount(rows, weights=values * factor[:, 0], minlength=len(text)).astype(np.int64)
        out["days"] = np.bincount(rows, weights=values * factor[:, 1], minlength=len(text)).astype(np.int64)
    if clock.any():
        times = flat.filter(pa.array(clock))
        negative = _numpy(pc.starts_with(times, "-"), "?")
        hours, rest = _pairs(pc.utf8_ltrim(times, characters="+-"), ":")
        minutes, seconds = _pairs(rest, ":")
        whole, fraction = _pairs(seconds, ".")
        us = _ints(hours) * 3_600_000_000 + _ints(minutes) * 60_000_000 + _ints(whole) * 1_000_000
        us += _ints(pc.utf8_rpad(fraction, width=6, padding="0"))
        out["us"][row[clock]] = np.where(negative, -us, us)
    return out


_NUMERIC_TEXT = r"^[+-]?\d*(\.\d*)?$"
_NUMERIC_SPECIAL = {"NaN": 0xC000, "Infinity": 0xD000, "-Infinity": 0xF000}
#: bytes of padded digits one pass may hold: past it (a few very wide values) the rows are done in slices
_NUMERIC_PASS_BYTES = 128 << 20


def numeric_text_values(array: pa.Array) -> pa.Array | None:
    """``numeric_send`` of numbers in PostgreSQL's text form (``-12.50``, ``NaN``, ``Infinity``): any precision,
    the display scale kept (``12.50`` stays ``12.50``). None when a value is in another form (an exponent): the
    caller then goes through decimal128.

    Why text: an unconstrained ``numeric`` or a ``numeric(p, s)`` wider than 38 digits has no Arrow decimal128, so
    the Postgres source reads it as its text. Every value is padded to the widest one's base-10000 digit groups
    (the server strips leading and trailing zero groups), so the digits are one reshape of the text bytes.
    """
    text = _decode(array).cast(pa.string())
    special = pc.is_in(text, value_set=pa.array(list(_NUMERIC_SPECIAL)))
    plain = pc.if_else(special, pa.scalar("0"), text).fill_null("0")
    if not pc.all(pc.match_substring_regex(plain, _NUMERIC_TEXT)).as_py():
        return None
    n = len(plain)
    negative = _numpy(pc.starts_with(plain, "-"), "?")
    integer, fraction = _pairs(pc.utf8_ltrim(plain, characters="+-"), ".")
    iwidth = max(4, -(-(pc.max(pc.utf8_length(integer)).as_py() or 0) // 4) * 4)
    fwidth = -(-(pc.max(pc.utf8_length(fraction)).as_py() or 0) // 4) * 4
    if n > 1 and n * (iwidth + fwidth) > _NUMERIC_PASS_BYTES:  # a few very wide values: slices of their own widths
        half = n // 2
        return pa.concat_arrays([numeric_text_values(array.slice(0, half)), numeric_text_values(array.slice(half))])
    groups = (iwidth + fwidth) // 4
    padded = pc.binary_join_element_wise(
        pc.utf8_lpad(integer, width=iwidth, padding="0"), pc.utf8_rpad(fraction, width=fwidth, padding="0"), ""
    )
    first = int(np.frombuffer(padded.buffers()[1], np.int32)[padded.offset])
    raw = np.frombuffer(padded.buffers()[2], np.uint8)[first : first + n * 4 * groups]
    value = np.empty((n, 4 + groups), ">u2")
    value[:, 0], value[:, 1] = groups, iwidth // 4 - 1
    value[:, 2] = np.where(negative, 0x4000, 0)
    if pc.any(special).as_py():
        code = _numpy(pc.index_in(text, value_set=pa.array(list(_NUMERIC_SPECIAL))).fill_null(-1), "<i4")
        value[:, 2] = np.where(code >= 0, np.array([*_NUMERIC_SPECIAL.values(), 0], np.uint16)[code], value[:, 2])
    value[:, 3] = _numpy(pc.utf8_length(fraction), "<i4")
    value[:, 4:] = (raw.reshape(n, groups, 4).astype(np.uint16) - 48) @ np.array([1000, 100, 10, 1], np.uint16)
    width = 2 * (4 + groups)
    offsets = pa.py_buffer(np.arange(0, width * (n + 1), width, dtype=np.int32))
    values = pa.Array.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(value.view(np.uint8))])
    if text.null_count:
        values = pc.if_else(text.is_valid(), values, pa.scalar(None, pa.binary()))
    return values


# ---------------------------------------------------------------- fields


@dataclass
class Field:
    """One column's wire form: fixed-width values, or per-row lengths plus an Arrow binary of values."""

    fixed: np.ndarray | None = None  # 1-D, one big-endian (or void) value per row; no NULLs
    lengths: np.ndarray | None = None  # int32, -1 = NULL
    values: pa.Array | None = None  # binary, NULL where lengths == -1


def _fixed_or_nullable(fixed: np.ndarray, valid: pa.Array | None) -> Field:
    """Fixed-width values; with NULLs they become variable (a NULL field has no value bytes)."""
    if valid is None:
        return Field(fixed=fixed)
    n, width = len(fixed), fixed.dtype.itemsize
    mask = valid.to_numpy(zero_copy_only=False)
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    validity = pa.py_buffer(np.packbits(mask, bitorder="little"))
    data = pa.py_buffer(np.ascontiguousarray(fixed))
    values = pa.Array.from_buffers(pa.binary(), n, [validity, pa.py_buffer(offsets), data])
    return Field(lengths=np.where(mask, width, -1).astype(np.int32), values=values)


def _binary_field(values: pa.Array) -> Field:
    """Variable-width values (string or binary Arrow array) with their per-row lengths."""
    values = values.cast(pa.binary()) if not pa.types.is_binary(values.type) else values
    lengths = _numpy(pc.binary_length(values), "<i4")
    if values.null_count:
        lengths = np.where(values.is_valid().to_numpy(zero_copy_only=False), lengths, -1).astype(np.int32)
    return Field(lengths=lengths, values=values)


def encode_field(array: pa.Array, target: PgColumn) -> Field:
    array = _decode(array)
    valid = array.is_valid() if array.null_count else None
    oid, name = target.oid, target.name
    if target.elem:
        return _array_field(array, target)
    if oid in _FIXED_NUMPY:
        dtype, kind = _FIXED_NUMPY[oid]
        return _fixed_or_nullable(_numpy(_cast(array, kind, name), dtype), valid)
    if oid == DATE:
        days = _numpy(_cast(array, pa.date32(), name).cast(pa.int32()), "<i4") - PG_EPOCH_DAYS
        return _fixed_or_nullable(days.astype(">i4"), valid)
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        want = pa.timestamp("us", tz="UTC" if oid == TIMESTAMPTZ else None)
        micros = _micros(array, name, want) - PG_EPOCH_US
        return _fixed_or_nullable(micros.astype(">i8"), valid)
    if oid == TIME:
        return _fixed_or_nullable(_micros(array, name, pa.time64("us")).astype(">i8"), valid)
    if oid == INTERVAL:
        return _fixed_or_nullable(interval_values(array, name), valid)
    if oid == NUMERIC:
        if _is_text(array.type):
            text = numeric_text_values(array)
            if text is not None:  # PostgreSQL's own text form, any precision, NaN and infinities
                return _binary_field(text)
        return _fixed_or_nullable(numeric_values(_to_decimal(array, target)), valid)
    if oid == UUID:
        return _fixed_or_nullable(_uuid_values(array, name), valid)
    if oid == BYTEA:
        return _binary_field(array if not pa.types.is_string(array.type) else array.cast(pa.binary()))
    if oid == JSONB:
        text = _as_text(array).cast(pa.binary())
        versioned = pc.binary_join_element_wise(b"\x01", text, b"")  # jsonb's binary format: version 1, text
        return _binary_field(versioned)
    if oid in TEXT_LIKE:
        return _binary_field(_as_text(array))
    raise UserError(f"destination: column {name!r} has a type (oid {oid}) the binary encoder does not write")


def _array_field(array: pa.Array, target: PgColumn) -> Field:
    """A one-dimensional ``elem[]``: header (ndim 1, flags, element oid, length, lower bound 1), elements."""
    kind = array.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise UserError(f"destination: column {target.name!r} is an array column; the batch has {kind}")
    if pa.types.is_fixed_size_list(kind):
        array = array.cast(pa.list_(kind.value_type))
    n = len(array)
    lengths = _numpy(pc.list_value_length(array), "<i4")
    flat = array.flatten()
    elements = pa.array([], pa.binary())
    if len(flat):
        elements = join_fields([encode_field(flat, PgColumn(target.name, target.elem, target.typmod))], len(flat))
    starts = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=starts[1:])
    lists = pa.ListArray.from_arrays(pa.array(starts), elements)
    blob = pc.binary_join(lists, b"")
    header = np.empty((n, 5), ">i4")
    header[:, 0], header[:, 1], header[:, 2], header[:, 3], header[:, 4] = 1, 0, target.elem, lengths, 1
    head = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(np.arange(0, 20 * (n + 1), 20, dtype=np.int32)), pa.py_buffer(header)]
    )
    values = pc.binary_join_element_wise(head, blob, b"")
    if array.null_count:
        values = pc.if_else(array.is_valid(), values, pa.scalar(None, pa.binary()))
    return _binary_field(values)


# ---------------------------------------------------------------- rows


def _run_array(parts: list[tuple[str, np.ndarray]], n: int) -> pa.Array:
    """Consecutive fixed-width fields laid out row by row (a packed numpy record), as one binary array."""
    layout = np.dtype([(f"f{i}", values.dtype) for i, (_, values) in enumerate(parts)])
    rows = np.empty(n, layout)
    for i, (_, values) in enumerate(parts):
        rows[f"f{i}"] = values
    width = layout.itemsize
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(rows.view(np.uint8))])


def join_fields(fields: list[Field], n: int, head: bytes = b"", tail: bytes = b"") -> pa.Array:
    """Every row's fields back to back (length prefix + value), ``head``/``tail`` bytes around each row."""
    pieces: list[pa.Array] = []
    run: list[tuple[str, np.ndarray]] = [("head", np.frombuffer(head, f"V{len(head)}"))] if head else []
    for field in fields:
        if field.fixed is not None:
            run.append(("length", np.array(field.fixed.dtype.itemsize, ">i4")))
            run.append(("value", field.fixed))
        else:
            assert field.lengths is not None and field.values is not None
            run.append(("length", field.lengths.astype(">i4")))
            pieces.append(_run_array(run, n))
            run = []
            pieces.append(field.values)
    if tail:
        run.append(("tail", np.frombuffer(tail, f"V{len(tail)}")))
    if run:
        pieces.append(_run_array(run, n))
    if len(pieces) == 1:
        return pieces[0]
    return pc.binary_join_element_wise(*pieces, b"", null_handling="replace", null_replacement=b"")


class Encoder:
    """Encodes batches for ``COPY table (columns..., extra int8 column) FROM STDIN (FORMAT binary)``."""

    def __init__(self, columns: list[PgColumn]) -> None:
        self.columns = columns
        self.head = np.array([len(columns) + 1], ">i2").tobytes()

    def encode(self, batch: pa.RecordBatch, extra: int) -> pa.Buffer:
        """The rows of ``batch`` (columns in ``self.columns`` order), each ending with int8 ``extra``."""
        n = batch.num_rows
        fields = [encode_field(batch.column(i), col) for i, col in enumerate(self.columns)]
        tail = np.array([8], ">i4").tobytes() + np.array([extra], ">i8").tobytes()
        rows = join_fields(fields, n, head=self.head, tail=tail)
        offsets = rows.buffers()[1]
        first, last = np.frombuffer(offsets, np.int32)[[rows.offset, rows.offset + n]]
        return rows.buffers()[2].slice(int(first), int(last - first))
