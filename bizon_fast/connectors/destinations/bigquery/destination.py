"""The ``bigquery`` destination: Parquet load jobs into a stage, published by one query (see ``staged``).

bizon uploaded each Parquet file to ``gcs_buffer_bucket`` and loaded it from there; here the bytes go
straight into the load job (``load_table_from_file``, a resumable upload), so the bucket is not needed
(the key is still accepted). A write is cut into seq-aligned units of about ``UNIT_BYTES`` and up to
``load_max_in_flight_jobs`` of them load at once on a thread pool; each unit is one load job, atomic,
with the deterministic job id of its (job, epoch, split, seq range).
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bizon_fast.clients import bigquery as bqclient
from bizon_fast.connectors.destinations.bigquery.config import CAPABILITIES, BigQueryDetails
from bizon_fast.connectors.destinations.bigquery.merge import source_key
from bizon_fast.connectors.destinations.bigquery.staged import StagedBigQueryDestination
from bizon_fast.faults import fault_point

log = logging.getLogger("bizon_fast.destination.bigquery")

#: Arrow bytes per load job (one Parquet file); larger writes are cut at seq boundaries and loaded in parallel
UNIT_BYTES = 64 << 20
ATTEMPTS = 5


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as one Parquet file in memory (snappy; row groups of 1M rows)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy", row_group_size=1 << 20, use_compliant_nested_type=True)
    return sink.getvalue()


class BigQueryDestination(StagedBigQueryDestination):
    name = "bigquery"
    config_class = BigQueryDetails
    capabilities = CAPABILITIES

    def __init__(self, config: Any, context: Any) -> None:
        super().__init__(config, context)
        self.load_jobs = 0
        self._pool: ThreadPoolExecutor | None = None

    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        units = self.units(split_id, first_seq, last_seq, batches, UNIT_BYTES)
        tables = [(f, la, self.rows(split_id, f, la, group)) for f, la, group in units]
        tables = [(f, la, t) for f, la, t in tables if t is not None]
        if not tables:
            return
        self.ensure_stage(tables[0][2].schema, source_key(batches) if self.disposition == "merge" else None)
        if len(tables) == 1:
            self._load(split_id, *tables[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.load_max_in_flight_jobs, thread_name_prefix="bq-load")
        for future in [self._pool.submit(self._load, split_id, *t) for t in tables]:
            future.result()

    def _load(self, split_id: str, first_seq: int, last_seq: int, table: pa.Table) -> None:
        """One load job; a 409 on its deterministic id means an earlier attempt: done if that one succeeded."""
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        data = parquet_bytes(table)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        )
        config.parquet_options = bigquery.ParquetOptions.from_api_repr({"enableListInference": True})
        base = self.job_id_for(split_id, first_seq, last_seq)
        for attempt in range(ATTEMPTS):
            job_id = base if attempt == 0 else f"{base}_r{attempt}"
            self.api_calls += 1
            self.load_jobs += 1
            try:
                job = self.client.load_table_from_file(
                    io.BytesIO(data), self.stage_id, job_config=config, job_id=job_id, rewind=True
                )
            except gexc.Conflict:
                job = self.client.get_job(job_id, retry=bqclient.retry())
                log.info("bigquery destination: load job %s exists (an earlier attempt): %s", job_id, job.state)
            try:
                self.api_calls += 1
                job.result(retry=bqclient.retry())
                fault_point("bigquery.mid_load")  # the unit is staged, the write not yet reported
                return
            except gexc.GoogleAPIError as exc:
                if attempt + 1 == ATTEMPTS or not _retryable(exc, job):
                    raise RuntimeError(
                        f"bigquery destination: load job {job_id} into {self.stage_id} failed: {exc}"
                    ) from exc
                log.warning("bigquery destination: load job %s failed (%s); retrying", job_id, exc)
                self.wait_delay(attempt)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        super().close()


def _retryable(exc: Exception, job: Any) -> bool:
    """Backend errors and rate limits are retried; an invalid file or schema is not."""
    reason = ((getattr(job, "error_result", None) or {}).get("reason") or "").lower()
    if reason in ("invalid", "invalidquery", "notfound", "accessdenied"):
        return False
    return not isinstance(exc, (ValueError,)) and reason != "invalid"
