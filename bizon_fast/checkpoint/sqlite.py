"""The embedded checkpoint backend (the default): one sqlite file, or memory for ``sqlite_in_memory``.

Only the supervisor opens it, so ``sqlite_in_memory`` works for a whole multiprocess run (bizon's
opened one empty database per process). WAL + synchronous=NORMAL survives a process crash at any
instant; that is the failure this backend promises to survive.

One live run per pipeline: ``hold_run`` takes an OS file lock (``runlock.py``) that the kernel drops
when the process dies, beside the database file, or in a per-user temp directory for
``sqlite_in_memory`` (each run has its own database there, but they would share a destination).
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bizon_fast.checkpoint.base import (
    ADDED_JOB_COLUMNS,
    JOB_COLUMNS,
    CheckpointBackend,
    CommittedCursor,
    JobRecord,
    JobStatus,
    job_from_row,
    job_select,
)
from bizon_fast.checkpoint.runlock import FileRunLock, serialized, user_lock_dir
from bizon_fast.cursor import Cursor, decode_cursor, encode_cursor
from bizon_fast.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS bizon_fast_jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source_name TEXT NOT NULL,
    stream_name TEXT NOT NULL,
    sync_mode TEXT NOT NULL,
    status TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    total_rows INTEGER,
    error TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    restarts INTEGER,
    started_at TEXT,
    schema_changes TEXT
);
CREATE INDEX IF NOT EXISTS bizon_fast_jobs_pipeline ON bizon_fast_jobs (name, source_name, stream_name, status);
CREATE TABLE IF NOT EXISTS bizon_fast_cursors (
    job_id TEXT NOT NULL,
    split_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    done INTEGER NOT NULL,
    cursor BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (job_id, split_id)
);
CREATE TABLE IF NOT EXISTS bizon_fast_watermarks (
    name TEXT NOT NULL,
    source_name TEXT NOT NULL,
    stream_name TEXT NOT NULL,
    value BLOB NOT NULL,
    job_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (name, source_name, stream_name)
);
"""
#: the types of ``ADDED_JOB_COLUMNS``, for ``ALTER TABLE`` on a database created before them
ADDED_COLUMN_TYPES = {"restarts": "INTEGER", "started_at": "TEXT", "schema_changes": "TEXT"}


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SqliteBackend(CheckpointBackend):
    def __init__(self, database: str | None) -> None:
        """``database`` is bizon's name (file ``{database}.sqlite3``); None keeps everything in memory."""
        if database is None:
            self.path = ":memory:"
        else:
            self.path = database if database.endswith((".sqlite3", ".db", ".sqlite")) else f"{database}.sqlite3"
        self.conn: sqlite3.Connection | None = None
        self.run_lock: FileRunLock | None = None
        #: the jobs table's columns, as ``list_jobs`` selects them (all of them once ``open`` migrated it)
        self.job_columns: set[str] = set(ADDED_JOB_COLUMNS)

    def location(self) -> str:
        return "in memory (kept for the run only)" if self.path == ":memory:" else str(Path(self.path).absolute())

    def exists(self) -> bool:
        return self.path != ":memory:" and Path(self.path).exists()

    def lock_dir(self) -> Path:
        """Where the run locks of this database live: ``<database file>.locks``, or the user's temp dir."""
        if self.path == ":memory:":
            return user_lock_dir()
        return Path(f"{self.path}.locks").absolute()

    def hold_run(self, name: str, source_name: str, stream_name: str, *, shared: bool = False) -> None:
        """An exclusive (or shared) ``flock`` on the pipeline's lock file, held until ``close`` or death."""
        if self.run_lock is None:
            self.run_lock = FileRunLock(self.lock_dir())
        self.run_lock.acquire(name, source_name, stream_name, shared=shared)

    def _fail(self, exc: sqlite3.Error) -> UserError:
        if "locked" in str(exc):
            return UserError(f"engine.backend: sqlite database {self.path} is locked by another process ({exc})")
        return UserError(f"engine.backend: cannot use sqlite database {self.path}: {exc}")

    def open(self) -> None:
        try:
            if self.path == ":memory:":
                self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self.conn.executescript(SCHEMA)
                return
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with serialized(self.lock_dir()):  # runs started together take turns setting the file up
                # private from the first byte (cursors, errors); sqlite gives -wal and -shm the file's mode
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
                self.conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
                self._add_missing_columns()  # still serialized: two runs never add a column twice
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        except OSError as exc:
            raise UserError(f"engine.backend: cannot create sqlite database {self.path}: {exc}") from None

    def _present_job_columns(self) -> set[str]:
        assert self.conn is not None
        return {row[1] for row in self.conn.execute("PRAGMA table_info(bizon_fast_jobs)")}

    def _add_missing_columns(self) -> None:
        """A database written by an older bizon-fast lacks ``ADDED_JOB_COLUMNS``: add them (NULL in old rows)."""
        assert self.conn is not None
        present = self._present_job_columns()
        for column in ADDED_JOB_COLUMNS:
            if column not in present:
                self.conn.execute(f"ALTER TABLE bizon_fast_jobs ADD COLUMN {column} {ADDED_COLUMN_TYPES[column]}")

    def open_for_reading(self) -> bool:
        """Read-only (``mode=ro``): no file, table or column is created, and the run lock is not touched.

        WAL lets this reader see the last committed state while a run writes, without blocking it.
        """
        if self.path == ":memory:" or not Path(self.path).is_file():
            return False
        try:
            uri = f"{Path(self.path).absolute().as_uri()}?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None, check_same_thread=False)
            tables = self.conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type='table'"
                " AND name IN ('bizon_fast_jobs', 'bizon_fast_cursors')"
            ).fetchone()[0]
            if tables < 2:
                return False
            self.job_columns = self._present_job_columns()
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.run_lock is not None:  # after the last write: the next run sees everything this one did
            self.run_lock.release()
            self.run_lock = None

    def _exec(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        assert self.conn is not None, "backend not open"
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise self._fail(exc) from None

    def find_unfinished_job(self, name: str, source_name: str, stream_name: str) -> JobRecord | None:
        row = self._exec(
            f"SELECT {JOB_COLUMNS} FROM bizon_fast_jobs WHERE name=? AND source_name=? AND stream_name=?"
            " AND status IN ('running', 'failed', 'cancelled') ORDER BY created_at DESC LIMIT 1",
            (name, source_name, stream_name),
        ).fetchone()
        return job_from_row(row) if row else None

    def last_succeeded_job(self, name: str, source_name: str, stream_name: str) -> JobRecord | None:
        row = self._exec(
            f"SELECT {JOB_COLUMNS} FROM bizon_fast_jobs WHERE name=? AND source_name=? AND stream_name=?"
            " AND status='succeeded' ORDER BY created_at DESC LIMIT 1",
            (name, source_name, stream_name),
        ).fetchone()
        return job_from_row(row) if row else None

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self._exec(f"SELECT {job_select(self.job_columns)} FROM bizon_fast_jobs WHERE id=?", (job_id,)).fetchone()
        return job_from_row(row) if row else None

    def create_job(
        self, *, name: str, source_name: str, stream_name: str, sync_mode: str, fingerprint: str, total_rows: int | None
    ) -> JobRecord:
        job_id = uuid.uuid4().hex
        now = _now()
        self._exec(
            f"INSERT INTO bizon_fast_jobs ({JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (job_id, name, source_name, stream_name, sync_mode, JobStatus.RUNNING, fingerprint, now, now, total_rows)
            + (None, 1, 0, now, None),
        )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def set_job_status(
        self,
        job_id: str,
        status: JobStatus,
        error: str | None = None,
        *,
        restarts: int | None = None,
        schema_changes: str | None = None,
    ) -> None:
        self._exec(
            "UPDATE bizon_fast_jobs SET status=?, error=?, updated_at=?, restarts=COALESCE(?, restarts),"
            " schema_changes=COALESCE(?, schema_changes) WHERE id=?",
            (str(status), error, _now(), restarts, schema_changes, job_id),
        )

    def start_attempt(self, job_id: str) -> JobRecord:
        now = _now()
        self._exec(
            "UPDATE bizon_fast_jobs SET status='running', error=NULL, attempt=attempt+1, updated_at=?, started_at=?"
            " WHERE id=?",
            (now, now, job_id),
        )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def list_jobs(self, name: str | None, limit: int) -> list[JobRecord]:
        rows = self._exec(
            f"SELECT {job_select(self.job_columns, 'j')}, (SELECT SUM(c.rows) FROM bizon_fast_cursors c"
            " WHERE c.job_id = j.id) FROM bizon_fast_jobs j WHERE ? IS NULL OR j.name = ?"
            " ORDER BY j.created_at DESC, j.id LIMIT ?",
            (name, name, limit),
        ).fetchall()
        return [job_from_row(r) for r in rows]

    def job_cursors(self, job_id: str) -> list[CommittedCursor]:
        rows = self._exec(
            "SELECT cursor, updated_at FROM bizon_fast_cursors WHERE job_id=? ORDER BY split_id", (job_id,)
        ).fetchall()
        return [CommittedCursor(cursor=decode_cursor(r[0]), updated_at=datetime.fromisoformat(r[1])) for r in rows]

    def load_cursors(self, job_id: str) -> dict[str, Cursor]:
        rows = self._exec("SELECT cursor FROM bizon_fast_cursors WHERE job_id=?", (job_id,)).fetchall()
        cursors = [decode_cursor(r[0]) for r in rows]
        return {c.split_id: c for c in cursors}

    def commit_cursors(self, job_id: str, cursors: list[Cursor]) -> None:
        if not cursors:
            return
        now = _now()
        assert self.conn is not None
        try:
            with self.conn:  # one transaction
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(
                    "INSERT INTO bizon_fast_cursors (job_id, split_id, seq, rows, done, cursor, updated_at)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT (job_id, split_id) DO UPDATE SET seq=excluded.seq,"
                    " rows=excluded.rows, done=excluded.done, cursor=excluded.cursor, updated_at=excluded.updated_at",
                    [(job_id, c.split_id, c.seq, c.rows, int(c.done), encode_cursor(c), now) for c in cursors],
                )
        except sqlite3.OperationalError as exc:
            raise self._fail(exc) from None

    def get_watermark(self, name: str, source_name: str, stream_name: str) -> bytes | None:
        row = self._exec(
            "SELECT value FROM bizon_fast_watermarks WHERE name=? AND source_name=? AND stream_name=?",
            (name, source_name, stream_name),
        ).fetchone()
        return row[0] if row else None

    def set_watermark(self, name: str, source_name: str, stream_name: str, value: bytes, job_id: str) -> None:
        self._exec(
            "INSERT INTO bizon_fast_watermarks (name, source_name, stream_name, value, job_id, updated_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (name, source_name, stream_name) DO UPDATE SET value=excluded.value,"
            " job_id=excluded.job_id, updated_at=excluded.updated_at",
            (name, source_name, stream_name, value, job_id, _now()),
        )
