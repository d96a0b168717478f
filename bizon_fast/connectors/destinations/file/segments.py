"""The json staging log: each consumer appends its writes to one segment file, indexed by (split, seq range).

Why not one part file per write, as Parquet does: a json target is one file, and on ext4 (no reflinks) turning
parts into it means copying every byte a second time at publish, which cost as much as writing them (a 2M-row
synthetic job: ~0.9 GB written, then copied again). A consumer instead appends every write to its own segment
(``segment-<uuid>.ndjson``) and, once those bytes are complete, one line to the segment's index
(``segment-<uuid>.index``: ``<split label> <first_seq> <last_seq> <start> <end> <written_ns>``). When the
resolved entries are one segment's bytes in (split, seq) order, which is the case of one consumer reading splits
in order, publish renames that segment into place; otherwise it copies the entries' byte ranges in order.

The crash contract is the parts' one, entry for entry:

- a write's bytes count only once its index line is complete: a consumer killed mid-write leaves bytes no entry
  names (and no later write lands after them: a restarted consumer opens a new segment);
- a later write of a split overlapping an earlier one replaces it (``resolve``: last written wins, like the
  part that deleted the parts it overlapped); an empty write drops the entries it overlaps;
- ``drop_uncommitted`` (the supervisor's prepare) forgets entries past each split's committed seq.
"""

from __future__ import annotations

import bisect
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import msgspec

from bizon_fast.connectors.destinations.file.file_io import append_file

SEGMENT_PREFIX = "segment-"
DATA_SUFFIX = ".ndjson"
INDEX_SUFFIX = ".index"


class Entry(msgspec.Struct, frozen=True):
    """One write of a split's seqs ``first..last``: bytes ``start..end`` of ``path``, written at ``written`` (ns)."""

    label: str
    first: int
    last: int
    path: Path
    start: int
    end: int
    written: int

    def line(self) -> bytes:
        return f"{self.label} {self.first} {self.last} {self.start} {self.end} {self.written}\n".encode()


def _parse(line: bytes, path: Path) -> Entry | None:
    """The entry of a complete index line; None for a torn or foreign one."""
    fields = line.split()
    if not line.endswith(b"\n") or len(fields) != 6:
        return None
    try:
        first, last, start, end, written = (int(f) for f in fields[1:])
    except ValueError:
        return None
    return Entry(fields[0].decode("ascii", "replace"), first, last, path, start, end, written)


def _index_paths(job_dir: Path) -> list[Path]:
    return sorted(p for p in job_dir.iterdir() if p.name.startswith(SEGMENT_PREFIX) and p.name.endswith(INDEX_SUFFIX))


def _data_path(index: Path) -> Path:
    return index.with_name(index.name[: -len(INDEX_SUFFIX)] + DATA_SUFFIX)


def read_entries(job_dir: Path) -> list[Entry]:
    """Every complete entry of the job's segment indexes."""
    entries = []
    for index in _index_paths(job_dir):
        data = _data_path(index)
        with open(index, "rb") as f:
            entries += [e for e in (_parse(line, data) for line in f) if e is not None]
    return entries


def resolve(entries: Iterable[Entry]) -> list[Entry]:
    """The entries that hold the job's rows, sorted by (split, first seq): each later write of a split replaces
    the earlier ones it overlaps; a write of no bytes only drops what it overlaps.

    So an entry survives when no later entry of its split overlaps it: walked from the last written back, each
    is checked against the union of the seq ranges written after it (disjoint intervals, found by bisection),
    in O(n log n) however many writes a job made.
    """
    by_label: dict[str, list[Entry]] = {}
    for entry in entries:
        by_label.setdefault(entry.label, []).append(entry)
    kept: list[Entry] = []
    for group in by_label.values():
        starts: list[int] = []  # the union of later writes' seq ranges: sorted, disjoint [starts[i], ends[i]]
        ends: list[int] = []
        for entry in sorted(group, key=lambda e: e.written, reverse=True):
            i = bisect.bisect_right(starts, entry.last)  # intervals starting after it cannot overlap it
            overlapped = bisect.bisect_left(ends, entry.first, 0, i) < i  # one of those ends at or after its start
            if not overlapped and entry.end > entry.start:
                kept.append(entry)
            # merge it into the union with the intervals it overlaps or touches (seqs are integers): consecutive
            # writes keep the union one interval, so the lists stay short
            i = bisect.bisect_right(starts, entry.last + 1)
            j = bisect.bisect_left(ends, entry.first - 1, 0, i)
            lo = min(entry.first, starts[j]) if j < i else entry.first
            hi = max(entry.last, ends[i - 1]) if j < i else entry.last
            starts[j:i], ends[j:i] = [lo], [hi]
    return sorted(kept, key=lambda e: (e.label, e.first))


