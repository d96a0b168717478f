"""The ``file`` source: Parquet, CSV and NDJSON files, local or in S3 / GCS, read as parallel splits.

Planning (the supervisor, once): list the files ``source.path`` names; read each one's schema (a Parquet
footer; the first MiB of a CSV or NDJSON file, types inferred by pyarrow) on a thread pool; unify them
into the stream's schema (``schemas.py``); cut the work:

- a file up to ``split_size_mb`` is one split;
- a larger Parquet file is cut into runs of consecutive row groups of up to ``split_size_mb`` (by their
  compressed size), a larger uncompressed CSV / NDJSON file into byte ranges that own the lines starting
  in them (``lines.py``); a compressed file, or a CSV whose quoted values hold line breaks, is one split.

Each split carries what a producer needs (the file, its size and modification time, its part, the
stream's schema), so reading opens the file and nothing else. A position is ``[row group or byte offset,
rows already read]`` (``readers.py``), so a crashed split resumes inside its file, exactly.

Incremental (``sync_mode: incremental``): a file whose (size, modification time) the last successful job
loaded is skipped. Each batch carries its file's ``{"file:<uri>": [size, mtime_ns]}`` as its state;
the engine merges the states of every committed batch into the job's stored watermark (only when the
job succeeds), which the next job's producers read. ``full_refresh`` (or a stream reset) reads every file.
A file whose size changed between planning and reading fails the job (it is being written).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.json as pjson
import pyarrow.parquet as pq
from pydantic import ValidationError

from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.sources.file import lines, schemas
from bizon_fast.connectors.sources.file.config import FileSourceConfig
from bizon_fast.connectors.sources.file.listing import FileEntry, filesystem, list_files
from bizon_fast.connectors.sources.file.readers import (
    BadLines,
    TextFormat,
    one_line,
    parseable,
    read_csv_whole,
    read_parquet,
    read_text,
)
from bizon_fast.errors import ConfigError, UserError
from bizon_fast.source.base import Source, SourceBatch, Split
from bizon_fast.source.incremental import with_next_state

log = logging.getLogger("bizon_fast.source.file")

MiB = 1 << 20
#: bytes of a CSV / NDJSON file its column types are inferred from
SAMPLE_BYTES = 1 << 20
#: files inspected at once while planning (object stores: one or two requests each)
INSPECT_THREADS = 16
STATE_PREFIX = "file:"


def _coerce(config: SourceConfig) -> FileSourceConfig:
    if isinstance(config, FileSourceConfig):
        return config
    try:
        return FileSourceConfig.model_validate(config.model_dump())
    except ValidationError as exc:
        details = "; ".join(f"source.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid file source config: {details}") from None


class FileSource(Source):
    name = "file"
    supports_incremental = True

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        self.config: FileSourceConfig = _coerce(config)
        self.overrides = schemas.column_types(self.config.column_types)
        self._plan: tuple[list[Split], pa.Schema, int | None] | None = None
        self._fs: pafs.FileSystem | None = None

    @staticmethod
    def streams() -> list[str]:
        return ["*"]

    @classmethod
    def accepts_stream(cls, stream: str) -> bool:
        return True  # the stream is a name for the rows of the files

    @staticmethod
    def get_config_class() -> type[SourceConfig]:
        return FileSourceConfig

    def label(self) -> str:
        return f"files {self.config.path!r}"

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs = filesystem(self.config)[0]
        return self._fs

    # ------------------------------------------------------------ planning (supervisor)

    def plan(self) -> tuple[list[Split], pa.Schema, int | None]:
        if self._plan is None:
            fs, files = list_files(self.config)
            self._fs = fs
            with ThreadPoolExecutor(min(INSPECT_THREADS, len(files))) as pool:
                inspected = list(pool.map(self._inspect, files))
            schema = schemas.unify(
                ((f.uri, s) for f, (s, _) in zip(files, inspected, strict=True) if s is not None), self.overrides
            )
            blob = schemas.to_bytes(schema)
            splits: list[Split] = []
            total: int | None = 0
            for entry, (file_schema, meta) in zip(files, inspected, strict=True):
                columns = file_schema.names if file_schema is not None else []
                for part, rows in self._parts(entry, meta):
                    params = {
                        "path": entry.path,
                        "uri": entry.uri,
                        "size": entry.size,
                        "mtime": entry.mtime_ns,
                        "format": entry.format,
                        "compression": entry.compression,
                        "columns": columns,
                        "schema": blob,
                        **part,
                    }
                    sid = f"{entry.uri}@{entry.size}:{entry.mtime_ns}{_part_id(part)}"
                    splits.append(Split(id=sid, params=params, total_rows=rows))
                    total = None if total is None or rows is None else total + rows
            log.info("%d files, %d splits, schema: %s", len(files), len(splits), ", ".join(schema.names))
            self._plan = (splits, schema, total)
        return self._plan

    def _inspect(self, entry: FileEntry) -> tuple[pa.Schema | None, pq.FileMetaData | None]:
        """(schema, Parquet metadata) of one file; (None, None) for an empty text file."""
        try:
            if entry.format == "parquet":
                with self.fs.open_input_file(entry.path) as f:
                    meta = pq.ParquetFile(f).metadata
                return schemas.plain(meta.schema.to_arrow_schema()), meta
            data, complete = self._head(entry)
        except (pa.ArrowException, OSError) as exc:
            what = "not a readable Parquet file" if entry.format == "parquet" else "cannot read"
            raise UserError(f"source: {entry.uri}: {what}: {one_line(exc)}") from None
        if not data.strip():
            return None, None
        try:
            if entry.format == "csv":
                csv = self.config.csv
                read = pcsv.ReadOptions(autogenerate_column_names=not csv.header, encoding=csv.encoding)
                parse = pcsv.ParseOptions(
                    delimiter=csv.delimiter,
                    quote_char=csv.quote_char,
                    escape_char=csv.escape_char,
                    double_quote=csv.double_quote,
                    newlines_in_values=csv.newlines_in_values,
                    invalid_row_handler=lambda row: "skip",
                )
                convert: dict[str, Any] = {"column_types": self.overrides}
                if csv.null_values is not None:
                    convert.update(null_values=csv.null_values, strings_can_be_null=True)
                options = pcsv.ConvertOptions(**convert)

                def read_csv(buf: pa.Buffer) -> pa.Table:
                    return pcsv.read_csv(buf, read_options=read, parse_options=parse, convert_options=options)

                table = read_csv(parseable(pa.py_buffer(lines.sample(data, complete)), read_csv))
            else:
                table = pjson.read_json(parseable(pa.py_buffer(lines.sample(data, complete)), _read_json))
        except schemas.ARROW_DATA_ERRORS as exc:
            raise UserError(
                f"source: {entry.uri}: cannot infer the columns from its first lines: {one_line(exc)}"
            ) from None
        return schemas.plain(table.schema, nulls_as_string=True), None

    def _head(self, entry: FileEntry) -> tuple[bytes, bool]:
        """The first ``SAMPLE_BYTES`` (decompressed) of a text file, and whether that is all of it."""
        with self.fs.open_input_stream(entry.path, compression=entry.compression) as stream:
            data = stream.read(SAMPLE_BYTES)
            more = stream.read(1)
        return data, not more

    def _parts(self, entry: FileEntry, meta: pq.FileMetaData | None) -> list[tuple[dict[str, Any], int | None]]:
        """The parts of a file read as separate splits, each with its rows when known."""
        target = int(self.config.split_size_mb * MiB)
        if entry.format == "parquet":
            assert meta is not None
            groups: list[list[int]] = []
            size = 0
            for i in range(meta.num_row_groups):
                rg = meta.row_group(i)
                rg_bytes = sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
                if not groups or size + rg_bytes > target:
                    groups.append([i, i + 1])
                    size = 0
                else:
                    groups[-1][1] = i + 1
                size += rg_bytes
            if not groups:
                return [({"row_groups": [0, 0]}, 0)]
            return [({"row_groups": g}, sum(meta.row_group(i).num_rows for i in range(g[0], g[1]))) for g in groups]
        splittable = entry.compression is None and not (entry.format == "csv" and self.config.csv.newlines_in_values)
        if not splittable or entry.size <= target:
            return [({"range": [0, None]}, None)]
        n = math.ceil(entry.size / target)
        bounds = [entry.size * i // n for i in range(n + 1)]
        return [({"range": [bounds[i], bounds[i + 1] if i < n - 1 else None]}, None) for i in range(n)]

    def splits(self) -> list[Split]:
        return self.plan()[0]

    def total_rows(self) -> int | None:
        return self.plan()[2]

    def columns(self) -> list[str] | None:
        return self.plan()[1].names

    # ------------------------------------------------------------ reading (producer)

    def _loaded(self, p: dict[str, Any]) -> dict[str, Any] | None:
        """The state a batch of this file carries (incremental); None when the last job loaded the file."""
        run = getattr(self, "incremental", None)
        if run is None:
            return {}
        key, mark = STATE_PREFIX + p["uri"], [p["size"], p["mtime"]]
        if not run.reset and list((run.state or {}).get(key) or []) == mark:
            return None
        return {key: mark}

    def read(self, split: Split, position: Any | None) -> Iterator[SourceBatch]:
        p = split.params
        state = self._loaded(p)
        if state is None:
            log.info("source: %s was loaded by an earlier run (same size and modification time): skipped", p["uri"])
            return
        schema = schemas.from_bytes(p["schema"])
        chunk = int(self.config.chunk_mb * MiB)
        uri = p["uri"]
        if p["format"] == "parquet":
            if p["row_groups"][0] >= p["row_groups"][1]:
                return
            with self._open(p) as f:
                for batch, at in read_parquet(f, uri, schema, tuple(p["row_groups"]), position, chunk):
                    yield SourceBatch(with_next_state(batch, state or None), at)
            return
        bad = BadLines(uri, skip=self.config.on_bad_rows == "skip")
        fmt = TextFormat(p["format"], self.config, p["columns"], schema, bad)
        if not p["columns"] and p["format"] == "csv":
            return  # an empty file
        offset = None if position is None else int(position[0])
        if p["format"] == "csv" and self.config.csv.newlines_in_values:
            self._check_size(p)
            with self._stream(p) as stream:
                for batch, at in read_csv_whole(stream, fmt, uri, position, chunk):
                    yield SourceBatch(with_next_state(batch, state or None), at)
        elif p["compression"] is None:
            with self._open(p) as f:
                chunks = lines.ranged_chunks(f, p["size"], p["range"][0], p["range"][1], offset, chunk)
                for batch, at in read_text(chunks, fmt, uri, position):
                    yield SourceBatch(with_next_state(batch, state or None), at)
        else:
            self._check_size(p)
            with self._stream(p) as stream:
                for batch, at in read_text(lines.stream_chunks(stream, offset, chunk), fmt, uri, position):
                    yield SourceBatch(with_next_state(batch, state or None), at)

    def _stream(self, p: dict[str, Any]) -> pa.NativeFile:
        try:
            return self.fs.open_input_stream(p["path"], compression=p["compression"])
        except OSError as exc:
            raise UserError(f"source: {p['uri']}: cannot read: {one_line(exc)}") from None

    def _check_size(self, p: dict[str, Any]) -> None:
        try:
            info = self.fs.get_file_info(p["path"])
        except OSError as exc:
            raise UserError(f"source: {p['uri']}: cannot read: {one_line(exc)}") from None
        if info.type != pafs.FileType.File:
            raise UserError(f"source: {p['uri']}: the file is gone since the job was planned")
        if info.size != p["size"]:
            raise UserError(
                f"source: {p['uri']}: the file changed since the job was planned ({p['size']} -> {info.size} bytes)"
            )

    def _open(self, p: dict[str, Any]) -> pa.NativeFile:
        """The file for random access; its size must still be the planned one."""
        try:
            f = self.fs.open_input_file(p["path"])
            size = f.size()
        except OSError as exc:
            raise UserError(f"source: {p['uri']}: cannot read: {one_line(exc)}") from None
        if size != p["size"]:
            f.close()
            raise UserError(
                f"source: {p['uri']}: the file changed since the job was planned ({p['size']} -> {size} bytes)"
            )
        return f


def _read_json(buf: pa.Buffer) -> None:
    pjson.read_json(pa.BufferReader(buf), read_options=pjson.ReadOptions(block_size=max(len(buf) + 1, 1 << 16)))


def _part_id(part: dict[str, Any]) -> str:
    if "row_groups" in part:
        return f"#rg{part['row_groups'][0]}-{part['row_groups'][1]}"
    first, stop = part["range"]
    return "" if first == 0 and stop is None else f"#bytes{first}-{'' if stop is None else stop}"
