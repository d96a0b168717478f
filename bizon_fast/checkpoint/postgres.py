"""The Postgres checkpoint backend: the tables of ``sqlite.py``, in the configured schema, shared safely.

Several pipelines, and several machines, may share one backend database, so unlike the embedded
backend every step is a real transaction and every write an upsert:

- The schema (``engine.backend.config.schema``) is created when missing -- bizon only checked that
  it existed and then wrote to the connection's default schema; we honour it. DDL runs under a
  transaction-level advisory lock, so two first runs creating the tables at once do not collide.
- At most one job of a pipeline is ``running``: a partial unique index enforces it. A supervisor
  holds a session-level advisory lock on the job it runs; the lock dies with its connection, so
  a ``running`` job whose lock is free belongs to a dead run and is superseded, while one whose
  lock is held belongs to a live run and starting the pipeline again fails with a clear message
  (two live supervisors on one job would interleave their batches).
- Resuming locks the job row (``SELECT ... FOR UPDATE``) while it is marked running again.
- A lost connection is re-opened and the operation retried (0.5, 1, 2 ... s, five times), then
  fails with a one-line error; every operation is idempotent, so a retry after a commit whose
  acknowledgement was lost changes nothing (an attempt counter may count one extra attempt).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from bizon_fast.checkpoint.base import JOB_COLUMNS, CheckpointBackend, JobRecord, JobStatus, job_from_row
from bizon_fast.connectors import pgconn
from bizon_fast.cursor import Cursor, decode_cursor, encode_cursor
from bizon_fast.errors import UserError

log = logging.getLogger("bizon_fast.checkpoint.postgres")

T = TypeVar("T")
KEY = "engine.backend"
#: how long a resumed job waits for the lock a dead predecessor's session still holds
LOCK_WAIT_S = 10.0

_DDL = """
CREATE TABLE IF NOT EXISTS {s}.bizon_fast_jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source_name TEXT NOT NULL,
    stream_name TEXT NOT NULL,
    sync_mode TEXT NOT NULL,
    status TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    total_rows BIGINT,
    error TEXT,
    attempt INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS bizon_fast_jobs_pipeline ON {s}.bizon_fast_jobs (name, source_name, stream_name, status);
CREATE UNIQUE INDEX IF NOT EXISTS bizon_fast_jobs_one_running ON {s}.bizon_fast_jobs (name, source_name, stream_name)
    WHERE status = 'running';
