"""A batch as BigQuery rows: the declared columns (unnest), bizon's envelope for source records, or the typed
columns as they are. Shared by the load-job, insertAll and Storage Write destinations."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from bizon_fast.source.records import is_source_records

#: bizon's BigQuery names of the envelope columns, in bizon's order
ENVELOPE_NAMES = {
    "source_record_id": "_source_record_id",
    "source_timestamp": "_source_timestamp",
    "source_data": "_source_data",
    "bizon_extracted_at": "_bizon_extracted_at",
    "bizon_loaded_at": "_bizon_loaded_at",
    "bizon_id": "_bizon_id",
}


def bigquery_rows(
    batch: pa.RecordBatch,
    declared: list[tuple[str, str]] | None,
    *,
    job_id: str,
    split_id: str,
    seq: int,
    offset: int,
    loaded_at: datetime,
) -> pa.Table:
    """A batch as BigQuery rows: the declared columns (unnest), bizon's envelope for source records, or
    the typed columns as they are."""
    from bizon_fast.connectors.destinations.envelope import envelope, unnest  # polars: only when needed

    if declared is not None:
        return unnest(batch, declared, enforce_types=True).to_arrow()
    if is_source_records(batch.schema):
        frame = envelope(batch, job_id=job_id, split_id=split_id, seq=seq, loaded_at=loaded_at, row_offset=offset)
        return frame.rename(ENVELOPE_NAMES).select(list(ENVELOPE_NAMES.values())).to_arrow()
    return pa.Table.from_batches([batch.replace_schema_metadata(None)])
