"""The ``bigquery_streaming_v2`` destination: the Storage Write API with Arrow rows, into the stage.

Rows travel as Arrow (``AppendRowsRequest.arrow_rows``: the serialized schema and record batches), not as
per-row protobuf like bizon's. Each write is cut into seq-aligned units (see ``staged``) that are
appended in parallel on up to ``max_concurrent_threads`` threads, every request under ``REQUEST_BYTES``
(the API's limit is 10 MB).

Exactly-once, on the real service: a unit goes to its own PENDING stream, appended with offsets,
finalized and committed with ``BatchCommitWriteStreams`` -- its rows become visible at once or not at
all. The stage's publish dedupe (``staged``) then removes regrouped replays exactly as for load jobs.
The emulator implements pending streams too (its commit fails on RECORD columns). Only an endpoint that
answers ``CreateWriteStream`` with UNIMPLEMENTED (one with only ``_default``) makes units go to
``_default`` (committed mode, no offsets; logged once): a unit is then visible request by request, and a
unit cut short by a crash is *incomplete* (fewer staged rows than ``_bizon_fast_rows``) and ignored by the
publish dedupe, whose replay brings the rows. Either way the published table holds each row once. A
transient error (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ABORTED) is retried with backoff, never taken
for "no pending streams": on the real service that would silently give up the atomic commit; any other
error fails the write.

Rows over bizon's ``MAX_ROW_SIZE_BYTES`` (``LARGE_ROW_BYTES``, 8 MiB) are counted in ``large_rows``: bizon
sent them apart, in a load job, and counted them as ``bizon_pipeline.large_records``; here they travel with
the others, but the count keeps that metric's meaning. bizon measured a row as its serialized protobuf
message; ``proto_row_bytes`` computes that size from the Arrow columns (see there), with no per-row Python.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bizon_fast.clients import bigquery as bqclient
from bizon_fast.connectors.destinations.bigquery.staged import BOOKKEEPING, KEY, StagedBigQueryDestination
from bizon_fast.connectors.destinations.bigquery_streaming_v2.config import CAPABILITIES, BigQueryStreamingV2Details
from bizon_fast.faults import fault_point

log = logging.getLogger("bizon_fast.destination.bigquery_streaming_v2")

REQUEST_BYTES = 9 << 20
UNIT_BYTES = 32 << 20
#: bizon 0.6.4's ``MAX_ROW_SIZE_BYTES`` for this destination: a row strictly larger is a "large record"
LARGE_ROW_BYTES = 8 * 1024 * 1024
#: first backoff of a transient ``CreateWriteStream`` error (doubling, at most 10 s, for RETRY_DEADLINE_S)
RETRY_INITIAL_S = 0.5


def transient(exc: BaseException) -> bool:
    """An error worth retrying: the service was momentarily unable to answer, not a wrong request."""
    from google.api_core import exceptions as gexc

    return isinstance(
        exc,
        (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.Aborted),
    )


def create_retry() -> object:
    """The retry of ``CreateWriteStream``: transient errors only, bounded by ``RETRY_DEADLINE_S``.

    Passed explicitly so that the library's default (which also retries for 20 minutes) does not apply.
    """
    from google.api_core.retry import Retry

    return Retry(
        predicate=transient,
        initial=RETRY_INITIAL_S,
        maximum=10.0,
        multiplier=2.0,
        timeout=bqclient.RETRY_DEADLINE_S,
        on_error=lambda exc: log.warning("bigquery_streaming_v2: creating a write stream failed (%s); retrying", exc),
    )


def plain_types(table: pa.Table) -> pa.Table:
    """large_string/large_binary/large_list as their 32-bit forms, which the Write API's Arrow reader takes."""

    def plain(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t):
            return pa.string()
        if pa.types.is_large_binary(t):
            return pa.binary()
        if pa.types.is_large_list(t) or pa.types.is_list(t):
            return pa.list_(plain(t.value_type))
        if pa.types.is_struct(t):
            return pa.struct([pa.field(f.name, plain(f.type)) for f in t])
        return t

    schema = pa.schema([pa.field(f.name, plain(f.type)) for f in table.schema])
    return table if schema == table.schema else table.cast(schema)


