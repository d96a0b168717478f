"""JSON text of Arrow columns, built column-wise: bizon's NDJSON without a per-row encoder.

A bizon line holds the record as a JSON *string* (``"source_data":"{\\"id\\":1,...}"``), so a generic
writer encodes every row twice and formats every timestamp per row. Here a row's JSON is one Arrow
``binary_join_element_wise`` of per-column pieces, built already escaped for its place inside a string when
needed (it was a polars ``concat_str``: the join costs ~1.5x less and its ``large_string`` goes to a file as
is); timestamps are formatted with lookup tables in numpy (~8x faster than polars' chrono formatting).
Integers and strings that need no escaping stay in Arrow; floats keep polars' rendering, and columns of
types without a fast path (dates, decimals, lists, structs, strings that need escaping) go through polars'
JSON encoder, column by column; binary values are written as base64 text.

Timestamps inside records always carry six fractional digits (``...T00:00:00.000000+00:00``),
which every ISO-8601 parser reads; envelope timestamps follow bizon (``isoformat()``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeAlias

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # polars is imported where a piece needs it: a json consumer of plain text never loads it
    import polars as pl

_DAY_US = 86_400_000_000
_tables: dict[str, np.ndarray] = {}


# ---------------------------------------------------------------- timestamps


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """ASCII digits of non-negative ints, ``(len, width)`` uint8 (for building tables only)."""
    out = np.empty((values.shape[0], width), np.uint8)
    rest = values.astype(np.int64)
    for k in range(width - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        out[:, k] = digit + 48
    return out


def _words(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows).view("<u8").reshape(-1)


def _time_tables() -> dict[str, np.ndarray]:
    """Per second of day and per fraction: the bytes they occupy in a 32-byte ISO timestamp, as uint64 words.

    Layout (bytes): ``YYYY-MM-`` | ``DDTHH:MM`` | ``:SS.ffff`` | ``ff+00:00``.
    """
    if not _tables:
        sod = np.arange(86_400)
        hh_mm = np.zeros((86_400, 8), np.uint8)
        hh_mm[:, 3:5] = _digits(sod // 3600, 2)
        hh_mm[:, 5] = ord(":")
        hh_mm[:, 6:8] = _digits(sod // 60 % 60, 2)
        ss = np.zeros((86_400, 8), np.uint8)
        ss[:, 0] = ord(":")
        ss[:, 1:3] = _digits(sod % 60, 2)
        ss[:, 3] = ord(".")
        frac4 = np.zeros((10_000, 8), np.uint8)
        frac4[:, 4:8] = _digits(np.arange(10_000), 4)
        frac2 = np.zeros((100, 8), np.uint8)
        frac2[:, 0:2] = _digits(np.arange(100), 2)
        frac2[:, 2:8] = np.frombuffer(b"+00:00", np.uint8)
        _tables.update(hh_mm=_words(hh_mm), ss=_words(ss), frac4=_words(frac4), frac2=_words(frac2))
    return _tables


def _date_words(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``YYYY-MM-`` and ``DDT`` words of days since the epoch (Hinnant's civil_from_days, vectorized)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + np.where(mp < 10, 3, -9)
    year = yoe + era * 400 + (month <= 2)
    text = np.zeros((days.shape[0], 16), np.uint8)
    text[:, 0:4] = _digits(year, 4)
    text[:, 4] = text[:, 7] = ord("-")
    text[:, 5:7] = _digits(month, 2)
    text[:, 8:10] = _digits(day, 2)
    text[:, 10] = ord("T")
    words = text.view("<u8")
    return words[:, 0].copy(), words[:, 1].copy()


def iso_timestamps(micros: np.ndarray, *, utc: bool = True) -> pa.Array:
    """``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (no offset when ``utc`` is False) per int64 epoch microsecond.

    Years 1..9999. Dates are computed once per distinct day of the batch, times come from tables.
    """
    n = micros.shape[0]
    tables = _time_tables()
    days, rest = np.divmod(micros, _DAY_US)
    seconds, frac = np.divmod(rest, 1_000_000)
    frac_hi, frac_lo = np.divmod(frac, 100)
    out = np.empty((n, 4), "<u8")
    if n:
        first = int(days.min())
        span = int(days.max()) - first + 1
        if span <= n:
            head, tail = _date_words(np.arange(first, first + span, dtype=np.int64))
            np.take(head, days - first, out=out[:, 0])
            out[:, 1] = tail[days - first]
        else:
            out[:, 0], out[:, 1] = _date_words(days)
        out[:, 1] |= tables["hh_mm"][seconds]
        out[:, 2] = tables["ss"][seconds] | tables["frac4"][frac_hi]
        out[:, 3] = tables["frac2"][frac_lo]
    width = 32 if utc else 26
    text = out.view(np.uint8).reshape(n, 32)
    if not utc:
        text = np.ascontiguousarray(text[:, :26])
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


#: epoch microseconds of 0001-01-01 and of 10000-01-01: the years ``iso_timestamps`` writes
_FIRST_US = -62_135_596_800_000_000
_END_US = 253_402_300_800_000_000


def autosi_timestamps(micros: np.ndarray) -> pa.Array | None:
    """Polars' (chrono's) JSON rendering of UTC timestamps, byte for byte: the fraction is left out when it is
    zero, written as milliseconds when that is exact, else as microseconds (``...05+00:00``, ``...05.100+00:00``,
    ``...05.123456+00:00``). None outside years 1..9999 (the caller then asks polars).

    bizon's source-records envelope went through polars' ``write_ndjson``; this keeps its bytes without it.
    """
    n = micros.shape[0]
    if n and (int(micros.min()) < _FIRST_US or int(micros.max()) >= _END_US):
        return None
    full = iso_timestamps(micros)
    frac = micros % 1_000_000
    widths = np.where(frac == 0, 25, np.where(frac % 1000 == 0, 29, 32))
    first = int(widths[0]) if n else 32
    if n and (widths == first).all() and first == 32:
        return full
    text = np.frombuffer(full.buffers()[2], np.uint8).reshape(n, 32)
    keep = np.ones((n, 32), bool)
    keep[:, 19:26] = (widths == 32)[:, None]  # ".ffffff" only when it is microseconds ...
    keep[:, 19:23] |= (widths == 29)[:, None]  # ... ".fff" when it is milliseconds
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(widths, out=offsets[1:])
    return pa.Array.from_buffers(LARGE_STRING, n, [None, pa.py_buffer(offsets), pa.py_buffer(text[keep])])


def autosi_format(at: datetime) -> str:
    """``autosi_timestamps`` of one aware datetime (in Python: a batch's constant costs no numpy round trip)."""
    at = at.astimezone(UTC)
    us = at.microsecond
    fraction = "" if not us else f".{us // 1000:03d}" if not us % 1000 else f".{us:06d}"
    return f"{at.replace(microsecond=0, tzinfo=None).isoformat()}{fraction}+00:00"


def isoformat(at: datetime) -> str:
    """bizon's (orjson's) rendering of an aware datetime: UTC, ``+00:00``, fraction only when non-zero."""
    return at.astimezone(UTC).isoformat()


# ---------------------------------------------------------------- JSON text of values


def json_string(text: str) -> str:
    return msgspec.json.encode(text).decode()


def escape(text: str) -> str:
    """Escape JSON text for its place inside a JSON string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def plain_strings(array: pa.Array) -> bool:
    """True when no value of a string array needs JSON escaping (checked on the raw bytes)."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return False
    offsets_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets_buf, data_buf = array.buffers()
    if data_buf is None:
        return True
    offsets = np.frombuffer(offsets_buf, offsets_type)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buf, np.uint8)[int(offsets[0]) : int(offsets[-1])]
    # control characters, quote, backslash: three SIMD passes beat one table lookup per byte
    return not data.size or not (data.min() < 0x20 or (data == 0x22).any() or (data == 0x5C).any())


