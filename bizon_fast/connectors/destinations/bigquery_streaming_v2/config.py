"""Config and capabilities of ``bigquery_streaming_v2`` (Storage Write API, committed per (split, seq))."""

from __future__ import annotations

from pydantic import Field

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.connectors.destinations.bigquery_streaming.config import BigQueryStreamingDetails


class BigQueryStreamingV2Details(BigQueryStreamingDetails):
    """``bigquery_streaming_v2``: v1's keys, and bizon 0.6.4's ``enforce_partitioning`` (its rows are published
    like ``bigquery``'s, so a full refresh can rebuild a table partitioned otherwise)."""

    enforce_partitioning: bool = Field(
        False,
        description="a full refresh whose target table is partitioned differently drops it and recreates it "
        "partitioned as configured; off: the table keeps its partitioning and a warning says so",
    )


#: the model of ``destination.config``
CONFIG_CLASS = BigQueryStreamingV2Details
#: rows are staged per (split, seq) and published once: a replay replaces its own rows
CAPABILITIES = DestinationCapabilities(
    effectively_once=True, wrapper_buffer_size=True, default_alias="bigquery", clustering_keys=True
)
