"""Naming and copying of the ``file`` destination's output files, shared by its batch and stream modes.

Both modes (``destination.py`` and ``file_stream.py``) put ids in file names, name a json target and append
staged parts to it the same way. These helpers live here, apart from either mode, so that ``destination.py`` can
import its stream mode without ``file_stream.py`` importing ``destination.py`` back.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

#: ids made only of these characters are used in file names as written
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: what file_label returns: a plain id, or a cleaned prefix, "." and 12 hex digits
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}|[A-Za-z0-9._-]{0,48}\.[0-9a-f]{12}")


def file_label(ident: str) -> str:
    """A split or job id as it appears in file names: readable, file-system safe, one label per id.

    A plain id (letters, digits, ``_``, ``-``; at most 64 characters) is its own label. Any other gets
    its unsafe characters replaced by ``_`` (the last 48 characters kept: a file path's tail names the
    file), then ``.`` and 12 hex digits of a hash of the whole id. Plain labels hold no ``.``, so a plain
    id never equals another id's hashed label; two ids share a label only if their hashes collide (48 bits).
    Deterministic: a replay of a (split, seq range) names the same file, which is what makes it replace
    the file it rewrites.
    """
    if _PLAIN_ID.fullmatch(ident):
        return ident
    digest = hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
    return f"{_UNSAFE.sub('_', ident)[-48:].lstrip('_')}.{digest}"


def label_in_name(text: str) -> str:
    """The label a file name holds: ``text`` itself, or, for a name staged by an older version (which
    percent-encoded the id), the label of that id; so a job staged before an upgrade resumes with its files."""
    return text if _LABEL.fullmatch(text) else file_label(unquote(text))


JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
#: copy_file_range moves at most this many bytes per call (the kernel caps a call near 2 GiB anyway)
COPY_CHUNK = 1 << 30


def json_target(destination_id: str) -> str:
    """bizon appends ``.json`` unconditionally (``out.jsonl`` -> ``out.jsonl.json``); we don't double it."""
    return destination_id if destination_id.lower().endswith(JSON_SUFFIXES) else f"{destination_id}.json"


def append_file(out: BinaryIO, src: Path, start: int = 0, end: int | None = None) -> None:
    """Append bytes ``start..end`` of ``src`` (to its end by default) to ``out``: in the kernel (copy_file_range)
    when it can, else through a buffer."""
    out.flush()
    with open(src, "rb") as f:
        stop = os.fstat(f.fileno()).st_size if end is None else end
        size = stop - start
        copied = 0
        try:
            while copied < size:
                n = os.copy_file_range(f.fileno(), out.fileno(), min(size - copied, COPY_CHUNK), start + copied)
                if n == 0:
                    break
                copied += n
        except OSError:
            if copied:
                raise
        if copied < size:
            f.seek(start + copied)
            out.seek(0, os.SEEK_END)
            left = size - copied
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
                view = memoryview(chunk)
                while view:  # an unbuffered file may take part of a write
                    view = view[out.write(view) :]


#: a consumer waiting for batches less than this share of the time it spends writing is the bottleneck
SATURATED = 0.2


class BackgroundWrites:
    """Writes to ``out`` in one background thread, so the next chunk is formatted while this one is written;
    with ``threads`` > 1, chunks are also formatted in that many threads at once, and written in order.

    Writing a json batch to the page cache costs about as much as formatting it, and both release the GIL
    (the write syscall; Arrow, numpy and polars kernels): overlapped, a consumer spends the longer of the two
    instead of their sum. Formatting a chunk is ~90% GIL-free Arrow work, so two threads format ~1.75x the
    rows of one (measured: 337 vs 593 ns a row of the synthetic envelope). ``drain`` waits for every write and
    re-raises the first failure; a chunk's buffer stays alive until it is written.
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, threads)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._formatters: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future[int]] = []
        self.parallel = False  # this write's chunks go to the formatting threads (see ``write``)
        self._waited = self._worked = 0.0  # recent seconds between writes and in writes (moving averages)
        self._last_end: float | None = None

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One destination write. Its chunks are formatted in parallel only while the consumer is the pipeline's
        bottleneck: when writes follow each other with (almost) no wait for batches between them. A consumer
        that waits for batches has producers that need the cores (a Python source's ``get()`` loop): extra
        formatting threads would take a core from them and slow the whole run (measured: a bizon source's run
        2.0x its ``get()`` loop with them on, 1.3x with them off)."""
        start = time.monotonic()
        if self._last_end is not None:
            self._waited = (self._waited + (start - self._last_end)) / 2
        self.parallel = self.threads > 1 and self._waited <= SATURATED * self._worked
        try:
            yield
        finally:
            self.drain()
            end = time.monotonic()
            self._worked, self._last_end = (self._worked + (end - start)) / 2, end

    def _writer(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="file-writer")
        return self._pool

    def _bound(self, ahead: int) -> None:
        while len(self._pending) > ahead:  # chunks formatted ahead of the writer: memory stays bounded
            self._pending.pop(0).result()

    def submit(self, out: BinaryIO, view: memoryview) -> None:
        """Write ``view`` to ``out`` after the writes submitted before it (the view keeps its buffer alive)."""
        writer = self._writer()
        self._bound(1)  # at most one chunk formatted ahead: memory stays two chunks
        self._pending.append(writer.submit(out.write, view))

    def submit_formatted(self, out: BinaryIO, format_chunk: Callable[[], memoryview]) -> None:
        """Write what ``format_chunk()`` returns to ``out``, after the writes submitted before it.

        With one thread the chunk is formatted here (in the caller's thread); with more, in a formatting thread
        while the caller goes on to submit the next chunks (``threads`` chunks in flight at most).
        """
        if not self.parallel:
            self.submit(out, format_chunk())
            return
        if self._formatters is None:
            self._formatters = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="file-format")
        writer = self._writer()
        self._bound(self.threads)
        formatted = self._formatters.submit(format_chunk)
        self._pending.append(writer.submit(_write_formatted, out, formatted))

    def drain(self) -> None:
        pending, self._pending = self._pending, []
        errors = []
        for future in pending:
            try:
                future.result()
            except BaseException as exc:  # every write is waited for before the first failure is raised
                errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        for pool in (self._formatters, self._pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._formatters = None


def _write_formatted(out: BinaryIO, formatted: concurrent.futures.Future[memoryview]) -> int:
    """The writer thread's task: wait for a chunk's text, then write it (a formatting failure fails the write,
    and every later write of the batch still waits its turn: ``drain`` raises the first)."""
    return out.write(formatted.result())
