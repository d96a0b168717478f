"""Config and capabilities of the ``bigquery`` destination (Parquet load jobs with deterministic ids)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bizon_fast.config.blocks import Strict
from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import BigQueryRecordSchemaConfig, DestinationDetails, TimePartitioning
from bizon_fast.config.paths import LOCAL_PATH


class BigQueryAuthentication(Strict):
    service_account_key: Annotated[str, LOCAL_PATH] = Field("", repr=False)  # a key file (or its JSON)


class BigQueryDetails(DestinationDetails):
    """``bigquery`` (Parquet load jobs; bizon's GCS bucket is accepted but not needed: bytes go into the job)."""

    project_id: str
    dataset_id: str
    dataset_location: str = "US"
    create_dataset: bool = False
    gcs_buffer_bucket: str | None = None
    gcs_buffer_format: Literal["parquet", "csv"] = "parquet"
    time_partitioning: TimePartitioning = Field(
        default_factory=TimePartitioning, description="{type, field} or a bare window (DAY, HOUR, MONTH, YEAR)"
    )
    enforce_partitioning: bool = Field(
        False,
        description="a full refresh whose target table is partitioned differently drops it and recreates it "
        "partitioned as configured (BigQuery cannot repartition a table in place); off: the table keeps its "
        "partitioning and a warning says so",
    )
    async_load: bool = False
    load_files_per_job: int = Field(10, ge=1)
    load_max_in_flight_jobs: int = Field(3, ge=1)
    table_prefix: str = "_bizon_"
    record_schemas: list[BigQueryRecordSchemaConfig] | None = None
    authentication: BigQueryAuthentication | None = None

    def describe_output(self, source_name: str, stream: str) -> str:
        return table_of(self, source_name, stream)


def table_of(details: DestinationDetails, source_name: str, stream: str) -> str:
    """``project.dataset.table`` of a BigQuery destination, by the rule the destinations use themselves
    (``destination_id``, else bizon's ``{table_prefix}{source}_{stream}``): the summary's ``output``."""
    from bizon_fast.connectors.destinations.bigquery.staged import StagedBigQueryDestination
    from bizon_fast.destination.base import DestinationContext

    naming = DestinationContext(job_id="", pipeline="", source_name=source_name, stream=stream, sync_mode="")
    return StagedBigQueryDestination.table_ref(details, naming)


#: the model of ``destination.config``
CONFIG_CLASS = BigQueryDetails
#: deterministic load-job ids per (split, seq range): a replayed job is found, not run twice
#: merge: ``MERGE`` from the stage at publish; schema evolution: ADD COLUMN / SET DATA TYPE before it (``merge``)
CAPABILITIES = DestinationCapabilities(
    effectively_once=True,
    wrapper_buffer_size=True,
    default_alias="bigquery",
    clustering_keys=True,
    merge=True,
    schema_evolution=True,
)