def _varint_bytes(n: np.ndarray) -> np.ndarray:
    """Bytes of the protobuf varint of each (non-negative) length."""
    return 1 + sum((n >= 1 << (7 * k)).astype(np.int64) for k in range(1, 5))


def proto_row_bytes(table: pa.Table) -> np.ndarray:
    """Each row's size as bizon's protobuf message of it, which bizon compared with ``MAX_ROW_SIZE_BYTES``.

    bizon serialized every row to a message of the table's scalar columns, nested values (dict, list) as
    their JSON text, and left nulls out. So per non-null column: a tag byte, then for text, bytes and
    nested values a length varint and the bytes (nested: the value's compact JSON), for a number its
    width. The bookkeeping columns are bizon-fast's, not bizon's: not counted. A number's varint may be a
    few bytes off its width; a large row is megabytes of text, so only the text needs to be exact.
    """
    from bizon_fast.connectors.destinations.jsontext import row_json

    total = np.zeros(table.num_rows, dtype=np.int64)
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in BOOKKEEPING or column.null_count == len(column):
            continue
        t = column.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            length = pc.binary_length(column)
        elif pa.types.is_nested(t):  # '{"name":' + value + '}' of the one-column JSON, less the wrapping
            wrap = len(row_json(pa.record_batch([pa.array([None], t)], [name]))[0].as_py()) - len("null")
            json_rows = row_json(pa.Table.from_arrays([column], [name]).combine_chunks().to_batches()[0])
            length = pc.subtract(pc.binary_length(json_rows), wrap)
        else:
            width = 1 if pa.types.is_boolean(t) else (t.byte_width if t.bit_width % 8 == 0 else 8)
            size = pc.if_else(pc.is_valid(column), 1 + width, 0)
            total += size.to_numpy(zero_copy_only=False).astype(np.int64)
            continue
        n = pc.fill_null(length, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
        total += np.where(valid, 1 + _varint_bytes(n) + n, 0)
    return total


def count_large(table: pa.Table) -> int:
    """Rows bizon would have called large: whose protobuf message is over ``LARGE_ROW_BYTES``."""
    return int(np.count_nonzero(proto_row_bytes(table) > LARGE_ROW_BYTES))


def chunks(table: pa.Table, limit: int = REQUEST_BYTES) -> list[pa.RecordBatch]:
    """Record batches of at most about ``limit`` bytes each (a single row bigger than that goes alone)."""
    if table.num_rows == 0:
        return []
    per_row = max(1, table.nbytes // table.num_rows)
    rows = max(1, limit // per_row)
    out = []
    for batch in table.combine_chunks().to_batches(max_chunksize=rows):
        if batch.nbytes > limit and batch.num_rows > 1:
            half = batch.num_rows // 2
            out += chunks(pa.Table.from_batches([batch.slice(0, half)]), limit)
            out += chunks(pa.Table.from_batches([batch.slice(half)]), limit)
        else:
            out.append(batch)
    return out


class BigQueryStreamingV2Destination(StagedBigQueryDestination):
    name = "bigquery_streaming_v2"
    config_class = BigQueryStreamingV2Details
    capabilities = CAPABILITIES

    def __init__(self, config: Any, context: Any) -> None:
        super().__init__(config, context)
        self._writer: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending_supported: bool | None = None
        self._pending_lock = threading.Lock()
        self.requests = 0

    @property
    def writer(self) -> Any:
        if self._writer is None:
            auth = self.config.authentication
            self._writer = bqclient.write_client(
                auth.service_account_key if auth else "", key_path=f"{KEY}.authentication.service_account_key"
            )
        return self._writer

    def _parent(self) -> str:
        project, dataset, table = self.stage_id.split(".")
        return f"projects/{project}/datasets/{dataset}/tables/{table}"

    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        units = self.units(split_id, first_seq, last_seq, batches, UNIT_BYTES)
        tables = [t for f, la, group in units if (t := self.rows(split_id, f, la, group)) is not None]
        if not tables:
            return
        self.ensure_stage(tables[0].schema)
        if len(tables) == 1:
            self._append_unit(tables[0])
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.config.max_concurrent_threads, thread_name_prefix="bq-write")
            for future in [self._pool.submit(self._append_unit, t) for t in tables]:
                future.result()
        self.large_rows += sum(count_large(t) for t in tables)  # every unit appended: durable

    def _requests(self, stream: str, table: pa.Table, with_offsets: bool) -> list[Any]:
        from google.cloud.bigquery_storage_v1 import types

        table = plain_types(table)
        schema = types.ArrowSchema(serialized_schema=table.schema.serialize().to_pybytes())
        out, offset = [], 0
        for i, batch in enumerate(chunks(table)):
            data = types.AppendRowsRequest.ArrowData(
                rows=types.ArrowRecordBatch(
                    serialized_record_batch=batch.serialize().to_pybytes(), row_count=batch.num_rows
                )
            )
            if i == 0:
                data.writer_schema = schema
            request = types.AppendRowsRequest(
                write_stream=stream, arrow_rows=data
            )  # the emulator wants it on every one
            if with_offsets:
                request.offset = offset
            offset += batch.num_rows
            out.append(request)
        return out

    def _send(self, requests: list[Any]) -> None:
        self.api_calls += 1
        self.requests += len(requests)
        for i, response in enumerate(
            self.writer.append_rows(iter(requests), retry=None, timeout=bqclient.RETRY_DEADLINE_S)
        ):
            if i + 1 < len(requests):  # some of the unit's requests answered, not all: an incomplete write
                fault_point("bigquery_v2.mid_append")
            if response.error and response.error.code:
                raise RuntimeError(f"bigquery_streaming_v2: append to {self.stage_id} failed: {response.error.message}")
            if response.row_errors:
                raise RuntimeError(
                    f"bigquery_streaming_v2: rows rejected by {self.stage_id}: {response.row_errors[:3]}"
                )

    def _append_unit(self, table: pa.Table) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud.bigquery_storage_v1 import types

        if self._pending_supported is not False:
            try:
                self.api_calls += 1
                stream = self.writer.create_write_stream(
                    parent=self._parent(),
                    write_stream=types.WriteStream(type_=types.WriteStream.Type.PENDING),
                    retry=create_retry(),
                    timeout=bqclient.RETRY_DEADLINE_S,
                )
                self._pending_supported = True
            except gexc.MethodNotImplemented as exc:  # an endpoint with only _default (UNIMPLEMENTED)
                with self._pending_lock:
                    if self._pending_supported:  # pending streams worked before: this is not "only _default"
                        raise
                    if self._pending_supported is None:
                        log.info("bigquery_streaming_v2: pending streams unavailable (%s); using _default", exc)
                    self._pending_supported = False
            else:
                self._send(self._requests(stream.name, table, with_offsets=True))
                fault_point("bigquery_v2.mid_append")  # appended, neither finalized nor committed
                self.api_calls += 2
                self.writer.finalize_write_stream(name=stream.name)
                commit = self.writer.batch_commit_write_streams(
                    types.BatchCommitWriteStreamsRequest(parent=self._parent(), write_streams=[stream.name])
                )
                if commit.stream_errors:
                    raise RuntimeError(
                        f"bigquery_streaming_v2: commit to {self.stage_id} failed: {commit.stream_errors}"
                    )
                return
        self._send(self._requests(f"{self._parent()}/streams/_default", table, with_offsets=False))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._writer = None
        super().close()
