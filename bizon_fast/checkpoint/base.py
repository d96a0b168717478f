"""The checkpoint backend: jobs and per-split cursors.

Only the supervisor talks to it (workers report to the supervisor), so an embedded in-memory
database works across the whole process tree and there is a single writer.
"""

from __future__ import annotations

import os
import socket
import sys
from abc import ABC, abstractmethod
from collections.abc import Collection
from datetime import UTC, datetime
from enum import StrEnum

import msgspec

from bizon_fast.cursor import Cursor
from bizon_fast.errors import UserError


class JobStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobRecord(msgspec.Struct, kw_only=True):
    id: str
    name: str
    source_name: str
    stream_name: str
    sync_mode: str
    status: str
    fingerprint: str  # hash of the source config: a changed config never resumes an old job
    created_at: datetime
    updated_at: datetime
    total_rows: int | None = None
    error: str | None = None
    attempt: int = 1
    #: worker restarts over all the job's attempts, written with each final status (0 from its creation
    #: until then, so a run killed outright leaves its earlier count; None: the job predates the column)
    restarts: int | None = None
    #: when the latest attempt started (None: the job predates the column); ``created_at`` is the first's
    started_at: datetime | None = None
    #: the schema changes the destination applied when the job published, one per line (None: none, or the
    #: job predates the column)
    schema_changes: str | None = None
    #: rows committed for the job, all attempts (the sum of its splits' cursors): filled by ``list_jobs``
    #: only, since the run itself keeps the number in its commit log. Not ``total_rows``: that is the
    #: source's planned row count, stored when the job is created (it drives the progress bar)
    committed_rows: int | None = None


#: the column order of the jobs table that ``job_from_row`` reads, shared by the SQL backends
JOB_COLUMNS = (
    "id, name, source_name, stream_name, sync_mode, status, fingerprint, created_at, updated_at, total_rows, error,"
    " attempt, restarts, started_at, schema_changes"
)
#: columns added to the jobs table after its first release: ``open`` adds them to an older table, and a
#: reader that must not alter anything (``open_for_reading``) reads NULL where a table still lacks them
ADDED_JOB_COLUMNS = ("restarts", "started_at", "schema_changes")


def job_select(present: Collection[str], alias: str = "") -> str:
    """``JOB_COLUMNS`` as a select list for a jobs table that may predate ``ADDED_JOB_COLUMNS``.

    ``present``: the table's column names; a missing added column reads as NULL. ``alias``: the table's
    alias in the query (``j``), prefixed to every column.
    """
    prefix = f"{alias}." if alias else ""
    names = [c.strip() for c in JOB_COLUMNS.split(",")]
    return ", ".join(f"NULL AS {c}" if c in ADDED_JOB_COLUMNS and c not in present else f"{prefix}{c}" for c in names)


def _as_time(value: datetime | str | None) -> datetime | None:
    """A stored time as a datetime: sqlite keeps ISO text, the other backends return datetimes."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def job_from_row(row: tuple) -> JobRecord:
    """A jobs-table row (in ``JOB_COLUMNS`` order, then optionally the committed rows) as a JobRecord."""
    (id_, name, source, stream, mode, status, fp, created, updated, total, error, attempt, restarts, started) = row[:14]
    schema_changes = row[14] if len(row) > 14 else None
    return JobRecord(
        id=id_,
        name=name,
        source_name=source,
        stream_name=stream,
        sync_mode=mode,
        status=status,
        fingerprint=fp,
        created_at=_as_time(created),
        updated_at=_as_time(updated),
        total_rows=total,
        error=error,
        attempt=attempt,
        restarts=restarts,
        started_at=_as_time(started),
        schema_changes=schema_changes,
        committed_rows=int(row[15]) if len(row) > 15 and row[15] is not None else None,
    )


class CommittedCursor(msgspec.Struct, kw_only=True):
    """A split's committed cursor as ``bizon-fast jobs show`` lists it: the cursor and when it was committed."""

    cursor: Cursor
    updated_at: datetime


class RunHolder(msgspec.Struct, kw_only=True):
    """Who holds a pipeline's run lock: what a refused run prints so the user can find the holder."""

    pid: int | None = None
    host: str | None = None
    started: str | None = None  # ISO time the holder took the lock (or connected, for Postgres)
    command: str | None = None  # its command line, when the lock can carry it
    detail: str | None = None  # where the lock lives, or more about the holder (its session, lease expiry)

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "another bizon-fast process"
        if self.host:
            who += f" on host {self.host}"
        if self.started:
            who += f", started {self.started}"
        notes = [f"command: {self.command}"] if self.command else []
        notes += [self.detail] if self.detail else []
        return who + (f" ({'; '.join(notes)})" if notes else "")

    def surely_dead(self) -> bool:
        """True only when the holder's pid is gone on this very host: its lock is about to be released.

        Anything uncertain (another host, no pid, a pid we may not signal) counts as alive, so a refusal
        is never skipped on a guess.
        """
        if self.pid is None or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def this_holder() -> RunHolder:
    """This process as a run-lock holder: pid, host, start time and command line (one line, bounded)."""
    command = " ".join(" ".join(sys.argv).split())[:200]
    return RunHolder(
        pid=os.getpid(),
        host=socket.gethostname(),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        command=command,
    )