def drop_uncommitted(job_dir: Path, committed_by_label: dict[str, int]) -> None:
    """Forget entries past each split's committed seq (a resumed job writes them again); each index is rewritten
    whole (temporary file, then rename) only when it loses an entry, and a segment left without one goes."""
    for index in _index_paths(job_dir):
        with open(index, "rb") as f:
            raw = f.read()
        data = _data_path(index)
        lines = raw.splitlines(keepends=True)
        keep = [
            line
            for line in lines
            if (e := _parse(line, data)) is not None and e.first <= committed_by_label.get(e.label, -1)
        ]
        if not keep:
            data.unlink(missing_ok=True)
            index.unlink(missing_ok=True)
        elif len(keep) != len(lines):
            tmp = index.with_name(f".tmp-{index.name}-{uuid.uuid4().hex}")
            tmp.write_bytes(b"".join(keep))
            os.replace(tmp, index)
    for data in job_dir.iterdir():  # data whose index never got a line: the consumer died in its first write
        index = data.with_name(data.name[: -len(DATA_SUFFIX)] + INDEX_SUFFIX)
        if data.name.startswith(SEGMENT_PREFIX) and data.name.endswith(DATA_SUFFIX) and not index.exists():
            data.unlink(missing_ok=True)


def whole_segment(entries: list[Entry]) -> Path | None:
    """The one segment that is exactly these (resolved) entries back to back from byte 0 to its end, if any:
    publishing it is a rename."""
    if not entries or any(e.path != entries[0].path for e in entries):
        return None
    position = 0
    for entry in entries:
        if entry.start != position:
            return None
        position = entry.end
    return entries[0].path if os.stat(entries[0].path).st_size == position else None


def copy_entries(out: BinaryIO, entries: list[Entry]) -> None:
    """Append each entry's byte range to ``out``, in order."""
    for entry in entries:
        append_file(out, entry.path, entry.start, entry.end)


class SegmentWriter:
    """One consumer's segment: ``append`` a write's bytes through ``out``, then ``commit`` its index line."""

    def __init__(self, job_dir: Path, *, fsync: bool) -> None:
        name = f"{SEGMENT_PREFIX}{uuid.uuid4().hex}"
        self.path = job_dir / f"{name}{DATA_SUFFIX}"
        self.fsync = fsync
        self.out: BinaryIO = open(self.path, "xb")  # noqa: SIM115 (held for the consumer's life)
        self._index = os.open(job_dir / f"{name}{INDEX_SUFFIX}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.size = 0
        if fsync:
            fd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def rollback(self) -> None:
        """A write failed part way: its bytes go, so the next write starts where this one did."""
        self.out.flush()
        os.ftruncate(self.out.fileno(), self.size)
        self.out.seek(self.size)

    def commit(self, label: str, first_seq: int, last_seq: int) -> None:
        """The bytes appended since the last commit are complete: name them in the index."""
        self.out.flush()
        if self.fsync:
            os.fsync(self.out.fileno())
        end = self.out.tell()
        entry = Entry(label, first_seq, last_seq, self.path, self.size, end, time.time_ns())
        os.write(self._index, entry.line())
        if self.fsync:
            os.fsync(self._index)
        self.size = end

    def close(self) -> None:
        self.out.close()
        os.close(self._index)
