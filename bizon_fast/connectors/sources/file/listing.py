"""The files of a ``source.path``: each with its size, modification time, format and compression.

The path is resolved and its glob expanded by ``filesystems.py`` (local, ``file://``, ``s3://``, ``gs://``);
this module names each file as the user would (``s3://bucket/key``, an absolute local path) and tells
its format and compression from its extension (``source.format`` fixes the format for every file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from bizon_fast.connectors.sources.file.filesystems import expand, open_filesystem
from bizon_fast.errors import UserError

#: compression by extension (pyarrow's codec names); a compressed file is read as one stream
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".json": "ndjson",
    ".jsonl": "ndjson",
    ".ndjson": "ndjson",
}


@dataclass(frozen=True)
class FileEntry:
    """One file to read. ``path`` is inside ``filesystem``; ``uri`` is how messages and the state name it."""

    path: str
    uri: str
    size: int
    mtime_ns: int | None
    format: str
    compression: str | None


def filesystem(config: Any) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``config.path`` and the path (or pattern) inside it: the one call that resolves a path."""
    return open_filesystem(config.path, config)


def uri_of(fs: pafs.FileSystem, path: str) -> str:
    kind = fs.type_name
    if kind == "s3":
        return f"s3://{path}"
    if kind == "gcs":
        return f"gs://{path}"
    return path


def kind_of(name: str, fixed: str) -> tuple[str, str | None]:
    """(format, compression) of a file name; ``fixed`` is ``source.format`` (``auto``: by extension)."""
    base = name.lower().rsplit("/", 1)[-1]
    compression = None
    for ext, codec in COMPRESSIONS.items():
        if base.endswith(ext):
            compression, base = codec, base[: -len(ext)]
            break
    if fixed != "auto":
        return fixed, compression
    for ext, fmt in FORMATS.items():
        if base.endswith(ext):
            return fmt, compression
    raise UserError(
        f"source.format: cannot tell the format of {name!r} from its extension "
        f"({', '.join(FORMATS)}, optionally {', '.join(COMPRESSIONS)}); set source.format"
    )


def list_files(config: Any) -> tuple[pafs.FileSystem, list[FileEntry]]:
    """Every file ``config.path`` names, sorted by path (no match is an error, raised by ``expand``)."""
    fs, pattern = filesystem(config)
    entries = []
    for info in expand(fs, pattern, config.path):
        uri = uri_of(fs, info.path)
        fmt, compression = kind_of(uri, config.format)
        if fmt == "parquet" and compression is not None:
            raise UserError(
                f"source.path: {uri}: a compressed Parquet file is not readable (Parquet compresses inside)"
            )
        entries.append(FileEntry(info.path, uri, int(info.size or 0), info.mtime_ns, fmt, compression))
    return fs, entries
