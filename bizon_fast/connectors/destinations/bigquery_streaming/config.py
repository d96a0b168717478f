"""Config and capabilities of ``bigquery_streaming`` (insertAll: appends in every sync mode)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from bizon_fast.config.blocks import Strict, as_mapping
from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import BigQueryRecordSchemaConfig, DestinationDetails, TimePartitioningType
from bizon_fast.connectors.destinations.bigquery.config import BigQueryAuthentication, table_of


class TimePartitioning(Strict):
    type: TimePartitioningType = "DAY"
    field: str = "_bizon_loaded_at"


class BigQueryStreamingDetails(DestinationDetails):
    """``bigquery_streaming`` (insertAll); ``bigquery_streaming_v2`` (Storage Write API) has the same keys."""

    project_id: str
    dataset_id: str
    dataset_location: str = "US"
    time_partitioning: TimePartitioning = Field(default_factory=TimePartitioning)
    bq_max_rows_per_request: int = Field(5000, ge=1, le=10000)
    table_prefix: str = "_bizon_"
    record_schemas: list[BigQueryRecordSchemaConfig] | None = None
    authentication: BigQueryAuthentication | None = None

    def describe_output(self, source_name: str, stream: str) -> str:
        return table_of(self, source_name, stream)

    @field_validator("time_partitioning", mode="before")
    @classmethod
    def _bare_window(cls, value: Any) -> Any:
        """Later bizon versions accept a bare window (``DAY``); it means ``{type: DAY}``."""
        return {"type": value} if isinstance(value, str) else as_mapping(value)


#: the model of ``destination.config``
CONFIG_CLASS = BigQueryStreamingDetails
#: insertAll rows are visible at once and cannot be taken back: a replay may repeat rows, and a
#: stream cannot be reset (it appends in every sync mode)
CAPABILITIES = DestinationCapabilities(
    effectively_once=False,
    wrapper_buffer_size=True,
    supports_reset=False,
    default_alias="bigquery",
    clustering_keys=True,
)
