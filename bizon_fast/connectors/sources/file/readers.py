"""Readers: a file (or a part of it) into Arrow batches, each with the position after it.

A position is ``[where, rows]``: for Parquet the row group and the rows of it already read, for CSV and
NDJSON the byte offset of a chunk's first line and the rows of that chunk already read. Resuming re-opens
``where`` and drops ``rows`` rows, so a position taken after any batch resumes exactly.

Parsing is pyarrow's (Parquet: ``ParquetFile.iter_batches`` per row group; CSV: ``read_csv`` over a chunk of
whole lines with the file's column names and the stream's types; NDJSON: ``read_json`` with the stream's
schema). A chunk that does not parse is cut in two at a line break and each half parsed again, down to the
offending line: its byte offset is named in the error, or (``on_bad_rows: skip``) the line is dropped and
counted. CSV rows with a wrong number of fields are found by pyarrow's ``invalid_row_handler``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from bizon_fast.connectors.sources.file import lines
from bizon_fast.connectors.sources.file.schemas import ARROW_DATA_ERRORS, conform
from bizon_fast.errors import UserError

log = logging.getLogger("bizon_fast.source.file")

#: bytes of NDJSON parsed per thread
JSON_BLOCK = 1 << 20
#: bad lines logged one by one per split before only their count is
LOGGED_BAD_LINES = 5


def past_skip(batch: pa.RecordBatch, skip: int) -> tuple[pa.RecordBatch | None, int]:
    """What is left of ``batch`` once ``skip`` rows a resumed cursor already covers are dropped (None when the
    whole batch was covered), and how many rows are still to skip after it."""
    if not skip:
        return batch, 0
    if batch.num_rows <= skip:
        return None, skip - batch.num_rows
    return batch.slice(skip), 0


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------ Parquet


def read_parquet(
    f: pa.NativeFile, uri: str, schema: pa.Schema, groups: tuple[int, int], position: Any, chunk_bytes: int
) -> Iterator[tuple[pa.RecordBatch, list[int]]]:
    """Row groups ``[first, stop)`` of a Parquet file, from ``position`` ``[row group, rows read of it]``."""
    first, stop = groups
    group, skip = (first, 0) if position is None else (int(position[0]), int(position[1]))
    try:
        pf = pq.ParquetFile(f, pre_buffer=True)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"source: {uri}: not a readable Parquet file: {one_line(exc)}") from None
    meta = pf.metadata
    for index in range(group, stop):
        rg = meta.row_group(index)
        width = max(1, rg.total_byte_size // max(1, rg.num_rows))
        batch_rows = max(1_024, min(rg.num_rows or 1, chunk_bytes // width))
        done = 0
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[index]):
                done += batch.num_rows
                batch, skip = past_skip(batch, skip)
                if batch is None:
                    continue
                at = [index + 1, 0] if done >= rg.num_rows else [index, done]
                yield conform(batch, schema, uri), at
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"source: {uri}: row group {index}: {one_line(exc)}") from None
        skip = 0


# ------------------------------------------------------------------ CSV and NDJSON


@dataclass
class BadLines:
    """What ``on_bad_rows`` does with a line that does not parse, and how many were skipped."""

    uri: str
    skip: bool
    count: int = 0
    first: list[str] = field(default_factory=list)

    def found(self, offset: int, text: str, reason: str) -> None:
        at = f"byte offset {offset}: " if offset >= 0 else ""
        where = f"source: {self.uri}: {at}{reason} (line: {text[:120]!r})"
        if not self.skip:
            raise UserError(where)
        self.count += 1
        if self.count <= LOGGED_BAD_LINES:
            log.warning("skipped a bad line: %s", where)

    def summary(self) -> None:
        if self.count > LOGGED_BAD_LINES:
            log.warning("source: %s: skipped %d bad lines (on_bad_rows: skip)", self.uri, self.count)


class TextFormat:
    """Parses chunks of one CSV or NDJSON file into tables of the stream's schema."""

    def __init__(self, fmt: str, config: Any, columns: list[str] | None, schema: pa.Schema, bad: BadLines) -> None:
        self.fmt = fmt
        self.schema = schema
        self.bad = bad
        self.invalid: list[Any] = []
        if fmt == "csv":
            csv = config.csv
            names = columns or []
            self.read_options = dict(column_names=names, encoding=csv.encoding)
            self.header_rows = 1 if csv.header else 0
            self.parse_options = pcsv.ParseOptions(
                delimiter=csv.delimiter,
                quote_char=csv.quote_char,
                escape_char=csv.escape_char,
                double_quote=csv.double_quote,
                newlines_in_values=csv.newlines_in_values,
                invalid_row_handler=self._invalid_row,
            )
            types = {n: schema.field(n).type for n in names if n in schema.names}
            convert: dict[str, Any] = dict(column_types=types)
            if csv.null_values is not None:
                convert.update(null_values=csv.null_values, strings_can_be_null=True)
            self.convert_options = pcsv.ConvertOptions(**convert)
        else:
            self.json_parse = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")

    def _invalid_row(self, row: Any) -> str:
        self.invalid.append(row)
        return "skip"

    def parse(self, buf: pa.Buffer, offset: int) -> pa.Table:
        if self.fmt == "csv":
            options = pcsv.ReadOptions(skip_rows=self.header_rows if offset == 0 else 0, **self.read_options)
            return pcsv.read_csv(
                pa.BufferReader(buf),
                read_options=options,
                parse_options=self.parse_options,
                convert_options=self.convert_options,
            )
        try:  # blocks of 1 MiB are parsed on threads (about twice as fast as one block)
            options = pjson.ReadOptions(block_size=JSON_BLOCK)
            return pjson.read_json(pa.BufferReader(buf), read_options=options, parse_options=self.json_parse)
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or len(buf) < JSON_BLOCK:
                raise
        options = pjson.ReadOptions(block_size=len(buf) + 1)  # a line longer than a block: the chunk as one
        return pjson.read_json(pa.BufferReader(buf), read_options=options, parse_options=self.json_parse)

    def tables(self, buf: pa.Buffer, offset: int) -> Iterator[tuple[pa.Table, int]]:
        """The rows of a chunk as (table, end offset) pieces: one, or more where bad lines were cut out."""
        self.invalid.clear()
        try:
            table = self.parse(buf, offset)
        except ARROW_DATA_ERRORS as exc:
            halves = lines.split_lines(buf)
            if halves is None:  # one line: the culprit
                self.bad.found(offset, _text(buf), _reason(exc))
                return
            yield from self.tables(halves[0], offset)
            yield from self.tables(halves[1], offset + len(halves[0]))
            return
        if self.invalid:
            data = buf.to_pybytes()
            for row in list(self.invalid):
                found = data.find(row.text.encode(errors="replace")) if row.text else -1
                at = offset + found if found >= 0 else offset
                reason = f"expected {row.expected_columns} fields, got {row.actual_columns}"
                self.bad.found(at, row.text or "", reason)
        yield table, offset + len(buf)