#: control characters with a two-character JSON escape that JSON text often holds raw (pretty-printed documents)
_SHORT_ESCAPES = ((0x0A, "\\n"), (0x0D, "\\r"), (0x09, "\\t"))


def escaped(array: pa.Array) -> pa.Array:
    """Each string as it sits between the quotes of a JSON string, as msgspec and polars escape it.

    Vectorized: a scan of the raw bytes finds which escapes occur at all, and only those run, each as one Arrow
    ``replace_substring`` over the array (a plain id column comes back as is). Rows holding a control character
    other than newline, return and tab (``\\u00XX`` escapes) are few; msgspec escapes just those rows.
    """
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise TypeError(f"escaped() takes strings, not {array.type}")
    offsets_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets_buf, data_buf = array.buffers()
    if data_buf is None:
        return array
    offsets = np.frombuffer(offsets_buf, offsets_type)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buf, np.uint8)[int(offsets[0]) : int(offsets[-1])]
    if not data.size:
        return array
    out = array
    for byte, replacement in ((0x5C, "\\\\"), (0x22, '\\"')):  # backslash first: the others add backslashes
        if (data == byte).any():
            out = pc.replace_substring(out, chr(byte), replacement)
    if data.min() >= 0x20:
        return out
    control = data < 0x20
    for byte, replacement in _SHORT_ESCAPES:
        hits = data == byte
        if hits.any():
            out = pc.replace_substring(out, chr(byte), replacement)
            control &= ~hits
    if control.any():
        positions = np.flatnonzero(control) + int(offsets[0])
        rows = np.unique(np.searchsorted(offsets, positions, side="right") - 1)
        mask = np.zeros(len(array), bool)
        mask[rows] = True
        texts = [msgspec.json.encode(v)[1:-1].decode() for v in array.take(pa.array(rows)).to_pylist()]
        out = pc.replace_with_mask(out, pa.array(mask), pa.array(texts, out.type))
    return out


