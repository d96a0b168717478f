"""The ``bigquery`` checkpoint backend: jobs, cursors and watermarks in a dataset.

``engine.backend.config``: ``database`` is the GCP project, ``schema`` the dataset, and
``service_account_key`` (a path or the key's JSON) is honoured -- bizon dropped it and only ADC worked.

Why append-only: BigQuery has no cheap single-row upsert (``MERGE`` is one DML job per commit, and the
emulator cannot run ``MERGE ... INSERT ROW``), and DML statements on one table queue behind each other.
So ``commit_cursors`` is one ``INSERT`` of a row per split with a monotonically increasing ``version``
(nanoseconds), which is atomic by itself; ``load_cursors`` takes the newest row per split
(``QUALIFY ROW_NUMBER()``). Watermarks are appended the same way. Superseded cursor rows of a job are
deleted when the job leaves the running state, so the table stays small. Jobs change status rarely, so
they are plain ``UPDATE``\\ s. Cursors and watermarks are msgpack, stored base64 in a STRING column
(BYTES query parameters come back as base64 text from some endpoints, STRING is unambiguous).

One live run per pipeline: BigQuery has no lock that dies with a process, so ``hold_run`` claims a
*lease*, a row of ``bizon_fast_run_leases`` that its holder renews (``heartbeat_at``, server time)
every ``HEARTBEAT_S`` from a thread of its own, and that counts for ``LEASE_TTL_S`` after the last
renewal. A claim inserts its row, then reads the pipeline's live rows: the oldest ``(claimed_at,
token)`` wins, a loser deletes its row and is refused naming the winner. The winner reads again
after ``CLAIM_SETTLE_S``, so that a rival claim whose INSERT was still in flight is seen too (a
claim that takes longer than that to land can still slip past: the residual race of a lock built
on plain inserts). A killed holder's lease blocks its pipeline until it expires (the refusal says
when); a holder whose renewal fails for the TTL, or finds its lease gone, stops writing
(``JobFailed``), since another run may hold the pipeline by then.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
    this_holder,
)
from bizon_fast.config.engine import BigQueryBackendDetails
from bizon_fast.cursor import Cursor, decode_cursor, encode_cursor
from bizon_fast.errors import JobFailed, UserError

log = logging.getLogger("bizon_fast.checkpoint.bigquery")

KEY = "engine.backend.config"
#: a run lease counts this long after its last renewal: a killed run blocks its pipeline this long at most
LEASE_TTL_S = 90
#: how often the holder renews its lease (well inside the TTL: a few renewals may fail in a row)
HEARTBEAT_S = 20.0
#: the winner of a claim reads the leases again after this long, to see a rival's insert that was in flight
CLAIM_SETTLE_S = 1.0

_TABLES = {
    "bizon_fast_jobs": [
        ("id", "STRING"),
        ("name", "STRING"),
        ("source_name", "STRING"),
        ("stream_name", "STRING"),
        ("sync_mode", "STRING"),
        ("status", "STRING"),
        ("fingerprint", "STRING"),
        ("created_at", "TIMESTAMP"),
        ("updated_at", "TIMESTAMP"),
        ("total_rows", "INT64"),
        ("error", "STRING"),
        ("attempt", "INT64"),
        ("restarts", "INT64"),
        ("started_at", "TIMESTAMP"),
        ("schema_changes", "STRING"),
    ],
    "bizon_fast_cursors": [
        ("job_id", "STRING"),
        ("split_id", "STRING"),
        ("version", "INT64"),
        ("seq", "INT64"),
        ("rows", "INT64"),
        ("done", "BOOL"),
        ("cursor", "STRING"),
        ("updated_at", "TIMESTAMP"),
    ],
    "bizon_fast_watermarks": [
        ("name", "STRING"),
        ("source_name", "STRING"),
        ("stream_name", "STRING"),
        ("version", "INT64"),
        ("value", "STRING"),
        ("job_id", "STRING"),
        ("updated_at", "TIMESTAMP"),
    ],
    "bizon_fast_run_leases": [
        ("pipeline", "STRING"),  # JSON [name, source_name, stream_name]
        ("token", "STRING"),
        ("shared", "BOOL"),
        ("pid", "INT64"),
        ("host", "STRING"),
        ("command", "STRING"),
        ("claimed_at", "TIMESTAMP"),
        ("heartbeat_at", "TIMESTAMP"),
    ],
}


@dataclass
class RunLease:
    """The run lease this process holds, and its renewal thread's verdict."""

    pipeline: str
    token: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lost: str | None = None  # why the lease can no longer be trusted, once it cannot
    renewed: float = field(default_factory=time.monotonic)  # when it was last claimed or renewed (monotonic)


