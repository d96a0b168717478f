"""The ``file`` destination: bizon-compatible NDJSON or a Parquet dataset, effectively-once.

Output (``destination.config.destination_id`` is the path, relative to ``base_dir``: by default the folder of
the pipeline file, see :mod:`bizon_fast.config.paths`; left out, the stream's name):

- ``format: json``  -> ``{destination_id}.json`` (kept as is when it already ends in .json/.jsonl/.ndjson),
  one line per record with bizon's envelope columns, or only the declared columns with ``unnest``.
- ``format: parquet`` -> a dataset directory ``{destination_id}/`` of ``part-*.parquet`` files with the
  batch's typed columns (source-records batches get the envelope columns, typed).

Staging (the crash-safety contract). Next to the target, a hidden directory holds one folder per job::

    <dir>/.<target name>.bizon-fast/
        <job_id>/part-<split_id>-<first_seq:010d>-<last_seq:010d>.parquet   one per write()
        <job_id>/.tmp-<part>-<random>          a part being written (renamed into place when complete)
        <job_id>/segment-<uuid>.ndjson|.index  json: one consumer's writes appended, and their (split, seqs, bytes)
        <job_id>.ready[.tmp]                   json publish: the complete new target, before its swap
        <job_id>.old                           parquet full refresh: the previous dataset, set aside
        <job_id>.merged[.tmp]                  parquet merge / schema change: the complete new dataset, before its swap

(``split_id`` and ``job_id`` appear as written when they hold only ``[A-Za-z0-9_-]``; any other id is shown
with the other characters replaced by ``_`` and followed by ``.`` and a hash of the id, e.g. ``key000:0:125000``
-> ``key000_0_125000.f72f8e15364e``: readable, safe in any file system, and still one name per id. See
:func:`file_label`.)

- ``write`` writes one part to a temporary name, deletes parts of the same split whose seq range
  overlaps (left by a consumer that died after writing but before reporting), then renames the part
  into place. A replay of a range therefore replaces, never duplicates, and never exposes a torn file.
  json writes go to the consumer's segment instead, with the same contract entry for entry (``segments.py``):
  a one-consumer job then publishes its segment by a rename, where parts cost a second copy of every byte.
- ``prepare`` (supervisor, before workers start) deletes temporary files, parts past each split's
  committed seq, and the staging of every other job (bizon would publish such leftovers; we don't).
- ``publish`` of a merge (``write_disposition: merge``, parquet, incremental) or of rows that change the
  dataset's schema builds a new snapshot of the whole dataset in ``<job>.merged`` (see ``merge.py``: existing
  files less the keys the job wrote, hard-linked when untouched, plus the last version of each key, less soft
  deletes, all cast to one schema), drops the parts, then swaps it in like a full refresh. A full refresh
  (or a reset) with ``write_disposition: merge`` builds the snapshot from the job's rows alone (the last
  version of each key, soft deletes dropped), as Postgres and BigQuery do. A NULL in the key or a
  non-boolean ``deleted_flag`` fails the job before anything is published.
- ``write_disposition`` ``replace`` / ``append`` force the swap / the append whatever the sync mode.
- ``publish`` swaps a full refresh in (json: one ``os.replace`` of the concatenated parts; parquet:
  rename the old dataset aside, rename the job folder in, delete the old one) or appends an
  incremental/stream run (json: old content + parts, swapped in atomically; parquet: parts moved
  into the dataset as ``part-<job_id>-<split_id>-<first>-<last>.parquet``). Each step leaves a state
  the next call recognises, so a publish interrupted at any point, or run twice, publishes exactly once.

Renames are atomic, so output survives a killed process; ``fsync: true`` adds fsyncs of files and
directories so it also survives a power loss.

``bizon_id`` is a hash of (job, split, seq, row) when a write holds one batch per seq, else of
(job, split, first_seq, row within the write): a replay grouped like the original writes the same ids.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from bizon_fast.config.destination import DestinationDetails
from bizon_fast.connectors.destinations.envelope import (
    envelope,
    envelope_lines,
    record_columns,
    records_as_text,
    row_origins,
    unnest,
)
from bizon_fast.connectors.destinations.file.config import CAPABILITIES, FileDestinationDetails
from bizon_fast.connectors.destinations.file.file_io import BackgroundWrites, append_file, file_label, label_in_name
from bizon_fast.connectors.destinations.file.file_stream import StreamAppender
from bizon_fast.connectors.destinations.file.merge import (
    PRIMARY_KEY_META,
    MergeSpec,
    SchemaPlan,
    build_snapshot,
    check_flag,
    dataset_files,
    dictionary_columns,
    fold_schemas,
    primary_key,
    same_columns,
    unify,
)
from bizon_fast.connectors.destinations.file.segments import (
    Entry,
    SegmentWriter,
    copy_entries,
    drop_uncommitted,
    read_entries,
    resolve,
    whole_segment,
)
from bizon_fast.connectors.destinations.jsontext import text_bytes
from bizon_fast.connectors.destinations.sourcetypes import parquet_closest
from bizon_fast.destination.base import Destination, DestinationContext
from bizon_fast.errors import StepFailed, UserError
from bizon_fast.faults import fault_point
from bizon_fast.source.records import extracted_at_of, is_source_records

logger = logging.getLogger("bizon_fast.destination.file")

TMP_PREFIX = ".tmp-"
#: rows formatted per chunk of a typed batch's json lines (~7 MB of synthetic lines): big enough that a chunk's
#: fixed costs vanish, small enough that a batch makes several chunks to overlap with their writes
LINES_CHUNK_ROWS = 16_384
#: a full disk, a quota, a file-size limit: retrying the same write cannot help
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def part_name(split_id: str, first_seq: int, last_seq: int, ext: str) -> str:
    """The part holding seqs ``first_seq..last_seq`` of ``split_id``: ``part-<split label>-<first>-<last>.<ext>``."""
    return f"part-{file_label(split_id)}-{first_seq:010d}-{last_seq:010d}.{ext}"


def parse_part(name: str, ext: str) -> tuple[str, int, int] | None:
    """``(split label, first_seq, last_seq)`` of a part file name (see :func:`file_label`), None for anything else.

    A name staged by an older version, which percent-encoded the split id, gives the label of that id,
    so a job staged before an upgrade resumes with its parts recognised.
    """
    if not (name.startswith("part-") and name.endswith(f".{ext}")):
        return None
    split, _, rest = name[len("part-") : -len(ext) - 1].rpartition("-")
    split, _, first = split.rpartition("-")
    if not (split and first.isdigit() and rest.isdigit()):
        return None
    return label_in_name(split), int(first), int(rest)


def disk_error(exc: OSError, path: Path | str, doing: str) -> StepFailed:
    """One line for a failed file operation: the file, the errno by name, and that a rerun resumes."""
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = f"{exc.strerror or exc} ({code}, errno {exc.errno})" if code else str(exc)
    return StepFailed(f"file destination: {doing} {exc.filename or path} failed: {reason}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines_text(batch: pa.RecordBatch, **envelope_args: object) -> memoryview:
    """A chunk's NDJSON text (``envelope_lines``), as the bytes the writer thread writes."""
    return text_bytes(envelope_lines(batch, **envelope_args))  # type: ignore[arg-type]


