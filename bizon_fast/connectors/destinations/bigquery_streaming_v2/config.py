"""Config and capabilities of ``bigquery_streaming_v2`` (Storage Write API, committed per (split, seq))."""

from __future__ import annotations

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.connectors.destinations.bigquery_streaming.config import BigQueryStreamingDetails


class BigQueryStreamingV2Details(BigQueryStreamingDetails):
    pass


#: the model of ``destination.config``
CONFIG_CLASS = BigQueryStreamingV2Details
#: rows are staged per (split, seq) and published once: a replay replaces its own rows
CAPABILITIES = DestinationCapabilities(
    effectively_once=True, wrapper_buffer_size=True, default_alias="bigquery", clustering_keys=True
)