def run_refused(name: str, source_name: str, stream_name: str, holder: RunHolder) -> UserError:
    """The one-line refusal of a second live run of a pipeline, naming the holder of its run lock."""
    return UserError(
        f"engine.backend: pipeline '{name}' ({source_name}/{stream_name}) is already running: {holder.describe()}."
        " Two runs of one pipeline would interleave their writes; wait for it to finish or stop it, then run again"
    )


class CheckpointBackend(ABC):
    @abstractmethod
    def open(self) -> None:
        """Connect and create the tables if needed."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect; also releases the run lock taken by ``hold_run``."""

    def location(self) -> str:
        """Where the jobs and cursors live, as ``bizon-fast check`` names it (never a password)."""
        return type(self).__name__

    def exists(self) -> bool:
        """Whether anything may be stored yet: a dry run asks before ``open`` so that it creates nothing."""
        return True

    def check(self) -> str:
        """``bizon-fast check``: open and close the backend -- without ``hold_run``, so a live run of the
        pipeline is not disturbed -- and say where it is; raises what ``open`` raises."""
        self.open()
        try:
            return self.location()
        finally:
            self.close()

    def hold_run(self, name: str, source_name: str, stream_name: str, *, shared: bool = False) -> None:
        """Claim the pipeline for this process until ``close`` (or its death): one live run per pipeline.

        Two live runs of one pipeline would both write its destination and its cursors, and the
        published data would be a mix of both (or one would resume the other's job under its feet).
        The supervisor calls this right after ``open``, before it reads or writes any job, and a
        second run is refused at once with a ``UserError`` naming the holder (``run_refused``).
        ``shared``: broker roles on several machines join one run; they hold the claim shared, which
        excludes only exclusive holders (a plain run).

        The default takes no lock and lets runs overlap: a backend (a plugin, say) that has no way to
        see other processes cannot exclude them, and refusing every run would make it unusable. The
        built-in backends all override it.
        """

    @abstractmethod
    def find_unfinished_job(self, name: str, source_name: str, stream_name: str) -> JobRecord | None:
        """The newest job of this pipeline that is running, failed or cancelled (a candidate to resume)."""

    @abstractmethod
    def create_job(
        self, *, name: str, source_name: str, stream_name: str, sync_mode: str, fingerprint: str, total_rows: int | None
    ) -> JobRecord: ...

    @abstractmethod
    def set_job_status(
        self,
        job_id: str,
        status: JobStatus,
        error: str | None = None,
        *,
        restarts: int | None = None,
        schema_changes: str | None = None,
    ) -> None:
        """Record the job's status (and error); ``restarts``: the worker restarts of all its attempts so far,
        written with a final status (None leaves the recorded count as it is); ``schema_changes``: the
        destination's schema changes at publish, one per line (None leaves the recorded value)."""

    @abstractmethod
    def get_job(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    def open_for_reading(self) -> bool:
        """Connect to read the job history (``bizon-fast jobs``); False when the backend holds no jobs table.

        Unlike ``open`` it creates nothing (no file, schema, table or column: a pipeline that never ran
        leaves no trace for having been looked at) and it takes no run lock, so it answers while a run
        writes and never delays one. ``close`` disconnects.
        """

    @abstractmethod
    def list_jobs(self, name: str | None, limit: int) -> list[JobRecord]:
        """The newest ``limit`` jobs of pipeline ``name`` (of every pipeline when None), newest first, each
        with its ``committed_rows``. Works after ``open`` or ``open_for_reading``."""

    @abstractmethod
    def job_cursors(self, job_id: str) -> list[CommittedCursor]:
        """The committed cursor of each split of the job, by split id, with the time of its last commit."""

    @abstractmethod
    def start_attempt(self, job_id: str) -> JobRecord:
        """Mark a resumed job running again and count the attempt."""

    @abstractmethod
    def load_cursors(self, job_id: str) -> dict[str, Cursor]: ...

    @abstractmethod
    def commit_cursors(self, job_id: str, cursors: list[Cursor]) -> None:
        """Upsert the cursors of several splits in one transaction."""

    @abstractmethod
    def last_succeeded_job(self, name: str, source_name: str, stream_name: str) -> JobRecord | None: ...

    @abstractmethod
    def get_watermark(self, name: str, source_name: str, stream_name: str) -> bytes | None:
        """The incremental watermark (msgpack) of the pipeline, advanced only when a job succeeds."""

    @abstractmethod
    def set_watermark(self, name: str, source_name: str, stream_name: str, value: bytes, job_id: str) -> None: ...
