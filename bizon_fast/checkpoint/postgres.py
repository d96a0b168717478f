"""The Postgres checkpoint backend: the tables of ``sqlite.py``, in the configured schema, shared safely.

Several pipelines, and several machines, may share one backend database, so unlike the embedded
backend every step is a real transaction and every write an upsert:

- The schema (``engine.backend.config.schema``) is created when missing -- bizon only checked that
  it existed and then wrote to the connection's default schema; we honour it. DDL runs under a
  transaction-level advisory lock, so two first runs creating the tables at once do not collide.
- One live run per pipeline: ``hold_run`` takes a session-level advisory lock on the pipeline
  (shared by the broker roles of one run, exclusive for a plain run) without waiting, and a refused
  run names the holder from ``pg_locks`` and ``pg_stat_activity`` (the backend connection's
  ``application_name`` carries its pid and host). The lock dies with the session, so a killed run
  frees it; it is taken again on a new connection after a lost one.
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
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from bizon_fast.checkpoint.base import (
    ADDED_JOB_COLUMNS,
    JOB_COLUMNS,
    CheckpointBackend,
    CommittedCursor,
    JobRecord,
    JobStatus,
    RunHolder,
    job_from_row,
    job_select,
    run_refused,
)
from bizon_fast.clients import postgres as pgconn
from bizon_fast.cursor import Cursor, decode_cursor, encode_cursor
from bizon_fast.errors import JobFailed, UserError

log = logging.getLogger("bizon_fast.checkpoint.postgres")

T = TypeVar("T")
KEY = "engine.backend"
#: how long a resumed job waits for the lock a dead predecessor's session still holds
LOCK_WAIT_S = 10.0
#: how long a run waits for the run lock of a predecessor that is dead on this host (its session is
#: dropped a moment after the kill); a live holder, or one on another host, is refused at once
RUN_LOCK_GRACE_S = 2.0
_APP_NAME = re.compile(r"^bizon-fast pid=(\d+) id=\w+ host=(\S*)")

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
    attempt INTEGER NOT NULL DEFAULT 1,
    restarts INTEGER,
    started_at TIMESTAMPTZ,
    schema_changes TEXT
);
-- a jobs table created before these columns existed gets them here (NULL in its old rows)
ALTER TABLE {s}.bizon_fast_jobs ADD COLUMN IF NOT EXISTS restarts INTEGER,
    ADD COLUMN IF NOT EXISTS started_at TIMESTAMPTZ, ADD COLUMN IF NOT EXISTS schema_changes TEXT;
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
        self.run_lock: tuple[tuple[str, str, str], bool] | None = None  # (pipeline key, shared) held
        #: shown in pg_stat_activity: a run refused by our locks reads who we are from it, and after a
        #: lost connection we recognise our own old session by it (``id``: this backend object's)
        self.application_name = f"bizon-fast pid={os.getpid()} id={uuid.uuid4().hex[:6]} host={socket.gethostname()}"
        #: distributed roles share a job: each supervisor holds its lock shared, a plain run exclusively
        self.shared_job_lock = False
        #: the jobs table's columns, as jobs are selected (all of them once ``open`` added the missing ones)
        self.job_columns: set[str] = set(ADDED_JOB_COLUMNS)

    # ------------------------------------------------------------ connection

    def location(self) -> str:
        return f"{pgconn.where(self.info)} schema {self.schema}"

    def open(self) -> None:
        from psycopg import sql

        self.conn = pgconn.connect(self.info, key=KEY, application_name=self.application_name)
        self.s = sql.Identifier(self.schema)

        def create(cur: Any) -> None:
            # DDL only when something is missing: CREATE ... IF NOT EXISTS still needs the privilege to create
            present = cur.execute(
                "SELECT count(to_regclass(format('%%I.%%I', %s::text, t))) FROM unnest(%s::text[]) t",
                (self.schema, ["bizon_fast_jobs", "bizon_fast_cursors", "bizon_fast_watermarks"]),
            ).fetchone()[0]
            if present == 3 and set(ADDED_JOB_COLUMNS) <= self._job_column_names(cur):
                return
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (pgconn.lock_key("bizon_fast_checkpoint_ddl"),))
            if not cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone():
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self.s))
            cur.execute(sql.SQL(_DDL).format(s=self.s))

        self.transaction(create, "creating the checkpoint tables")

    def _job_column_names(self, cur: Any) -> set[str]:
        """The columns of the jobs table in our schema; empty when it does not exist."""
        rows = cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(format('%%I.%%I', %s::text,"
            " 'bizon_fast_jobs')) AND attnum > 0 AND NOT attisdropped",
            (self.schema,),
        ).fetchall()
        return {r[0] for r in rows}

    def open_for_reading(self) -> bool:
        """A read-only session that creates nothing and takes no advisory lock: it answers during a run.

        Its plain SELECTs take only the share locks every reader takes, which no run's write waits for.
        """
        from psycopg import sql

        name = f"bizon-fast jobs pid={os.getpid()} host={socket.gethostname()}"
        self.conn = pgconn.connect(self.info, key=KEY, application_name=name)
        self.conn.read_only = True
        self.s = sql.Identifier(self.schema)

        def look(cur: Any) -> set[str] | None:
            present = cur.execute(
                "SELECT count(to_regclass(format('%%I.%%I', %s::text, t))) FROM unnest(%s::text[]) t",
                (self.schema, ["bizon_fast_jobs", "bizon_fast_cursors"]),
            ).fetchone()[0]
            return self._job_column_names(cur) if present == 2 else None

        columns = self.transaction(look, "looking for the checkpoint tables")
        if columns is None:
            return False
        self.job_columns = columns
        return True

    def close(self) -> None:
        if self.conn is not None:
            if self.run_lock is not None or self.job_lock is not None:
                # closing releases them too, but only once the server has processed the disconnect: a
                # run started right after this one ends would find them still held, and be refused
                with contextlib.suppress(Exception):
                    self.conn.rollback()
                    self.conn.execute("SELECT pg_advisory_unlock_all()")
                    self.conn.commit()
            self.conn.close()  # also releases the job's and the run's session locks
            self.conn = None
            self.job_lock = None
            self.run_lock = None

    def _reconnect(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = pgconn.connect(self.info, key=KEY, application_name=self.application_name)
        if self.run_lock is not None:
            # the lost session's locks are gone: take the run lock back before anything else is written
            try:
                self._take_run_lock(*self.run_lock, reconnecting=True)
            except JobFailed:
                self.conn.close()
                raise
            except Exception as exc:  # lost again: close it, so the retried operation reconnects once more
                self.conn.close()
                raise UserError(f"{KEY}: taking the run lock again: {' '.join(str(exc).split())}") from None
        if self.job_lock is not None:
            job, self.job_lock = self.job_lock, None
            self._lock_job(job)

    def transaction(self, fn: Callable[[Any], T], what: str) -> T:
        """``fn(cursor)`` in one transaction, retried on a new connection when the old one is lost.

        Public because the split leases (``checkpoint/leases.py``) live in this backend's schema and must go
        through the same retries and reconnection (which retakes the run and job locks) as every other write.
        ``what`` names the step in the one-line error a run fails with when the retries run out.
        """
        assert self.conn is not None, "backend not open"

        def attempt() -> T:
            with self.conn.transaction(), self.conn.cursor() as cur:
                return fn(cur)

        what = f"{KEY} ({pgconn.where(self.info)}): {what}"
        return pgconn.with_retries(attempt, reconnect=self._reconnect, what=what, conn=lambda: self.conn)

    def query(self, text: str) -> Any:
        """A statement with ``{s}`` standing for the quoted schema.

        Public so that tables kept beside the backend's own (the split leases) are addressed in its schema
        the same way, with the schema quoted as an identifier rather than pasted into the text.
        """
        from psycopg import sql

        return sql.SQL(text).format(s=self.s)

    # ------------------------------------------------------------ the run lock

    def hold_run(self, name: str, source_name: str, stream_name: str, *, shared: bool = False) -> None:
        """A session advisory lock on the pipeline, held until ``close`` or the session's end."""
        key = (name, source_name, stream_name)
        if self.run_lock == (key, shared):
            return
        pgconn.with_retries(
            lambda: self._take_run_lock(key, shared),
            reconnect=self._reconnect,
            what=f"{KEY}: locking pipeline '{name}'",
            conn=lambda: self.conn,
        )
        self.run_lock = (key, shared)

    def _take_run_lock(self, key: tuple[str, str, str], shared: bool, *, reconnecting: bool = False) -> None:
        """Take the run lock now, or refuse naming its holder.

        Only two holders are waited for: one whose pid is gone on this host (a run killed a moment ago,
        whose session the server has not dropped yet: ``RUN_LOCK_GRACE_S``), and, after a lost
        connection, our own old session (terminated, then ``LOCK_WAIT_S``). Anyone else is alive as
        far as we can tell, and waiting for a live run would only delay the refusal.
        """
        lock = pgconn.lock_key("bizon_fast_run", *key)
        take = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        deadline: float | None = None
        vanished = 0
        while True:
            got = self.conn.execute(f"SELECT {take}(%s)", (lock,)).fetchone()[0]
            self.conn.commit()
            if got:
                return
            holders = self._run_lock_holders(lock, shared)
            if not holders and vanished < 10:  # released between our try and our look: try again
                vanished += 1
                time.sleep(0.05)
                continue
            if deadline is None:
                wait = 0.0
                ours = self.application_name.encode()[:63].decode(errors="ignore")  # as the server truncates it
                for session, app, holder in holders:
                    if reconnecting and app == ours:
                        wait = max(wait, LOCK_WAIT_S)  # our own session from before the lost connection
                        with contextlib.suppress(Exception):
                            self.conn.execute("SELECT pg_terminate_backend(%s)", (session,))
                            self.conn.commit()
                    elif holder.surely_dead():
                        wait = max(wait, RUN_LOCK_GRACE_S)
                deadline = time.monotonic() + wait
            if time.monotonic() >= deadline:
                holder = holders[0][2] if holders else RunHolder(detail=f"a session of {pgconn.where(self.info)}")
                if len(holders) > 1:
                    holder.detail = f"{holder.detail}; and {len(holders) - 1} more sessions"
                if reconnecting:
                    raise JobFailed(
                        f"{KEY}: lost the connection to {pgconn.where(self.info)} and, with it, the run lock of "
                        f"pipeline '{key[0]}', which {holder.describe()} holds now: stopping this run, which must "
                        "not write beside it"
                    )
                raise run_refused(*key, holder)
            time.sleep(0.1)

    def _run_lock_holders(self, lock: int, shared: bool) -> list[tuple[int, str, RunHolder]]:
        """The sessions holding ``lock`` in a mode that excludes ours: (server pid, application_name, who),
        oldest first."""
        rows = self.conn.execute(
            "SELECT a.pid, a.application_name, host(a.client_addr), a.client_hostname, a.backend_start"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid::bigint = %s AND l.objid::bigint = %s AND (%s OR l.mode = 'ExclusiveLock')"
            " ORDER BY a.backend_start",
            ((lock >> 32) & 0xFFFFFFFF, lock & 0xFFFFFFFF, not shared),
        ).fetchall()
        self.conn.commit()
        holders = []
        for session, app, addr, client_host, started in rows:
            match = _APP_NAME.match(app or "")
            where = f"from {client_host or addr}" if client_host or addr else "over a local socket"
            holders.append(
                (
                    session,
                    app or "",
                    RunHolder(
                        pid=int(match.group(1)) if match else None,
                        host=(match.group(2) or None) if match else None,
                        started=started.isoformat(timespec="seconds") if started else None,
                        detail=f"PostgreSQL session {session} {where}, application_name {app!r}",
                    ),
                )
            )
        return holders

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
            self.query(
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
                self.query(
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
            select = job_select(self.job_columns)
            row = cur.execute(self.query(f"SELECT {select} FROM {{s}}.bizon_fast_jobs {where}"), params).fetchone()
            return job_from_row(row) if row else None

        return self.transaction(fn, "reading a job")

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
                self.query(
                    f"INSERT INTO {{s}}.bizon_fast_jobs ({JOB_COLUMNS})"
                    " VALUES (%s,%s,%s,%s,%s,'running',%s,now(),now(),%s,NULL,1,0,now(),NULL) ON CONFLICT DO NOTHING"
                ),
                (job_id, name, source_name, stream_name, sync_mode, fingerprint, total_rows),
            )

        self.transaction(fn, "creating a job")
        job = self.get_job(job_id)
        if job is None:  # lost to a concurrent start between our check and our insert
            raise UserError(f"{KEY}: pipeline '{name}' was started by another bizon-fast process at the same time")
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
        self.transaction(
            lambda cur: cur.execute(
                self.query(
                    "UPDATE {s}.bizon_fast_jobs SET status=%s, error=%s, updated_at=now(),"
                    " restarts=COALESCE(%s::integer, restarts), schema_changes=COALESCE(%s::text, schema_changes)"
                    " WHERE id=%s"
                ),
                (str(status), error, restarts, schema_changes, job_id),
            ),
            "updating a job",
        )

    def start_attempt(self, job_id: str) -> JobRecord:
        self._lock_job(job_id)

        def fn(cur: Any) -> None:
            row = cur.execute(
                self.query("SELECT name, source_name, stream_name FROM {s}.bizon_fast_jobs WHERE id=%s FOR UPDATE"),
                (job_id,),
            ).fetchone()
            if row is None:
                raise UserError(f"{KEY}: job {job_id} does not exist")
            self._supersede_dead_running(cur, *row, keep=job_id)
            cur.execute(
                self.query(
                    "UPDATE {s}.bizon_fast_jobs SET status='running', error=NULL, attempt=attempt+1, updated_at=now(),"
                    " started_at=now() WHERE id=%s"
                ),
                (job_id,),
            )

        from psycopg import errors

        try:
            self.transaction(fn, "resuming a job")
        except errors.UniqueViolation:
            raise UserError(f"{KEY}: another run of job {job_id}'s pipeline started at the same time") from None
        job = self.get_job(job_id)
        assert job is not None
        return job

    def list_jobs(self, name: str | None, limit: int) -> list[JobRecord]:
        def fn(cur: Any) -> list[tuple]:
            query = self.query(
                f"SELECT {job_select(self.job_columns, 'j')}, (SELECT SUM(c.rows) FROM {{s}}.bizon_fast_cursors c"
                " WHERE c.job_id = j.id) FROM {s}.bizon_fast_jobs j WHERE %s::text IS NULL OR j.name = %s"
                " ORDER BY j.created_at DESC, j.id LIMIT %s"
            )
            return cur.execute(query, (name, name, limit)).fetchall()

        return [job_from_row(r) for r in self.transaction(fn, "listing jobs")]

    def job_cursors(self, job_id: str) -> list[CommittedCursor]:
        def fn(cur: Any) -> list[tuple]:
            query = self.query(
                "SELECT cursor, updated_at FROM {s}.bizon_fast_cursors WHERE job_id=%s ORDER BY split_id"
            )
            return cur.execute(query, (job_id,)).fetchall()

        rows = self.transaction(fn, "reading the job's cursors")
        return [CommittedCursor(cursor=decode_cursor(bytes(r[0])), updated_at=r[1]) for r in rows]

    # ------------------------------------------------------------ cursors and watermarks

    def load_cursors(self, job_id: str) -> dict[str, Cursor]:
        def fn(cur: Any) -> list[tuple]:
            query = self.query("SELECT cursor FROM {s}.bizon_fast_cursors WHERE job_id=%s")
            return cur.execute(query, (job_id,)).fetchall()

        cursors = [decode_cursor(bytes(r[0])) for r in self.transaction(fn, "loading cursors")]
        return {c.split_id: c for c in cursors}

    def commit_cursors(self, job_id: str, cursors: list[Cursor]) -> None:
        if not cursors:
            return
        rows = [(job_id, c.split_id, c.seq, c.rows, c.done, encode_cursor(c)) for c in cursors]

        def fn(cur: Any) -> None:
            cur.executemany(
                self.query(
                    "INSERT INTO {s}.bizon_fast_cursors (job_id, split_id, seq, rows, done, cursor, updated_at)"
                    " VALUES (%s,%s,%s,%s,%s,%s,now()) ON CONFLICT (job_id, split_id) DO UPDATE SET seq=excluded.seq,"
                    " rows=excluded.rows, done=excluded.done, cursor=excluded.cursor, updated_at=excluded.updated_at"
                    # several machines commit a job's cursors: a late, stale commit never moves one back
                    " WHERE NOT {s}.bizon_fast_cursors.done AND {s}.bizon_fast_cursors.seq <= excluded.seq"
                ),
                rows,
            )

        self.transaction(fn, "committing cursors")

    def get_watermark(self, name: str, source_name: str, stream_name: str) -> bytes | None:
        def fn(cur: Any) -> tuple | None:
            return cur.execute(
                self.query(
                    "SELECT value FROM {s}.bizon_fast_watermarks WHERE name=%s AND source_name=%s AND stream_name=%s"
                ),
                (name, source_name, stream_name),
            ).fetchone()

        row = self.transaction(fn, "reading the watermark")
        return bytes(row[0]) if row else None

    def set_watermark(self, name: str, source_name: str, stream_name: str, value: bytes, job_id: str) -> None:
        self.transaction(
            lambda cur: cur.execute(
                self.query(
                    "INSERT INTO {s}.bizon_fast_watermarks (name, source_name, stream_name, value, job_id, updated_at)"
                    " VALUES (%s,%s,%s,%s,%s,now()) ON CONFLICT (name, source_name, stream_name) DO UPDATE SET"
                    " value=excluded.value, job_id=excluded.job_id, updated_at=excluded.updated_at"
                ),
                (name, source_name, stream_name, value, job_id),
            ),
            "storing the watermark",
        )