CREATE TABLE IF NOT EXISTS {s}.bizon_fast_cursors (
    job_id TEXT NOT NULL,
    split_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    done BOOLEAN NOT NULL,
    cursor BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, split_id)
);
CREATE TABLE IF NOT EXISTS {s}.bizon_fast_watermarks (
    name TEXT NOT NULL,
    source_name TEXT NOT NULL,
    stream_name TEXT NOT NULL,
    value BYTEA NOT NULL,
    job_id TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, source_name, stream_name)
);
"""


class PostgresBackend(CheckpointBackend):
    def __init__(self, details: Any) -> None:
        """``details``: a ``PostgresBackendDetails`` (dsn or host/port/database/username/password, schema)."""
        self.info = pgconn.conninfo_of(details)
        self.schema: str = details.schema_name
        self.conn: Any = None
        self.job_lock: str | None = None  # the job whose session lock this connection holds
        #: distributed roles share a job: each supervisor holds its lock shared, a plain run exclusively
        self.shared_job_lock = False

    # ------------------------------------------------------------ connection

    def open(self) -> None:
        from psycopg import sql

        self.conn = pgconn.connect(self.info, key=KEY)
        self.s = sql.Identifier(self.schema)

        def create(cur: Any) -> None:
            # DDL only when something is missing: CREATE ... IF NOT EXISTS still needs the privilege to create
            present = cur.execute(
                "SELECT count(to_regclass(format('%%I.%%I', %s::text, t))) FROM unnest(%s::text[]) t",
                (self.schema, ["bizon_fast_jobs", "bizon_fast_cursors", "bizon_fast_watermarks"]),
            ).fetchone()[0]
            if present == 3:
                return
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (pgconn.lock_key("bizon_fast_checkpoint_ddl"),))
            if not cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone():
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self.s))
            cur.execute(sql.SQL(_DDL).format(s=self.s))

        self._tx(create, "creating the checkpoint tables")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()  # also releases the job's session lock
            self.conn = None
            self.job_lock = None

    def _reconnect(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = pgconn.connect(self.info, key=KEY)
        if self.job_lock is not None:
            job, self.job_lock = self.job_lock, None
            self._lock_job(job)

    def _tx(self, fn: Callable[[Any], T], what: str) -> T:
        """``fn(cursor)`` in one transaction, retried on a new connection when the old one is lost."""
        assert self.conn is not None, "backend not open"

        def attempt() -> T:
            with self.conn.transaction(), self.conn.cursor() as cur:
                return fn(cur)

        what = f"{KEY} ({pgconn.where(self.info)}): {what}"
        return pgconn.with_retries(attempt, reconnect=self._reconnect, what=what, conn=lambda: self.conn)

    def _q(self, text: str) -> Any:
        """A statement with ``{s}`` standing for the quoted schema."""
        from psycopg import sql

        return sql.SQL(text).format(s=self.s)

    # ------------------------------------------------------------ job locks

    def _lock_job(self, job_id: str) -> None:
        """Take the session lock that says "a live supervisor runs this job"; UserError if another holds it.

        A dead predecessor's lock is released when the server notices its connection is gone, which
        can take a moment after a kill: wait up to ``LOCK_WAIT_S`` for it.
        """
        if self.job_lock == job_id:
            return
        key = pgconn.lock_key("bizon_fast_job", job_id)

        def attempt() -> None:
            deadline = time.monotonic() + LOCK_WAIT_S
            take = "pg_try_advisory_lock_shared" if self.shared_job_lock else "pg_try_advisory_lock"
            while True:
                got = self.conn.execute(f"SELECT {take}(%s)", (key,)).fetchone()[0]
                self.conn.commit()
                if got:
                    self.job_lock = job_id
                    return
                if time.monotonic() >= deadline:
                    raise UserError(
                        f"{KEY}: job {job_id} is being run by another live bizon-fast process "
                        f"(it holds the job's lock in {pgconn.where(self.info)}); wait for it or stop it"
                    )
                time.sleep(0.25)

        pgconn.with_retries(
            attempt, reconnect=self._reconnect, what=f"{KEY}: locking job {job_id}", conn=lambda: self.conn
        )

    def _supersede_dead_running(self, cur: Any, name: str, source_name: str, stream_name: str, keep: str) -> None:
        """Cancel ``running`` jobs of the pipeline whose supervisor is gone; fail if one is alive."""
        rows = cur.execute(
            self._q(
                "SELECT id FROM {s}.bizon_fast_jobs WHERE name=%s AND source_name=%s AND stream_name=%s"
                " AND status='running' AND id<>%s FOR UPDATE"
            ),
            (name, source_name, stream_name, keep),
        ).fetchall()
        for (other,) in rows:
            if self.shared_job_lock and self.job_lock == other:
                continue
            free = cur.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (pgconn.lock_key("bizon_fast_job", other),)
            ).fetchone()[0]
            if not free:
                raise UserError(
                    f"{KEY}: pipeline '{name}' ({source_name}/{stream_name}) is already running as job {other} "
                    "in another live bizon-fast process"
                )
            log.warning("job %s was left running by a dead run: marking it cancelled", other)
            cur.execute(
                self._q(
                    "UPDATE {s}.bizon_fast_jobs SET status='cancelled', error='superseded (its run died)',"
                    " updated_at=now() WHERE id=%s"
                ),
                (other,),
            )

    # ------------------------------------------------------------ locks shared by distributed roles

    @contextlib.contextmanager
    def pipeline_lock(self, *parts: str) -> Iterator[None]:
        """Serialize find-or-create of a job between supervisors started at once on several machines."""
        key = pgconn.lock_key("bizon_fast_pipeline", *parts)
        self.conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        self.conn.commit()
        try:
            yield
        finally:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            self.conn.commit()

    def try_lock(self, *parts: str, shared: bool = False) -> bool:
        """A session advisory lock named by ``parts``, without waiting; held until ``unlock`` or the end."""
        fn = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        got = self.conn.execute(f"SELECT {fn}(%s)", (pgconn.lock_key("bizon_fast_role", *parts),)).fetchone()[0]
        self.conn.commit()
        return bool(got)

    def unlock(self, *parts: str, shared: bool = False) -> None:
        fn = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
        self.conn.execute(f"SELECT {fn}(%s)", (pgconn.lock_key("bizon_fast_role", *parts),))
        self.conn.commit()

    # ------------------------------------------------------------ jobs

    def _one_job(self, where: str, params: tuple) -> JobRecord | None:
        def fn(cur: Any) -> JobRecord | None:
            row = cur.execute(self._q(f"SELECT {JOB_COLUMNS} FROM {{s}}.bizon_fast_jobs {where}"), params).fetchone()
            return job_from_row(row) if row else None

        return self._tx(fn, "reading a job")

    def find_unfinished_job(self, name: str, source_name: str, stream_name: str) -> JobRecord | None:
        return self._one_job(
            "WHERE name=%s AND source_name=%s AND stream_name=%s AND status IN ('running', 'failed', 'cancelled')"
            " ORDER BY created_at DESC LIMIT 1",
            (name, source_name, stream_name),
        )

    def last_succeeded_job(self, name: str, source_name: str, stream_name: str) -> JobRecord | None:
        return self._one_job(
            "WHERE name=%s AND source_name=%s AND stream_name=%s AND status='succeeded'"
            " ORDER BY created_at DESC LIMIT 1",
            (name, source_name, stream_name),
        )

    def get_job(self, job_id: str) -> JobRecord | None:
        return self._one_job("WHERE id=%s", (job_id,))

    def create_job(
        self, *, name: str, source_name: str, stream_name: str, sync_mode: str, fingerprint: str, total_rows: int | None
    ) -> JobRecord:
        job_id = uuid.uuid4().hex  # chosen once: a retried insert of the same id is a no-op
        self._lock_job(job_id)

        def fn(cur: Any) -> None:
            self._supersede_dead_running(cur, name, source_name, stream_name, job_id)
            cur.execute(
                self._q(
                    f"INSERT INTO {{s}}.bizon_fast_jobs ({JOB_COLUMNS})"
                    " VALUES (%s,%s,%s,%s,%s,'running',%s,now(),now(),%s,NULL,1) ON CONFLICT DO NOTHING"
                ),
                (job_id, name, source_name, stream_name, sync_mode, fingerprint, total_rows),
            )

        self._tx(fn, "creating a job")
        job = self.get_job(job_id)
        if job is None:  # lost to a concurrent start between our check and our insert
            raise UserError(f"{KEY}: pipeline '{name}' was started by another bizon-fast process at the same time")
        return job

    def set_job_status(self, job_id: str, status: JobStatus, error: str | None = None) -> None:
        self._tx(
            lambda cur: cur.execute(
                self._q("UPDATE {s}.bizon_fast_jobs SET status=%s, error=%s, updated_at=now() WHERE id=%s"),
                (str(status), error, job_id),
            ),
            "updating a job",
        )

    def start_attempt(self, job_id: str) -> JobRecord:
        self._lock_job(job_id)

        def fn(cur: Any) -> None:
            row = cur.execute(
                self._q("SELECT name, source_name, stream_name FROM {s}.bizon_fast_jobs WHERE id=%s FOR UPDATE"),
                (job_id,),
            ).fetchone()
            if row is None:
                raise UserError(f"{KEY}: job {job_id} does not exist")
            self._supersede_dead_running(cur, *row, keep=job_id)
            cur.execute(
                self._q(
                    "UPDATE {s}.bizon_fast_jobs SET status='running', error=NULL, attempt=attempt+1, updated_at=now()"
                    " WHERE id=%s"
                ),
                (job_id,),
            )

        from psycopg import errors

        try:
            self._tx(fn, "resuming a job")
        except errors.UniqueViolation:
            raise UserError(f"{KEY}: another run of job {job_id}'s pipeline started at the same time") from None
        job = self.get_job(job_id)
        assert job is not None
        return job

    # ------------------------------------------------------------ cursors and watermarks

    def load_cursors(self, job_id: str) -> dict[str, Cursor]:
        def fn(cur: Any) -> list[tuple]:
            query = self._q("SELECT cursor FROM {s}.bizon_fast_cursors WHERE job_id=%s")
            return cur.execute(query, (job_id,)).fetchall()

        cursors = [decode_cursor(bytes(r[0])) for r in self._tx(fn, "loading cursors")]
        return {c.split_id: c for c in cursors}

    def commit_cursors(self, job_id: str, cursors: list[Cursor]) -> None:
        if not cursors:
            return
        rows = [(job_id, c.split_id, c.seq, c.rows, c.done, encode_cursor(c)) for c in cursors]

        def fn(cur: Any) -> None:
            cur.executemany(
                self._q(
                    "INSERT INTO {s}.bizon_fast_cursors (job_id, split_id, seq, rows, done, cursor, updated_at)"
                    " VALUES (%s,%s,%s,%s,%s,%s,now()) ON CONFLICT (job_id, split_id) DO UPDATE SET seq=excluded.seq,"
                    " rows=excluded.rows, done=excluded.done, cursor=excluded.cursor, updated_at=excluded.updated_at"
                    # several machines commit a job's cursors: a late, stale commit never moves one back
                    " WHERE NOT {s}.bizon_fast_cursors.done AND {s}.bizon_fast_cursors.seq <= excluded.seq"
                ),
                rows,
            )

        self._tx(fn, "committing cursors")

    def get_watermark(self, name: str, source_name: str, stream_name: str) -> bytes | None:
        def fn(cur: Any) -> tuple | None:
            return cur.execute(
                self._q(
                    "SELECT value FROM {s}.bizon_fast_watermarks WHERE name=%s AND source_name=%s AND stream_name=%s"
                ),
                (name, source_name, stream_name),
            ).fetchone()

        row = self._tx(fn, "reading the watermark")
        return bytes(row[0]) if row else None

    def set_watermark(self, name: str, source_name: str, stream_name: str, value: bytes, job_id: str) -> None:
        self._tx(
            lambda cur: cur.execute(
                self._q(
                    "INSERT INTO {s}.bizon_fast_watermarks (name, source_name, stream_name, value, job_id, updated_at)"
                    " VALUES (%s,%s,%s,%s,%s,now()) ON CONFLICT (name, source_name, stream_name) DO UPDATE SET"
                    " value=excluded.value, job_id=excluded.job_id, updated_at=excluded.updated_at"
                ),
                (name, source_name, stream_name, value, job_id),
            ),
            "storing the watermark",
        )
