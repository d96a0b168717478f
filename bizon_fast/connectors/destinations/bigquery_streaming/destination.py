"""The ``bigquery_streaming`` destination: the legacy ``tabledata.insertAll`` API, as bizon had it.

At-least-once. Rows are appended straight into the target table (bizon has no stage for this
destination either, so every sync mode appends; bizon rejects ``reset`` for it). Each row carries an
``insertId`` that is a hash of (job, split, seq, row), the same on a replay, so the real service's
best-effort dedupe (about a minute) drops most replayed rows -- but it is not a guarantee, and the
emulator ignores insert ids altogether.

The request body is built from Arrow in bulk: each row's JSON (``jsontext.row_json``, timestamps to
the microsecond -- bizon truncated them to seconds) is wrapped as ``{"insertId":..,"json":..},`` by
Arrow compute, and the requests are slices of that one string buffer: no per-row Python object. At
most ``bq_max_rows_per_request`` rows and ``REQUEST_BYTES`` per request.

Rows over bizon's ``MAX_ROW_SIZE_BYTES`` (``LARGE_ROW_BYTES``) are counted in ``large_rows``: bizon sent them
apart, in a load job, and counted them as ``bizon_pipeline.large_records``; here they travel with the others,
but the count is kept so that metric still means the same thing. A row's size is its JSON's length in bytes
(bizon measured ``str(row)``, the Python repr of the same row: the same content, only its quotes and escapes
differ -- a few bytes per field, more for text full of backslashes).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bizon_fast.clients import bigquery as bqclient
from bizon_fast.connectors.destinations.bigquery.rows import bigquery_rows
from bizon_fast.connectors.destinations.bigquery.staged import KEY, StagedBigQueryDestination
from bizon_fast.connectors.destinations.bigquery_streaming.config import CAPABILITIES, BigQueryStreamingDetails
from bizon_fast.destination.base import Destination
from bizon_fast.errors import UserError

log = logging.getLogger("bizon_fast.destination.bigquery_streaming")

REQUEST_BYTES = 9 << 20
#: bizon 0.6.4's ``MAX_ROW_SIZE_BYTES`` for this destination: a row strictly larger is a "large record"
LARGE_ROW_BYTES = 0.9 * 1024 * 1024


def count_large(json_rows: pa.Array | pa.ChunkedArray) -> int:
    """Rows whose JSON is over ``LARGE_ROW_BYTES`` (bizon's large-row test), counted in Arrow."""
    return int(pc.sum(pc.greater(pc.binary_length(json_rows), LARGE_ROW_BYTES)).as_py() or 0)


class BigQueryStreamingDestination(StagedBigQueryDestination):
    """Shares naming, client and schema with the staged destinations; overrides the delivery."""

    name = "bigquery_streaming"
    config_class = BigQueryStreamingDetails
    capabilities = CAPABILITIES
    source_data_type = "JSON"  # bizon's insertAll schema

    def __init__(self, config: Any, context: Any) -> None:
        super().__init__(config, context)
        self._target: Any = None
        self.requests = 0

    # no stage: prepare/publish are the base Destination's (nothing to do)
    prepare = Destination.prepare
    publish = Destination.publish

    def _ensure_target(self, schema: pa.Schema) -> None:
        if self._target is not None:
            return
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        target = self._get_table(self.table_id)
        if target is None:
            table = bigquery.Table(self.table_id, schema=self._stage_schema(schema))
            field = self.partition_field(schema.names)
            if field:
                table.time_partitioning = bigquery.TimePartitioning(type_=self.partition_type(), field=field)
            if self.clustering:
                table.clustering_fields = self.clustering
            try:
                target = self.client.create_table(table, retry=bqclient.retry())
            except gexc.Conflict:
                target = self._get_table(self.table_id)
        missing = [n for n in schema.names if n not in {f.name for f in target.schema}]
        if missing:
            raise UserError(f"{KEY}: columns {missing} are not in the existing table {self.table_id}")
        self._target = target

    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        from bizon_fast.connectors.destinations.envelope import bizon_ids, row_origins
        from bizon_fast.connectors.destinations.jsontext import row_json

        loaded_at = datetime.now(UTC)
        job = self.context.job_id
        large = 0
        for seq, offset, batch in row_origins(batches, first_seq, last_seq):
            rows = bigquery_rows(
                batch, self.declared, job_id=job, split_id=split_id, seq=seq, offset=offset, loaded_at=loaded_at
            )
            rows = rows.combine_chunks()
            self._ensure_target(rows.schema)
            ids = bizon_ids(job, split_id, seq, rows.num_rows, offset)
            for rb in rows.to_batches():
                json_rows = row_json(rb)
                large += count_large(json_rows)
                self._insert(ids.slice(0, rb.num_rows), json_rows)
                ids = ids.slice(rb.num_rows)
        self.large_rows += large  # every request answered without errors: durable

    def _insert(self, ids: pa.Array, json_rows: pa.Array) -> None:
        """insertAll requests cut from one Arrow string buffer of ``{"insertId":"..","json":{..}},`` items."""
        if isinstance(json_rows, pa.ChunkedArray):
            json_rows = json_rows.combine_chunks()
        ids, json_rows = ids.cast(pa.large_string()), json_rows.cast(pa.large_string())
        lit = [pa.scalar(t, pa.large_string()) for t in ('{"insertId":"', '","json":', "},", "")]
        items = pc.binary_join_element_wise(lit[0], ids, lit[1], json_rows, lit[2], lit[3])
        offsets = np.frombuffer(items.buffers()[1], dtype=np.int64)[items.offset : items.offset + len(items) + 1]
        data = items.buffers()[2]
        limit = self.config.bq_max_rows_per_request
        start = 0
        while start < len(items):
            end = min(start + limit, len(items))
            too_big = np.searchsorted(offsets, offsets[start] + REQUEST_BYTES, side="right") - 1
            end = max(start + 1, min(end, int(too_big)))
            body = b'{"rows":[' + data[int(offsets[start]) : int(offsets[end]) - 1].to_pybytes() + b"]}"
            self._post(body, end - start)
            start = end

    def _post(self, body: bytes, n: int) -> None:
        project, dataset, table = self.table_id.split(".")
        self.api_calls += 1
        self.requests += 1
        response = self.client._call_api(  # the library's own transport, retry and auth: only the body is ours
            bqclient.retry(),
            method="POST",
            path=f"/projects/{project}/datasets/{dataset}/tables/{table}/insertAll",
            data=body,
            content_type="application/json",
            timeout=bqclient.RETRY_DEADLINE_S,
        )
        errors = (response or {}).get("insertErrors")
        if errors:
            raise RuntimeError(
                f"bigquery_streaming: {len(errors)} of {n} rows rejected by {self.table_id}: {errors[:3]}"
            )
