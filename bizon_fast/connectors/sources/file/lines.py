"""Text files (CSV, NDJSON) as chunks of whole lines, each with its byte offsets.

Why chunks cut by us rather than pyarrow's streaming readers: they do not say where in the file a batch
ends, and a cursor must. A chunk is ``chunk_bytes`` of the file cut after its last line break; it is
parsed in one call (pyarrow's parsers, multi-threaded over blocks) and its end offset is an exact resume
point. Offsets are of the decompressed bytes.

Byte ranges: a split ``[a, b)`` of an uncompressed file owns the lines that *start* inside it (a line
starts at 0 or after a ``\\n``), so adjacent ranges cover every line once, whatever the cut points. A
compressed file cannot be entered in the middle: it is one split, and a resume decompresses and drops
the bytes before its offset.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

#: bytes looked at from a cut point to find the next line start (doubled while no line break shows)
PROBE = 64 << 10


def _last_break(buf: pa.Buffer) -> int:
    """Index of the last ``\\n`` in ``buf``; -1 if none. Only the tail is copied, a probe at a time."""
    view = memoryview(buf)
    end = len(view)
    while end > 0:
        start = max(0, end - PROBE)
        found = bytes(view[start:end]).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def line_start(f: pa.NativeFile, offset: int, size: int) -> int:
    """The first line start at or after ``offset`` in a random-access file of ``size`` bytes."""
    if offset <= 0:
        return 0
    pos = offset - 1  # a line starts at offset when the byte before it is a line break
    while pos < size:
        data = f.read_at(min(PROBE, size - pos), pos)
        found = data.find(b"\n")
        if found >= 0:
            return pos + found + 1
        pos += len(data)
    return size


def ranged_chunks(
    f: pa.NativeFile, size: int, first: int, stop: int | None, position: int | None, chunk_bytes: int
) -> Iterator[tuple[pa.Buffer, int]]:
    """(chunk, its start offset) of the lines starting in ``[first, stop)`` (``stop`` None: to the end),
    from ``position`` (a line start, from an earlier chunk's end) when resuming."""
    pos = position if position is not None else line_start(f, first, size)
    end = size if stop is None or stop >= size else line_start(f, stop, size)
    while pos < end:
        want = min(chunk_bytes, end - pos)
        while True:
            f.seek(pos)
            buf = f.read_buffer(want)
            if pos + len(buf) >= end:
                break
            cut = _last_break(buf)
            if cut >= 0:
                buf = buf.slice(0, cut + 1)
                break
            want = min(want * 2, end - pos)  # a line longer than a chunk: read more of it
        if not len(buf):
            return
        yield buf, pos
        pos += len(buf)


def stream_chunks(stream: pa.NativeFile, position: int | None, chunk_bytes: int) -> Iterator[tuple[pa.Buffer, int]]:
    """(chunk, start offset) of a sequential stream (a decompressing one), from ``position`` when resuming."""
    pos = 0
    target = position or 0
    while pos < target:
        skipped = len(stream.read(min(chunk_bytes, target - pos)))
        if not skipped:
            return
        pos += skipped
    rest = b""
    while True:
        block = stream.read(chunk_bytes)
        if not block:
            if rest:
                yield pa.py_buffer(rest), pos
            return
        data = rest + block if rest else block
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        yield pa.py_buffer(data[: cut + 1]), pos
        pos += cut + 1
        rest = data[cut + 1 :]


def sample(data: bytes, complete: bool) -> bytes:
    """The whole lines of the first bytes of a file (all of them when the file ended)."""
    if complete:
        return data
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else data


def split_lines(buf: pa.Buffer) -> tuple[pa.Buffer, pa.Buffer] | None:
    """``buf`` cut at the line break nearest its middle (None when it holds one line only)."""
    data = buf.to_pybytes()
    mid = len(data) // 2
    cut = data.rfind(b"\n", 0, mid)
    if cut < 0 or cut + 1 >= len(data):
        cut = data.find(b"\n", mid)
        if cut < 0 or cut + 1 >= len(data):
            return None
    return buf.slice(0, cut + 1), buf.slice(cut + 1)