#: a piece of a row's JSON text: literal text, a polars expression over the batch, or an Arrow array of text
Piece: TypeAlias = "str | pl.Expr | pa.Array"
LARGE_STRING = pa.large_string()
_ARROW = (pa.Array, pa.ChunkedArray)


def _is_expr(piece: Piece) -> bool:
    """A polars expression (told apart without importing polars: pieces are text, Arrow, or expressions)."""
    return not isinstance(piece, str | pa.Array | pa.ChunkedArray)


def _encoded(name: str) -> pl.Expr:
    """The JSON text of column ``name``'s values, from polars' encoder (the general, slower path)."""
    import polars as pl

    return pl.struct(pl.col(name).alias("v")).struct.json_encode().str.slice(5).str.head(-1)


def value_pieces(name: str, array: pa.Array, nested: bool, int_text: pa.Array | None = None) -> list[Piece]:
    """Pieces of the JSON text of each value; ``nested`` escapes it for its place inside a JSON string.

    Pieces rather than one expression: literals merge with their neighbours and no intermediate
    string column is built, unless nulls force one. Integers, booleans and strings that need no
    escaping stay in Arrow (its casts write the same digits as polars'); floats keep polars' rendering
    (``5.0``, ``1e-7``), and the other types its JSON encoder.
    """
    import polars as pl

    kind = array.type
    quote = '\\"' if nested else '"'
    col = pl.col(name)
    pieces: list[Piece]
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):  # ``int_text``: this cast, already made
        pieces = [int_text if int_text is not None else pc.cast(array, LARGE_STRING)]
    elif pa.types.is_floating(kind):
        float_text = col.cast(pl.String)
        if pc.all(pc.is_finite(array)).as_py() is False:  # NaN and infinities are not JSON: null, like orjson
            float_text = pl.when(col.is_finite()).then(float_text).otherwise(pl.lit("null"))
        pieces = [float_text]
    elif plain_strings(array):  # timestamps arrive here as ISO text
        pieces = [quote, array, quote]
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        pieces = [quote, col.bin.encode("base64"), quote]  # JSON has no bytes; polars' encoder cannot write them
    else:
        expr = _encoded(name)
        if nested:
            expr = expr.str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
        return [expr]  # polars' encoder already writes nulls as null
    if not array.null_count:
        return pieces
    return [or_null(pieces, col)]


def or_null(pieces: list[Piece], col: pl.Expr) -> Piece:
    """The pieces' text, or ``null`` where ``col`` is null: in Arrow when they are all Arrow, else in polars."""
    if any(_is_expr(p) for p in pieces):
        import polars as pl

        exprs = [pl.lit(p) if isinstance(p, str) else p for p in pieces]
        return pl.when(col.is_null()).then(pl.lit("null")).otherwise(pl.concat_str(exprs))  # type: ignore[arg-type]
    return pc.fill_null(join(pieces), "null")  # a join of a null value is null