def _trusted_s() -> float:
    """How long after its last renewal this process still trusts its lease: less than the TTL, by a
    renewal period, since the server counts from the renewal's start and we from its end."""
    return max(LEASE_TTL_S - HEARTBEAT_S, LEASE_TTL_S / 2)


def _version() -> int:
    """Monotonic within the (single) supervisor, and increasing across runs."""
    return time.time_ns()


class BigQueryBackend(CheckpointBackend):
    def __init__(self, config: BigQueryBackendDetails) -> None:
        self.config = config
        self.project = config.database
        self.dataset = config.schema_name
        self.client: Any = None
        self._last_version = 0
        self.lease: RunLease | None = None
        #: the jobs table's columns, as jobs are selected (all of them once ``open`` added the missing ones)
        self.job_columns: set[str] = set(ADDED_JOB_COLUMNS)

    def _t(self, name: str) -> str:
        return f"`{self.project}.{self.dataset}.{name}`"

    def _next_version(self) -> int:
        self._last_version = max(self._last_version + 1, _version())
        return self._last_version

    # ------------------------------------------------------------ plumbing

    def location(self) -> str:
        return f"dataset {self.project}.{self.dataset}"

    def open(self) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        from bizon_fast.clients import bigquery as bqclient

        self.client = bqclient.bigquery_client(
            self.project, self.config.service_account_key, key_path=f"{KEY}.service_account_key"
        )
        dataset = f"{self.project}.{self.dataset}"
        try:
            self.client.get_dataset(dataset, retry=bqclient.retry())
            for name, columns in _TABLES.items():
                schema = [bigquery.SchemaField(c, t) for c, t in columns]
                table = bigquery.Table(f"{dataset}.{name}", schema=schema)
                table = self.client.create_table(table, exists_ok=True, retry=bqclient.retry())
                missing = [f for f in schema if f.name not in {g.name for g in table.schema}]
                for f in missing:  # a table created by an older bizon-fast: add the new (nullable) columns
                    self._q(f"ALTER TABLE {self._t(name)} ADD COLUMN IF NOT EXISTS {f.name} {f.field_type}")
        except gexc.NotFound:
            raise UserError(f"{KEY}.schema: BigQuery dataset {dataset} does not exist; create it first") from None
        except gexc.GoogleAPIError as exc:
            raise UserError(f"{KEY}: cannot use BigQuery dataset {dataset}: {exc}") from None

    def open_for_reading(self) -> bool:
        """Reads the dataset without creating a table or column, and claims no run lease."""
        from google.api_core import exceptions as gexc

        from bizon_fast.clients import bigquery as bqclient

        self.client = bqclient.bigquery_client(
            self.project, self.config.service_account_key, key_path=f"{KEY}.service_account_key"
        )
        try:
            for name in ("bizon_fast_jobs", "bizon_fast_cursors"):
                self.client.get_table(f"{self.project}.{self.dataset}.{name}", retry=bqclient.retry())
            # the columns as a query sees them (a table's metadata can lag an ALTER TABLE in some emulators)
            columns = self.client.query(f"SELECT * FROM {self._t('bizon_fast_jobs')} LIMIT 0", retry=bqclient.retry())
            self.job_columns = {f.name for f in columns.result(retry=bqclient.retry()).schema}
        except gexc.NotFound:  # no dataset or no tables: nothing ever ran here
            return False
        except gexc.GoogleAPIError as exc:
            raise UserError(f"{KEY}: cannot read BigQuery dataset {self.project}.{self.dataset}: {exc}") from None
        return True

    def close(self) -> None:
        self._release_lease()
        if self.client is not None:
            self.client.close()
            self.client = None

    def _q(self, sql: str, **params: Any) -> list[tuple]:
        from google.cloud import bigquery

        from bizon_fast.clients import bigquery as bqclient

        assert self.client is not None, "backend not open"
        qp = []
        for name, value in params.items():
            if isinstance(value, list):
                qp.append(bigquery.ArrayQueryParameter(name, "STRING", value))
            else:
                kind = "INT64" if isinstance(value, int) and not isinstance(value, bool) else "STRING"
                if isinstance(value, datetime):
                    kind = "TIMESTAMP"
                qp.append(bigquery.ScalarQueryParameter(name, kind, value))
        job = self.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=qp), retry=bqclient.retry())
        return [tuple(r.values()) for r in job.result(retry=bqclient.retry())]

    # ------------------------------------------------------------ the run lease

    def _leases(self) -> str:
        return self._t("bizon_fast_run_leases")

    def _fresh(self) -> str:
        """SQL: the lease is live (renewed within the TTL, by the server's clock)."""
        return f"heartbeat_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {int(LEASE_TTL_S)} SECOND)"

    def hold_run(self, name: str, source_name: str, stream_name: str, *, shared: bool = False) -> None:
        """Claim the pipeline's run lease (see the module docstring), or refuse naming its holder."""
        if self.lease is not None:
            return
        pipeline = json.dumps([name, source_name, stream_name])
        token = uuid.uuid4().hex
        me = this_holder()
        self._q(
            f"INSERT INTO {self._leases()} (pipeline, token, shared, pid, host, command, claimed_at, heartbeat_at)"
            f" VALUES (@k, @tok, {'TRUE' if shared else 'FALSE'}, @pid, @host, @cmd, CURRENT_TIMESTAMP(),"
            " CURRENT_TIMESTAMP())",
            k=pipeline,
            tok=token,
            pid=me.pid,
            host=me.host or "",
            cmd=me.command or "",
        )
        try:
            winner = self._lease_blocker(pipeline, token, shared)
            if winner is None:
                time.sleep(CLAIM_SETTLE_S)
                winner = self._lease_blocker(pipeline, token, shared)
        except BaseException:
            with contextlib.suppress(Exception):
                self._q(f"DELETE FROM {self._leases()} WHERE token = @tok", tok=token)
            raise
        if winner is not None:
            with contextlib.suppress(Exception):
                self._q(f"DELETE FROM {self._leases()} WHERE token = @tok", tok=token)
            raise run_refused(name, source_name, stream_name, winner)
        with contextlib.suppress(Exception):  # housekeeping: the leases of dead runs, long expired
            self._q(f"DELETE FROM {self._leases()} WHERE pipeline = @k AND NOT ({self._fresh()})", k=pipeline)
        self.lease = RunLease(pipeline=pipeline, token=token)
        self.lease.thread = threading.Thread(
            target=self._renew_lease, args=(self.lease,), name="bizon-fast run lease", daemon=True
        )
        self.lease.thread.start()

    def _lease_blocker(self, pipeline: str, token: str, shared: bool) -> RunHolder | None:
        """The holder of the oldest live lease that excludes ours, or None when ours wins."""
        rows = self._q(
            "SELECT token, shared, pid, host, command, claimed_at, heartbeat_at,"
            f" TIMESTAMP_ADD(heartbeat_at, INTERVAL {int(LEASE_TTL_S)} SECOND)"
            f" FROM {self._leases()} WHERE pipeline = @k AND {self._fresh()} ORDER BY claimed_at, token",
            k=pipeline,
        )
        for tok, other_shared, pid, host, command, claimed, beat, expires in rows:
            if tok == token:
                return None  # every lease older than ours is compatible with it
            if shared and other_shared:
                continue  # broker roles of one run share it
            return RunHolder(
                pid=pid,
                host=host or None,
                started=claimed.isoformat(timespec="seconds") if claimed else None,
                command=command or None,
                detail=f"its BigQuery run lease was renewed at {beat.isoformat(timespec='seconds')} and expires at "
                f"{expires.isoformat(timespec='seconds')} unless renewed: a killed run blocks the pipeline until then",
            )
        return None  # ours is not visible (yet): nothing live excludes it

    def _renew_lease(self, lease: RunLease) -> None:
        """The renewal thread: its own client (the main one belongs to the supervisor's thread)."""
        from google.cloud import bigquery

        from bizon_fast.clients import bigquery as bqclient

        client = None
        try:
            while not lease.stop.wait(HEARTBEAT_S):
                try:
                    if client is None:
                        client = bqclient.bigquery_client(
                            self.project, self.config.service_account_key, key_path=f"{KEY}.service_account_key"
                        )
                    job = client.query(
                        f"UPDATE {self._leases()} SET heartbeat_at = CURRENT_TIMESTAMP()"
                        f" WHERE token = '{lease.token}' AND {self._fresh()}",
                        retry=bigquery.DEFAULT_RETRY.with_deadline(HEARTBEAT_S),  # not the library's 600 s
                    )
                    job.result(timeout=HEARTBEAT_S)
                    if not job.num_dml_affected_rows:
                        lease.lost = "it expired or was removed before it could be renewed"
                        return
                    lease.renewed = time.monotonic()
                except Exception as exc:  # noqa: BLE001 - retried at the next beat; fatal only after the TTL
                    log.warning("renewing the run lease failed (%s); retrying in %gs", exc, HEARTBEAT_S)
                    if time.monotonic() - lease.renewed >= _trusted_s():
                        lease.lost = f"it could not be renewed for {_trusted_s():g} s ({exc})"
                        return
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    def _check_lease(self) -> None:
        """Refuse to write once the lease is lost: another run may hold the pipeline by now."""
        if self.lease is None:
            return
        if self.lease.lost is None and time.monotonic() - self.lease.renewed >= _trusted_s():
            self.lease.lost = f"it was not renewed for {_trusted_s():g} s"  # the renewal thread is stuck
        if self.lease.lost is not None:
            raise JobFailed(
                f"{KEY}: this run's lease on its pipeline is lost ({self.lease.lost}); another run may hold the "
                "pipeline now, so this one stops writing. Run the same command to resume once no other run is live"
            )

    def _release_lease(self) -> None:
        lease, self.lease = self.lease, None
        if lease is None:
            return
        lease.stop.set()
        if lease.thread is not None:
            lease.thread.join(5)
        if self.client is not None:
            with contextlib.suppress(Exception):
                self._q(f"DELETE FROM {self._leases()} WHERE token = @tok", tok=lease.token)

    # ------------------------------------------------------------ jobs

    def _job(self, where: str, **params: Any) -> JobRecord | None:
        select = job_select(self.job_columns)
        rows = self._q(f"SELECT {select} FROM {self._t('bizon_fast_jobs')} WHERE {where}", **params)
        return job_from_row(rows[0]) if rows else None

    def get_job(self, job_id: str) -> JobRecord | None:
        return self._job("id = @id", id=job_id)

    def find_unfinished_job(self, name: str, source_name: str, stream_name: str) -> JobRecord | None:
        return self._job(
            "name = @n AND source_name = @s AND stream_name = @t AND status IN ('running', 'failed', 'cancelled')"
            " ORDER BY created_at DESC LIMIT 1",
            n=name,
            s=source_name,
            t=stream_name,
        )

    def last_succeeded_job(self, name: str, source_name: str, stream_name: str) -> JobRecord | None:
        return self._job(
            "name = @n AND source_name = @s AND stream_name = @t AND status = 'succeeded'"
            " ORDER BY created_at DESC LIMIT 1",
            n=name,
            s=source_name,
            t=stream_name,
        )

    def create_job(
        self, *, name: str, source_name: str, stream_name: str, sync_mode: str, fingerprint: str, total_rows: int | None
    ) -> JobRecord:
        self._check_lease()
        job_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        total = "CAST(NULL AS INT64)" if total_rows is None else "@total"
        self._q(
            f"INSERT INTO {self._t('bizon_fast_jobs')} ({JOB_COLUMNS})"
            f" VALUES (@id, @n, @s, @t, @m, 'running', @fp, @now, @now, {total}, CAST(NULL AS STRING), 1, 0, @now,"
            " CAST(NULL AS STRING))",
            id=job_id,
            n=name,
            s=source_name,
            t=stream_name,
            m=sync_mode,
            fp=fingerprint,
            now=now,
            **({} if total_rows is None else {"total": total_rows}),
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
        self._check_lease()
        err = "CAST(NULL AS STRING)" if error is None else "@err"
        count = "" if restarts is None else ", restarts = @r"
        count += "" if schema_changes is None else ", schema_changes = @sc"
        self._q(
            f"UPDATE {self._t('bizon_fast_jobs')} SET status = @st, error = {err}, updated_at = @now{count}"
            " WHERE id = @id",
            st=str(status),
            now=datetime.now(UTC),
            id=job_id,
            **({} if error is None else {"err": error}),
            **({} if restarts is None else {"r": restarts}),
            **({} if schema_changes is None else {"sc": schema_changes}),
        )
        if status != JobStatus.RUNNING:
            self._compact(job_id)

    def start_attempt(self, job_id: str) -> JobRecord:
        self._check_lease()
        self._q(
            f"UPDATE {self._t('bizon_fast_jobs')} SET status = 'running', error = CAST(NULL AS STRING),"
            " attempt = attempt + 1, updated_at = @now, started_at = @now WHERE id = @id",
            now=datetime.now(UTC),
            id=job_id,
        )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def list_jobs(self, name: str | None, limit: int) -> list[JobRecord]:
        """Two queries: the jobs, then the committed rows of each (the newest cursor version of each split)."""
        where = "" if name is None else "WHERE name = @n"
        jobs = self._q(
            f"SELECT {job_select(self.job_columns)} FROM {self._t('bizon_fast_jobs')} {where}"
            f" ORDER BY created_at DESC, id LIMIT {int(limit)}",
            **({} if name is None else {"n": name}),
        )
        if not jobs:
            return []
        rows = self._q(
            f"SELECT job_id, SUM(rows) FROM (SELECT job_id, rows FROM {self._t('bizon_fast_cursors')}"
            " WHERE job_id IN UNNEST(@ids)"
            " QUALIFY ROW_NUMBER() OVER (PARTITION BY job_id, split_id ORDER BY version DESC) = 1) GROUP BY job_id",
            ids=[r[0] for r in jobs],
        )
        committed = dict(rows)
        return [job_from_row((*r, committed.get(r[0]))) for r in jobs]

    def job_cursors(self, job_id: str) -> list[CommittedCursor]:
        rows = self._q(
            f"SELECT split_id, cursor, updated_at FROM {self._t('bizon_fast_cursors')} WHERE job_id = @j"
            " QUALIFY ROW_NUMBER() OVER (PARTITION BY split_id ORDER BY version DESC) = 1 ORDER BY split_id",
            j=job_id,
        )
        return [CommittedCursor(cursor=decode_cursor(base64.b64decode(r[1])), updated_at=r[2]) for r in rows]

    # ------------------------------------------------------------ cursors

    def load_cursors(self, job_id: str) -> dict[str, Cursor]:
        rows = self._q(
            f"SELECT cursor FROM {self._t('bizon_fast_cursors')} WHERE job_id = @j"
            " QUALIFY ROW_NUMBER() OVER (PARTITION BY split_id ORDER BY version DESC) = 1",
            j=job_id,
        )
        cursors = [decode_cursor(base64.b64decode(r[0])) for r in rows]
        return {c.split_id: c for c in cursors}

    def commit_cursors(self, job_id: str, cursors: list[Cursor]) -> None:
        """One INSERT statement (atomic): a new version of each split's cursor."""
        if not cursors:
            return
        self._check_lease()
        version = self._next_version()
        values, params = [], {"j": job_id, "v": version, "now": datetime.now(UTC)}
        for i, c in enumerate(cursors):
            values.append(f"(@j, @s{i}, @v, {int(c.seq)}, {int(c.rows)}, {'TRUE' if c.done else 'FALSE'}, @c{i}, @now)")
            params[f"s{i}"] = c.split_id
            params[f"c{i}"] = base64.b64encode(encode_cursor(c)).decode()
        self._q(
            f"INSERT INTO {self._t('bizon_fast_cursors')}"
            f" (job_id, split_id, version, seq, rows, done, cursor, updated_at) VALUES {', '.join(values)}",
            **params,
        )

    def _compact(self, job_id: str) -> None:
        """Delete superseded cursor versions of a job that is no longer running."""
        self._q(
            f"DELETE FROM {self._t('bizon_fast_cursors')} c WHERE c.job_id = @j AND c.version < ("
            f"SELECT MAX(m.version) FROM {self._t('bizon_fast_cursors')} m WHERE m.job_id = c.job_id"
            " AND m.split_id = c.split_id)",
            j=job_id,
        )

    # ------------------------------------------------------------ watermarks

    def get_watermark(self, name: str, source_name: str, stream_name: str) -> bytes | None:
        rows = self._q(
            f"SELECT value FROM {self._t('bizon_fast_watermarks')} WHERE name = @n AND source_name = @s"
            " AND stream_name = @t ORDER BY version DESC LIMIT 1",
            n=name,
            s=source_name,
            t=stream_name,
        )
        return base64.b64decode(rows[0][0]) if rows else None

    def set_watermark(self, name: str, source_name: str, stream_name: str, value: bytes, job_id: str) -> None:
        self._check_lease()
        self._q(
            f"INSERT INTO {self._t('bizon_fast_watermarks')}"
            " (name, source_name, stream_name, version, value, job_id, updated_at)"
            " VALUES (@n, @s, @t, @v, @val, @j, @now)",
            n=name,
            s=source_name,
            t=stream_name,
            v=self._next_version(),
            val=base64.b64encode(value).decode(),
            j=job_id,
            now=datetime.now(UTC),
        )