def _merge_frames(frames: list[tuple[int, int, pa.RecordBatch]]) -> list[tuple[int, int, pa.RecordBatch]]:
    """Consecutive frames of one seq and extraction time as one batch: the same ids, far fewer steps.

    Without one batch per seq, ids key on (first_seq, row within the write), so batches that follow
    each other format identically one by one or together. A ring slot of a bizon source holds one
    small batch per page (1000 rows, say); formatting them together is about 1.6x faster.
    """
    merged: list[tuple[int, int, pa.RecordBatch]] = []
    run: list[pa.RecordBatch] = []
    for seq, offset, batch in frames:
        head = run[0] if run else None
        same = (
            head is not None
            and merged[-1][0] == seq
            and extracted_at_of(head.schema) == extracted_at_of(batch.schema)
            and head.schema.equals(batch.schema, check_metadata=False)
        )
        if same:
            run.append(batch.replace_schema_metadata(head.schema.metadata))
            continue
        if run:
            merged[-1] = (merged[-1][0], merged[-1][1], pa.concat_batches(run))
        merged.append((seq, offset, batch))
        run = [batch]
    if run:
        merged[-1] = (merged[-1][0], merged[-1][1], pa.concat_batches(run))
    return merged


class FileDestination(Destination):
    name = "file"
    config_class = FileDestinationDetails
    capabilities = CAPABILITIES

    def __init__(self, config: DestinationDetails, context: DestinationContext) -> None:
        if not isinstance(config, FileDestinationDetails):
            config = FileDestinationDetails.model_validate(config.model_dump(exclude_unset=True))
        super().__init__(config, context)
        self.config: FileDestinationDetails = config
        # stream mode routes each record to the file of its own destination_id (file_stream.py); a config
        # without destination_id writes the stream's name (bizon 0.6.4 accepts it left out: file_incremental)
        self.streaming = context.sync_mode == "stream"
        self.ext = "parquet" if config.format == "parquet" else "ndjson"
        self.target = config.target_path(context.stream)
        self.staging_root = self.target.parent / f".{self.target.name}.bizon-fast"
        job = file_label(context.job_id)
        self.job_dir = self.staging_root / job
        self.ready = self.staging_root / f"{job}.ready"
        self.aside = self.staging_root / f"{job}.old"
        self.merged = self.staging_root / f"{job}.merged"  # parquet merge: the complete new dataset, before its swap
        unnest = config.unnest and not self.streaming  # streaming: per destination_id, by file_stream
        self.columns = record_columns(config.record_schemas, config.destination_id) if unnest else None
        self._appender: StreamAppender | None = None
        self._segment: SegmentWriter | None = None  # json batch mode: this consumer's staging log (segments.py)
        self._writes = BackgroundWrites(context.threads)
        #: the job's rows become the dataset: write_disposition replace, or a full refresh (or a reset) that is
        #: not an explicit append (a merge's full refresh: the job's rows deduplicated by key)
        disposition = config.write_disposition
        self.replacing = disposition == "replace" or (
            context.sync_mode == "full_refresh" and disposition in (None, "merge")
        )

    def _stream(self) -> StreamAppender:
        if self._appender is None:
            self._appender = StreamAppender(self)
        return self._appender

    # ------------------------------------------------------------ supervisor

    def check_connection(self) -> None:
        if self.streaming and self.config.write_disposition == "merge":
            raise UserError(
                "destination.config.write_disposition: merge needs a batch run (incremental); a stream appends"
            )
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"destination.config.destination_id: cannot create {parent}: {exc}") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"destination.config.destination_id: {parent} is not writable")
        if self.config.format == "parquet" and self.target.exists() and not self.target.is_dir():
            raise UserError(f"destination.config.destination_id: {self.target} exists and is not a directory")

    def check(self) -> str:
        """Probe the output folder without creating it: its nearest existing ancestor must take a file
        (a temporary one, removed at once), and the target must be of the right kind."""
        key = "destination.config.destination_id"
        parquet = self.config.format == "parquet"
        if parquet and self.target.exists() and not self.target.is_dir():
            raise UserError(f"{key}: {self.target} exists and is not a directory")
        if not parquet and self.target.is_dir():
            raise UserError(f"{key}: {self.target} is a directory, not a file")
        folder = existing = self.target.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise UserError(f"{key}: cannot create {folder}: {existing} is not a directory")
        probe = existing / f".bizon-fast-check-{uuid.uuid4().hex}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            probe.unlink()
        except OSError as exc:
            raise UserError(f"{key}: cannot write in {existing}: {exc.strerror or exc}") from None
        state = "exists" if self.target.exists() else "new"
        created = "" if existing == folder else f", folder to be created under {existing}"
        return f"{self.target} ({self.config.format}, {state}{created}), writable"

    def prepare(self, committed: dict[str, int]) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        mine = {self.job_dir.name, self.ready.name, self.aside.name, self.merged.name}
        if self.staging_root.is_dir():
            for entry in self.staging_root.iterdir():
                if entry.name not in mine:
                    logger.info("file destination: removing stale staging %s", entry)
                    _remove(entry)
        if self.job_dir.is_dir():
            committed_by_label = {file_label(split): seq for split, seq in committed.items()}
            for entry in self.job_dir.iterdir():
                part = parse_part(entry.name, self.ext)
                if entry.name.startswith(TMP_PREFIX) or (part and part[1] > committed_by_label.get(part[0], -1)):
                    _remove(entry)
            drop_uncommitted(self.job_dir, committed_by_label)
        elif not any(seq >= 0 for seq in committed.values()) and not (
            self.ready.exists() or self.aside.exists() or self.merged.exists()
        ):
            # Nothing is durable yet, so nothing was published: an empty run must publish an empty table.
            self.job_dir.mkdir(parents=True, exist_ok=True)

    def publish(self) -> None:
        try:
            if self.streaming:
                self._stream().finish()  # every batch was appended when it was written
            elif self.config.format == "parquet":
                self._publish_parquet()
            else:
                self._publish_json()
        except OSError as exc:  # a full disk is a job failure to report in a line, not a bug's traceback
            if exc.errno is None:
                raise
            error = disk_error(exc, self.target, "publishing")
            raise StepFailed(f"{error}; the staged data is kept: run the same command to publish it") from None
        with contextlib.suppress(OSError):  # missing, or holds another job's staging
            self.staging_root.rmdir()

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        self._writes.close()

    # ------------------------------------------------------------ consumer

    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        if self.streaming:
            self._stream().write(split_id, first_seq, last_seq, batches)
            return
        self.ensure_job_dir()
        if self.ext == "ndjson":
            self._write_segment(split_id, first_seq, last_seq, batches)
            return
        name = part_name(split_id, first_seq, last_seq, self.ext)
        tmp = self.job_dir / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex}"
        try:
            try:
                rows = self.write_part(tmp, split_id, first_seq, last_seq, batches)
            except OSError as exc:
                if exc.errno in _NO_ROOM:
                    raise disk_error(exc, tmp, "writing") from None
                raise
            fault_point("file.mid_part_write")  # the part is in its temporary file, not renamed into place
            label = file_label(split_id)
            for entry in self._parts():
                split, first, last = entry[1]
                if split == label and first <= last_seq and last >= first_seq and (rows == 0 or entry[0] != name):
                    (self.job_dir / entry[0]).unlink(missing_ok=True)
            if rows:
                os.replace(tmp, self.job_dir / name)
                if self.config.fsync:
                    _fsync_dir(self.job_dir)
        finally:
            tmp.unlink(missing_ok=True)

    def _write_segment(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        """Append the write's lines to this consumer's segment, then index them (see ``segments.py``)."""
        if self._segment is None:
            self._segment = SegmentWriter(self.job_dir, fsync=self.config.fsync)
        segment = self._segment
        try:
            self._write_lines(segment.out, split_id, first_seq, last_seq, batches)
        except BaseException as exc:
            segment.rollback()
            if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
                raise disk_error(exc, segment.path, "writing") from None
            raise
        fault_point("file.mid_part_write")  # the lines are in the segment, not yet in its index
        segment.commit(file_label(split_id), first_seq, last_seq)

    def batch_view(self, destination_id: str) -> FileDestination:
        """This destination in a batch mode, writing ``destination_id``: its target, format and unnest columns.

        Stream mode routes each record to the file of its own ``destination_id`` and formats the rows of
        each with such a view (the same code as batch mode), then appends them itself.
        """
        config = self.config.model_copy(update={"destination_id": destination_id})
        # the view only formats parts (with that id's unnest columns): any batch mode will do
        return FileDestination(config, msgspec.structs.replace(self.context, sync_mode="incremental"))

    def ensure_job_dir(self) -> None:
        """Create the job's staging folder (fsynced into its parents when asked): stream mode stages there too."""
        if self.job_dir.is_dir():
            return
        self.job_dir.mkdir(parents=True, exist_ok=True)
        if self.config.fsync:
            _fsync_dir(self.staging_root)
            _fsync_dir(self.staging_root.parent)

    def _parts(self) -> Iterator[tuple[str, tuple[str, int, int]]]:
        for name in os.listdir(self.job_dir):
            part = parse_part(name, self.ext)
            if part:
                yield name, part

    def _sorted_parts(self) -> list[Path]:
        parts = sorted(self._parts(), key=lambda p: (p[1][0], p[1][1]))
        return [self.job_dir / name for name, _ in parts]

    def write_part(
        self, path: Path, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]
    ) -> int:
        """Write the batches to ``path``; return the rows written (0: no file needed)."""
        loaded_at = datetime.now(UTC)
        frames = list(row_origins(batches, first_seq, last_seq))
        if not frames:
            return 0
        if len(batches) != last_seq - first_seq + 1:
            frames = _merge_frames(frames)
        if self.config.format == "parquet":
            return self._write_parquet(path, split_id, frames, loaded_at)
        with open(path, "wb") as out:
            rows = self._format_json(out, split_id, frames, loaded_at)
            self._sync(out)
        return rows

    def _write_lines(
        self, out: BinaryIO, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]
    ) -> int:
        """The write's NDJSON lines appended to ``out``; the rows written."""
        frames = list(row_origins(batches, first_seq, last_seq))
        if not frames:
            return 0
        if len(batches) != last_seq - first_seq + 1:
            frames = _merge_frames(frames)
        return self._format_json(out, split_id, frames, datetime.now(UTC))

    def _format_json(
        self, out: BinaryIO, split_id: str, frames: list[tuple[int, int, pa.RecordBatch]], loaded_at: datetime
    ) -> int:
        rows = 0
        job_id = self.context.job_id
        with self._writes.write():  # writes overlap the formatting of the next chunk; drained before a direct write
            for seq, offset, batch in frames:
                if self.columns is not None:
                    self._writes.drain()
                    unnest(batch, self.columns, enforce_types=False).write_ndjson(out)
                elif is_source_records(batch.schema) and not records_as_text(batch.schema):
                    self._writes.drain()
                    frame = envelope(
                        batch, job_id=job_id, split_id=split_id, seq=seq, loaded_at=loaded_at, row_offset=offset
                    )
                    frame.write_ndjson(out)
                else:
                    for start in range(0, batch.num_rows, LINES_CHUNK_ROWS):  # chunk k+1 formatted while k is written
                        chunk = functools.partial(
                            _lines_text,
                            batch.slice(start, LINES_CHUNK_ROWS),
                            job_id=job_id,
                            split_id=split_id,
                            seq=seq,
                            loaded_at=loaded_at,
                            row_offset=offset + start,
                        )
                        self._writes.submit_formatted(out, chunk)
                rows += batch.num_rows
        return rows

    def _write_parquet(
        self, path: Path, split_id: str, frames: list[tuple[int, int, pa.RecordBatch]], loaded_at: datetime
    ) -> int:
        rows = 0
        writer: pq.ParquetWriter | None = None
        try:
            for seq, offset, batch in frames:
                table = self._parquet_table(batch, split_id, seq, offset, loaded_at)
                if writer is None:  # a path, not a Python file: Arrow then writes natively, without the GIL
                    writer = pq.ParquetWriter(str(path), table.schema, use_dictionary=dictionary_columns(table))
                elif not table.schema.equals(writer.schema):
                    table = table.cast(writer.schema)
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if self.config.fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return rows

    def _parquet_table(
        self, batch: pa.RecordBatch, split_id: str, seq: int, offset: int, loaded_at: datetime
    ) -> pa.Table:
        if self.columns is not None:
            return unnest(batch, self.columns, enforce_types=True).to_arrow()
        if is_source_records(batch.schema):
            frame = envelope(
                batch, job_id=self.context.job_id, split_id=split_id, seq=seq, loaded_at=loaded_at, row_offset=offset
            )
            return frame.to_arrow()
        # only the source's primary key is kept (merge reads it back from the part): the rest is run bookkeeping
        key = (batch.schema.metadata or {}).get(PRIMARY_KEY_META)
        table = pa.Table.from_batches([batch.replace_schema_metadata({PRIMARY_KEY_META: key} if key else None)])
        return parquet_closest(table)  # a source's json / jsonb text columns as Parquet JSON

    def _sync(self, out: BinaryIO) -> None:
        if self.config.fsync:
            out.flush()
            os.fsync(out.fileno())

    # ------------------------------------------------------------ publish

    def _publish_json(self) -> None:
        if not self.ready.exists():
            if not self.job_dir.is_dir():
                return  # already published (or nothing was ever staged)
            entries = self.staged_entries()
            whole = whole_segment(entries) if self.replacing else None
            building = self.ready.with_name(self.ready.name + ".tmp")
            try:
                if whole is not None:  # one consumer wrote the splits in order: its segment is the new file
                    os.replace(whole, self.ready)
                else:
                    with open(building, "wb", buffering=0) as out:  # unbuffered: copies go straight to the fd
                        if not self.replacing and self.target.is_file():
                            append_file(out, self.target)
                            if out.tell() and not self._ends_with_newline(self.target):
                                out.write(b"\n")
                        copy_entries(out, entries)
                        self._sync(out)
                    os.replace(building, self.ready)
            except BaseException as exc:
                building.unlink(missing_ok=True)  # a half-built copy only takes the space a rerun needs
                if isinstance(exc, OSError) and not exc.filename:  # copy_file_range names no file
                    raise OSError(exc.errno, exc.strerror, str(building)) from None
                raise
        # From here the ready file is the whole truth: the parts can go, then it is swapped in.
        _remove(self.job_dir)
        fault_point("file.publish")  # the parts are gone: only the ready file holds the job's rows
        os.replace(self.ready, self.target)
        if self.config.fsync:
            _fsync_dir(self.target.parent)
        logger.info("file destination: published %s (%s)", self.target, self.context.sync_mode)

    def staged_entries(self) -> list[Entry]:
        """The job's staged json writes in (split, seq) order: segment entries, and parts staged by a version
        that wrote one file per write (their modification time orders them against the entries)."""
        parts = [
            Entry(
                split, first, last, self.job_dir / name, 0, (st := os.stat(self.job_dir / name)).st_size, st.st_mtime_ns
            )
            for name, (split, first, last) in self._parts()
        ]
        return resolve(read_entries(self.job_dir) + parts)

    @staticmethod
    def _ends_with_newline(path: Path) -> bool:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _publish_parquet(self) -> None:
        plan = None if self.merged.exists() else self._snapshot_plan()
        if self.merged.exists() or plan is not None:
            self._publish_snapshot(plan)
        elif self.job_dir.is_dir():
            if self.replacing:
                # a consumer killed mid-write leaves its temporary part: the folder becomes the dataset, so drop it
                for entry in self.job_dir.iterdir():
                    if entry.name.startswith(TMP_PREFIX):
                        _remove(entry)
                if self.target.exists() or self.target.is_symlink():
                    _remove(self.aside)
                    os.replace(self.target, self.aside)
                    fault_point("file.publish")  # no dataset at the target: the old one is aside, the new staged
                os.replace(self.job_dir, self.target)
            else:
                self.target.mkdir(parents=True, exist_ok=True)
                job = self.job_dir.name
                for part in self._sorted_parts():
                    os.replace(part, self.target / f"part-{job}-{part.name[len('part-') :]}")
                    fault_point("file.publish")  # some parts appended, the others still staged
                _remove(self.job_dir)
            if self.config.fsync:
                _fsync_dir(self.target)
                _fsync_dir(self.target.parent)
            logger.info("file destination: published %s (%s)", self.target, self.context.sync_mode)
        _remove(self.aside)

    # ------------------------------------------------------------ merge and schema evolution (merge.py)

    @property
    def merging(self) -> bool:
        """``write_disposition: merge`` (a full refresh or a reset rebuilds the dataset from the job's rows by key)."""
        return self.config.write_disposition == "merge" and not self.streaming

    def _snapshot_plan(self) -> SchemaPlan | None:
        """The dataset's schema after this job when the job must publish a new snapshot (a merge, or rows that
        change the dataset's schema), else None: the parts are moved in as they are. Raises, before anything
        is published, on a change the policy refuses."""
        if self.streaming or (self.replacing and not self.merging) or not self.job_dir.is_dir():
            return None
        staged = [pq.read_schema(str(p)) for p in self._sorted_parts()]
        existing_files = [] if self.replacing else dataset_files(self.target)
        if not staged:
            return None  # nothing to add: the dataset stays as it is
        existing = [pq.read_schema(str(p)) for p in existing_files]
        staged_schema = fold_schemas(staged, "this job's rows")
        existing_schema = fold_schemas(existing, str(self.target)) if existing else None
        assert staged_schema is not None
        flag = self.config.deleted_flag
        if self.merging and flag and flag in staged_schema.names:  # before the schema's own checks, as elsewhere
            check_flag(flag, staged_schema.field(flag).type)
        plan = unify(existing_schema, staged_schema, self.config.schema_evolution, self.target)
        if self.merging:
            return plan
        uniform = all(same_columns(s, plan.schema) for s in staged + existing)
        return None if uniform else plan

    def _merge_spec(self, plan: SchemaPlan, parts: list[Path]) -> MergeSpec:
        if not self.merging:
            return MergeSpec(keys=None, cursor_field=None, deleted_flag=None)
        keys = primary_key(self.config.primary_key, [pq.read_schema(str(p)) for p in parts])
        names = set(plan.schema.names)
        missing = [k for k in keys if k not in names]
        if missing:
            raise StepFailed(
                f"destination.config.primary_key: {', '.join(missing)} not a column of the rows "
                f"({', '.join(plan.schema.names)}); nothing was published"
            )
        flag = self.config.deleted_flag
        if flag and flag not in names:
            raise StepFailed(
                f"destination.config.deleted_flag: {flag!r} is not a column of the rows "
                f"({', '.join(plan.schema.names)}); nothing was published"
            )
        if flag:
            check_flag(flag, plan.schema.field(flag).type)
        return MergeSpec(keys=keys, cursor_field=self.context.cursor_field, deleted_flag=flag)

    def _publish_snapshot(self, plan: SchemaPlan | None) -> None:
        """Build the dataset after the job in ``<job>.merged`` (complete, then renamed), drop the parts, swap it in.

        Each step leaves a state the next call recognises: a build cut short is redone from the same dataset and
        parts; once ``<job>.merged`` exists it is the whole truth (the parts go), and the swap is the full
        refresh's (the old dataset aside, the new one in, the old one deleted).
        """
        if not self.merged.exists():
            assert plan is not None
            parts = self._sorted_parts()
            spec = self._merge_spec(plan, parts)
            for change in plan.changes:
                logger.info("file destination: schema of %s: %s", self.target, change)
            self.schema_changes = list(plan.changes)
            building = self.merged.with_name(self.merged.name + ".tmp")
            _remove(building)
            building.mkdir(parents=True)
            result = build_snapshot(
                target=None if self.replacing else self.target,
                parts=parts,
                out=building,
                plan=plan,
                spec=spec,
                label=self.job_dir.name,
                fsync=self.config.fsync,
            )
            if self.config.fsync:
                _fsync_dir(building)
            os.replace(building, self.merged)
            logger.info(
                "file destination: %s %s: %d rows kept of %d, %d rows written, %d keys deleted "
                "(%d files linked, %d rewritten)",
                "merged into" if spec.keys else "new schema for",
                self.target,
                result.kept_rows,
                result.existing_rows,
                result.written_rows,
                result.deleted_keys,
                result.linked_files,
                result.rewritten_files,
            )
        _remove(self.job_dir)
        fault_point("file.merge_built")  # the new dataset is complete, the parts are gone, the old dataset in place
        if self.target.exists() or self.target.is_symlink():
            _remove(self.aside)
            os.replace(self.target, self.aside)
            fault_point("file.publish")  # no dataset at the target: the old one is aside, the new one staged
        os.replace(self.merged, self.target)
        if self.config.fsync:
            _fsync_dir(self.target.parent)
        logger.info("file destination: published %s (%s)", self.target, "merge" if self.merging else "incremental")
