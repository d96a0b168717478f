"""The checkpoint backend: jobs and per-split cursors.

Only the supervisor talks to it (workers report to the supervisor), so an embedded in-memory
database works across the whole process tree and there is a single writer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from enum import StrEnum

import msgspec

from bizon_fast.cursor import Cursor


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


class CheckpointBackend(ABC):
    @abstractmethod
    def open(self) -> None:
        """Connect and create the tables if needed."""

    @abstractmethod
    def close(self) -> None: ...

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
