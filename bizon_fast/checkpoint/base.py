"""The checkpoint backend: jobs and per-split cursors.

Only the supervisor talks to it (workers report to the supervisor), so an embedded in-memory
database works across the whole process tree and there is a single writer.
"""

from __future__ import annotations

import os
import socket
import sys
from abc import ABC, abstractmethod
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


#: the column order of the jobs table that ``job_from_row`` reads, shared by the SQL backends
JOB_COLUMNS = (
    "id, name, source_name, stream_name, sync_mode, status, fingerprint, created_at, updated_at, total_rows, error,"
    " attempt"
)


def job_from_row(row: tuple) -> JobRecord:
    """A jobs-table row (in ``JOB_COLUMNS`` order) as a JobRecord; sqlite stores the times as ISO text."""
    (id_, name, source, stream, mode, status, fp, created, updated, total, error, attempt) = row
    if isinstance(created, str):
        created, updated = datetime.fromisoformat(created), datetime.fromisoformat(updated)
    return JobRecord(
        id=id_,
        name=name,
        source_name=source,
        stream_name=stream,
        sync_mode=mode,
        status=status,
        fingerprint=fp,
        created_at=created,
        updated_at=updated,
        total_rows=total,
        error=error,
        attempt=attempt,
    )


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
    def set_job_status(self, job_id: str, status: JobStatus, error: str | None = None) -> None: ...

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