def timestamps_as_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Timestamp columns replaced by their ISO text (formatted in numpy), other columns untouched."""
    columns = []
    for field, array in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            micros = pc.fill_null(array.cast(pa.timestamp("us", field.type.tz), safe=False), 0)
            values = micros.cast(pa.int64()).to_numpy(zero_copy_only=False)
            text = iso_timestamps(values, utc=field.type.tz is not None)
            array = pc.if_else(pc.is_valid(array), text, pa.scalar(None, pa.string())) if array.null_count else text
        columns.append(array)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def join(pieces: list[Piece]) -> pa.Array:
    """The pieces concatenated row by row (Arrow's ``binary_join_element_wise``), adjacent literals merged.

    Polars expressions must have been evaluated (``evaluate``). One Arrow join beats polars' ``concat_str``
    by ~1.5x here, and it writes a ``large_string`` that goes to a file as is (polars' string views would be
    converted first).
    """
    args: list[pa.Array | pa.Scalar] = []
    text = ""
    for piece in pieces:
        if isinstance(piece, str):
            text += piece
            continue
        if text:
            args.append(pa.scalar(text, LARGE_STRING))
            text = ""
        assert isinstance(piece, _ARROW), "evaluate() the polars pieces first"
        args.append(piece if piece.type == LARGE_STRING else piece.cast(LARGE_STRING))
    if text:
        args.append(pa.scalar(text, LARGE_STRING))
    return pc.binary_join_element_wise(*args, pa.scalar("", LARGE_STRING))


def evaluate(pieces: list[Piece], batch: pa.RecordBatch) -> list[str | pa.Array]:
    """The pieces with their polars expressions computed over ``batch``, in one ``select`` of only the
    columns they use (Arrow pieces and literals are kept as they are)."""
    exprs = {i: p for i, p in enumerate(pieces) if _is_expr(p)}
    if not exprs:
        return pieces  # type: ignore[return-value]
    import polars as pl

    used = sorted({name for e in exprs.values() for name in e.meta.root_names()})
    frame: pl.DataFrame = pl.from_arrow(batch.select(used))  # type: ignore[assignment]
    done = frame.select(e.alias(f"p{i}") for i, e in exprs.items())
    return [done.get_column(f"p{i}").to_arrow() if i in exprs else p for i, p in enumerate(pieces)]  # type: ignore[misc]


def object_pieces(
    text_batch: pa.RecordBatch, *, nested: bool, int_texts: dict[str, pa.Array] | None = None
) -> list[Piece]:
    """Pieces of each row's JSON object; ``text_batch`` went through ``timestamps_as_text``. ``int_texts``: the
    text of integer columns the caller already cast (the envelope's record id is the ``id`` column's text)."""
    pieces: list[Piece] = ["{"]
    known = int_texts or {}
    for i, (name, array) in enumerate(zip(text_batch.schema.names, text_batch.columns, strict=True)):
        key = escape(json_string(name)) if nested else json_string(name)
        pieces += [("," if i else "") + key + ":", *value_pieces(name, array, nested, known.get(name))]
    pieces.append("}")
    return pieces


def row_json(batch: pa.RecordBatch) -> pa.Array:
    """Each row of a typed batch as compact JSON text, one ``large_string`` per row."""
    if batch.num_columns == 0:
        return pa.array(["{}"] * batch.num_rows, LARGE_STRING)
    text_batch = timestamps_as_text(batch.replace_schema_metadata(None))
    return join(evaluate(object_pieces(text_batch, nested=False), text_batch))


def text_bytes(lines: pa.Array) -> memoryview:
    """The concatenated values of a string array, straight from its data buffer (no copy)."""
    if not (pa.types.is_string(lines.type) or pa.types.is_large_string(lines.type)):
        lines = lines.cast(pa.large_string())
    offsets_type = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    _, offsets_buf, data_buf = lines.buffers()
    if data_buf is None or len(lines) == 0:
        return memoryview(b"")
    offsets = np.frombuffer(offsets_buf, offsets_type)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    return memoryview(data_buf)[start:end]