def parseable(buf: pa.Buffer, parse: Callable[[pa.Buffer], Any]) -> pa.Buffer:
    """The lines of ``buf`` that ``parse`` accepts together, earliest first (bad lines, and lines whose types
    contradict earlier ones, dropped by bisection), for inferring types from a sample: such a line is the
    reader's to report with its offset, not planning's."""
    kept = b""

    def fits(piece: bytes) -> bool:
        try:
            parse(pa.py_buffer(kept + piece))
            return True
        except ARROW_DATA_ERRORS:
            return False

    pending = [buf]
    while pending:
        piece = pending.pop()
        data = piece.to_pybytes()
        if fits(data):
            kept += data
            continue
        halves = lines.split_lines(piece)
        if halves is not None:
            pending.extend(reversed(halves))  # the earlier half first
    return pa.py_buffer(kept)


def _text(buf: pa.Buffer) -> str:
    return buf.to_pybytes()[:240].decode(errors="replace").rstrip("\r\n")


def _reason(exc: BaseException) -> str:
    text = one_line(exc)
    for prefix in ("CSV parse error: ", "JSON parse error: "):
        text = text.replace(prefix, "")
    text = re.sub(r"\.? in row 0$", "", text)  # the row of a one-line chunk: the offset says where
    if "unexpected field" in text.lower():
        text += " (a field the schema, inferred from the files' first lines, lacks: declare it in source.column_types)"
    return text


def read_text(
    chunks: Iterator[tuple[pa.Buffer, int]], fmt: TextFormat, uri: str, position: Any
) -> Iterator[tuple[pa.RecordBatch, list[int]]]:
    """Batches of the chunks' rows, from ``position`` ``[chunk offset, rows of it already read]``."""
    skip = 0 if position is None else int(position[1])
    try:
        for buf, offset in chunks:
            for table, end in fmt.tables(buf, offset):
                batches = table.to_batches()
                done = 0
                for i, batch in enumerate(batches):
                    done += batch.num_rows
                    batch, skip = past_skip(batch, skip)
                    if batch is None:
                        continue
                    at = [end, 0] if i == len(batches) - 1 else [offset, done]
                    yield conform(batch, fmt.schema, uri), at
                skip = 0
                offset = end
    except OSError as exc:
        raise UserError(f"source: {uri}: cannot read: {one_line(exc)}") from None
    fmt.bad.summary()


def read_csv_whole(
    stream: pa.NativeFile, fmt: TextFormat, uri: str, position: Any, chunk_bytes: int
) -> Iterator[tuple[pa.RecordBatch, list[int]]]:
    """A CSV whose quoted values may hold line breaks: no line break is a safe cut, so the file is read in one
    pass by pyarrow's streaming reader; the position is ``[0, rows read]`` and a resume re-reads and drops them."""
    skip = 0 if position is None else int(position[1])
    options = pcsv.ReadOptions(skip_rows=fmt.header_rows, block_size=chunk_bytes, **fmt.read_options)
    done = 0
    try:
        reader = pcsv.open_csv(
            stream, read_options=options, parse_options=fmt.parse_options, convert_options=fmt.convert_options
        )
        for batch in reader:
            done += batch.num_rows
            for row in fmt.invalid:
                fmt.bad.found(
                    -1,
                    row.text or "",
                    f"row {row.number}: expected {row.expected_columns} fields, got {row.actual_columns}",
                )
            fmt.invalid.clear()
            batch, skip = past_skip(batch, skip)
            if batch is None:
                continue
            yield conform(batch, fmt.schema, uri), [0, done]
    except ARROW_DATA_ERRORS as exc:
        raise UserError(f"source: {uri}: after row {done}: {_reason(exc)}") from None
    except OSError as exc:
        raise UserError(f"source: {uri}: cannot read: {one_line(exc)}") from None
    fmt.bad.summary()
