"""Stream mode of the ``file`` destination: each batch is appended to its records' files as it is written.

bizon's stream runner writes straight to ``{destination_id}.json`` (no staging, no final publish) and
routes every record to the ``destination_id`` its source gave it (``record_schemas`` entries are looked
up by that id when unnesting). A stream never ends, so nothing can wait for a publish step: a write
appends its rows to each destination's file before it returns, and the supervisor commits the cursor
right after.

Rows are split by ``destination_id`` column-wise (one ``pyarrow.compute`` filter per destination in the
batch); rows without one go to ``destination.config.destination_id``, or to the stream's name when that
is unset. Each destination's lines are formatted into a part file in the job's staging folder (the same
code as batch mode), then appended to the target under an exclusive ``flock`` (several consumers may
append to one file; the kernel drops the lock if the process dies). A per-split marker records the last
seq appended, so a batch replayed after a restart is skipped instead of appended twice. Only a crash
between an append and its marker update can duplicate that one batch: stream mode is at-least-once.

Where a record's file goes. A ``destination_id`` that comes from source data is a path relative to the
destination folder (the folder of ``destination.config.destination_id``, or the working directory), and
it must stay in it: data must not choose where on disk it lands (``../../etc/cron.d/x``). Its ``..``,
``.`` and empty components, a leading ``/`` and NUL characters are dropped (``../../escape`` becomes
``escape`` in the folder); one that is left empty, or that resolves out of the folder through a symbolic
link, goes to the default destination. Each such id is logged once as a warning, and each consumer
logs how many records it kept in when it stops. Ids the config names itself (``destination_id``,
``record_schemas``) are the author's choice and used as written.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from bizon_fast.connectors.destinations.file.config import FileDestinationDetails
from bizon_fast.connectors.destinations.file.file_io import append_file, file_label, json_target
from bizon_fast.destination.base import DestinationContext
from bizon_fast.source.records import is_source_records

logger = logging.getLogger("bizon_fast.destination.file")

MARKER_PREFIX = "stream-"


def contained_id(destination_id: str) -> str:
    """``destination_id`` as a relative path that cannot leave its folder ("" when nothing is left).

    Only the components that move up or sideways go (``..``, ``.``, empty ones, so a leading ``/``
    too) and NUL characters, which no file name may hold: ``sub/table`` stays a subfolder's file.
    """
    text = destination_id.replace("\x00", "")
    for sep in {os.sep, os.altsep} - {None, "/"}:
        text = text.replace(sep, "/")
    return "/".join(part for part in text.split("/") if part not in ("", ".", ".."))


def route(batch: pa.RecordBatch, default: str) -> dict[str, pa.RecordBatch]:
    """``batch`` split by ``destination_id`` (rows without one go to ``default``), order kept within each."""
    if not is_source_records(batch.schema) or batch.column("destination_id").null_count == batch.num_rows:
        return {default: batch}
    ids = pc.fill_null(batch.column("destination_id"), default)
    names = pc.unique(ids).to_pylist()
    if len(names) == 1:
        return {names[0]: batch}
    return {name: batch.filter(pc.equal(ids, name)) for name in names}


class PartWriter(Protocol):
    """What stream mode uses of a batch-mode file destination (``file.FileDestination`` is one).

    Declared here rather than imported: ``file.py`` imports this module for its stream mode, and an import
    of ``file.py`` back would close a circle.
    """

    config: FileDestinationDetails
    context: DestinationContext
    target: Path
    job_dir: Path

    def batch_view(self, destination_id: str) -> PartWriter: ...

    def ensure_job_dir(self) -> None: ...

    def write_part(
        self, path: Path, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]
    ) -> int: ...


class StreamAppender:
    def __init__(self, owner: PartWriter) -> None:
        self.owner = owner
        self.default = owner.config.destination_id or owner.context.stream
        self.views: dict[str, PartWriter] = {}
        self.folder = owner.target.parent  # where records' own destination ids resolve, and must stay
        declared = {getattr(e, "destination_id", None) for e in owner.config.record_schemas or []}
        self.trusted = {self.default} | {d for d in declared if d}  # named by the config: used as written
        self.placed: dict[str, str] = {}  # a record's destination_id -> the id its rows are written under
        self.moved: dict[str, int] = {}  # unsafe destination_id -> rows written elsewhere

    def _place(self, destination_id: str) -> str:
        """The id rows of ``destination_id`` are written under: itself, unless it would leave the folder."""
        placed = self.placed.get(destination_id)
        if placed is not None:
            return placed
        placed = destination_id
        if destination_id not in self.trusted:
            placed = contained_id(destination_id)
            if placed and not self._inside(placed):
                placed = ""
            placed = placed or self.default
            if placed != destination_id:
                logger.warning(
                    "file destination: destination_id %r from the source data leaves the destination folder %s; "
                    "its records go to %s instead",
                    destination_id,
                    self.folder,
                    self._view(placed).target,
                )
        self.placed[destination_id] = placed
        return placed

    def _inside(self, relative: str) -> bool:
        """True when ``relative`` under the folder still resolves into it (a symbolic link may point out)."""
        root = os.path.realpath(self.folder)
        return os.path.realpath(os.path.join(root, relative)).startswith(root.rstrip(os.sep) + os.sep)

    def _view(self, destination_id: str) -> PartWriter:
        """A batch-mode file destination for one destination id: its target, format and unnest columns."""
        view = self.views.get(destination_id)
        if view is None:
            view = self.owner.batch_view(destination_id)
            if destination_id != self.default:  # a record's own id is a path in the destination folder
                name = destination_id if view.config.format == "parquet" else json_target(destination_id)
                view.target = self.folder / name
            view.target.parent.mkdir(parents=True, exist_ok=True)
            self.views[destination_id] = view
        return view

    def _marker(self, split_id: str) -> Path:
        return self.owner.job_dir / f"{MARKER_PREFIX}{file_label(split_id)}.seq"

    def _appended_through(self, split_id: str) -> int:
        try:
            return int(self._marker(split_id).read_text())
        except (FileNotFoundError, ValueError):
            return -1

    def _mark(self, split_id: str, seq: int) -> None:
        marker = self._marker(split_id)
        tmp = marker.with_name(f"{marker.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, marker)

    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        if last_seq <= self._appended_through(split_id):
            return  # a replay of batches already appended
        self.owner.ensure_job_dir()
        # one entry per input batch in every destination (empty where it has no rows), so bizon_id stays
        # keyed on (seq, row) within each destination
        routed: dict[str, list[pa.RecordBatch]] = {}
        for i, batch in enumerate(batches):
            for destination_id, rows in route(batch, self.default).items():
                placed = self._place(destination_id)
                if placed != destination_id:
                    self.moved[destination_id] = self.moved.get(destination_id, 0) + rows.num_rows
                slots = routed.setdefault(placed, [b.slice(0, 0) for b in batches])
                slots[i] = pa.concat_batches([slots[i], rows]) if slots[i].num_rows else rows
        for destination_id, parts in routed.items():
            self._append(destination_id, split_id, first_seq, last_seq, parts)
        self._mark(split_id, last_seq)

    def _append(self, destination_id: str, split_id: str, first_seq: int, last_seq: int, parts: list) -> None:
        view = self._view(destination_id)
        # ids of rows routed away from the default destination are salted with theirs, so no two files share one
        key = split_id if destination_id == self.default else f"{split_id}>{destination_id}"
        tmp = self.owner.job_dir / f".tmp-stream-{uuid.uuid4().hex}"
        try:
            if not view.write_part(tmp, key, first_seq, last_seq, parts):
                return
            if view.config.format == "parquet":
                view.target.mkdir(parents=True, exist_ok=True)
                name = f"part-{file_label(self.owner.context.job_id)}-{file_label(key)}"
                os.replace(tmp, view.target / f"{name}-{first_seq:010d}-{last_seq:010d}.parquet")
                return
            fd = os.open(view.target, os.O_WRONLY | os.O_CREAT, 0o644)
            with os.fdopen(fd, "wb") as out:
                fcntl.flock(out.fileno(), fcntl.LOCK_EX)
                out.seek(0, os.SEEK_END)
                append_file(out, tmp)
                out.flush()
                if view.config.fsync:
                    os.fsync(out.fileno())
        finally:
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """The consumer stops: the count of records kept from leaving the folder (each id was warned once)."""
        if self.moved:
            logger.warning(
                "file destination: %d records had a destination_id that leaves the destination folder %s "
                "and were written inside it instead (%s)",
                sum(self.moved.values()),
                self.folder,
                ", ".join(f"{name!r}: {rows}" for name, rows in sorted(self.moved.items(), key=str)),
            )
            self.moved.clear()

    def finish(self) -> None:
        """The stream ended (max_iterations): its rows are already in place; drop the markers."""
        if self.owner.job_dir.is_dir():
            for entry in self.owner.job_dir.iterdir():
                if entry.name.startswith(MARKER_PREFIX):
                    entry.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # holds other files: left for prepare() of the next job
                self.owner.job_dir.rmdir()
