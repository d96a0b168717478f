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
"""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bizon_fast.checkpoint.base import JOB_COLUMNS, CheckpointBackend, JobRecord, JobStatus, job_from_row
from bizon_fast.config.models import BigQueryBackendDetails
from bizon_fast.cursor import Cursor, decode_cursor, encode_cursor
from bizon_fast.errors import UserError

KEY = "engine.backend.config"

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
}


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

    def _t(self, name: str) -> str:
        return f"`{self.project}.{self.dataset}.{name}`"

    def _next_version(self) -> int:
        self._last_version = max(self._last_version + 1, _version())
        return self._last_version

    # ------------------------------------------------------------ plumbing

    def open(self) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        from bizon_fast.connectors.bigquery import client as bqclient

        self.client = bqclient.bigquery_client(
            self.project, self.config.service_account_key, key_path=f"{KEY}.service_account_key"
        )
        dataset = f"{self.project}.{self.dataset}"
        try:
            self.client.get_dataset(dataset, retry=bqclient.retry())
            for name, columns in _TABLES.items():
                schema = [bigquery.SchemaField(c, t) for c, t in columns]
                table = bigquery.Table(f"{dataset}.{name}", schema=schema)
                self.client.create_table(table, exists_ok=True, retry=bqclient.retry())
        except gexc.NotFound:
            raise UserError(f"{KEY}.schema: BigQuery dataset {dataset} does not exist; create it first") from None
        except gexc.GoogleAPIError as exc:
            raise UserError(f"{KEY}: cannot use BigQuery dataset {dataset}: {exc}") from None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _q(self, sql: str, **params: Any) -> list[tuple]:
        from google.cloud import bigquery

        from bizon_fast.connectors.bigquery import client as bqclient

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

    # ------------------------------------------------------------ jobs

    def _job(self, where: str, **params: Any) -> JobRecord | None:
        rows = self._q(f"SELECT {JOB_COLUMNS} FROM {self._t('bizon_fast_jobs')} WHERE {where}", **params)
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
        job_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        total = "CAST(NULL AS INT64)" if total_rows is None else "@total"
        self._q(
            f"INSERT INTO {self._t('bizon_fast_jobs')} ({JOB_COLUMNS})"
            f" VALUES (@id, @n, @s, @t, @m, 'running', @fp, @now, @now, {total}, CAST(NULL AS STRING), 1)",
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

    def set_job_status(self, job_id: str, status: JobStatus, error: str | None = None) -> None:
        err = "CAST(NULL AS STRING)" if error is None else "@err"
        self._q(
            f"UPDATE {self._t('bizon_fast_jobs')} SET status = @st, error = {err}, updated_at = @now WHERE id = @id",
            st=str(status),
            now=datetime.now(UTC),
            id=job_id,
            **({} if error is None else {"err": error}),
        )
        if status != JobStatus.RUNNING:
            self._compact(job_id)

    def start_attempt(self, job_id: str) -> JobRecord:
        self._q(
            f"UPDATE {self._t('bizon_fast_jobs')} SET status = 'running', error = CAST(NULL AS STRING),"
            " attempt = attempt + 1, updated_at = @now WHERE id = @id",
            now=datetime.now(UTC),
            id=job_id,
        )
        job = self.get_job(job_id)
        assert job is not None
        return job

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
