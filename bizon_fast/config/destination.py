"""The ``destination:`` block: the common keys, the record schemas, and what a destination can do.

``destination.config`` is validated with the model the destination declares (its folder's
``config.py``, found through the :class:`~bizon_fast.config.catalog.ConnectorCatalog` handed to
validation). Rules that depend on the destination (bizon's wrapper-level ``buffer_size``, the
default ``alias``, whether ``--reset`` can work) read its
:class:`~bizon_fast.config.capabilities.DestinationCapabilities`, the same
declaration the engine reads, rather than tables of names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bizon_fast.config.blocks import Strict, as_mapping
from bizon_fast.config.capabilities import NO_CAPABILITIES
from bizon_fast.config.catalog import ConnectorCatalog, catalog_from
from bizon_fast.config.errors import fail


class DestinationColumn(BaseModel):
    """One column of an unnested record; extra keys (e.g. a BigQuery ``mode``) are ignored, as in bizon."""

    name: str
    type: str
    description: str | None = None


class RecordSchemaConfig(Strict):
    destination_id: str
    record_schema: list[DestinationColumn]


BigQueryColumnType = Literal[
    "BOOLEAN",
    "BYTES",
    "DATE",
    "DATETIME",
    "FLOAT",
    "FLOAT64",
    "GEOGRAPHY",
    "INTEGER",
    "INT64",
    "NUMERIC",
    "BIGNUMERIC",
    "JSON",
    "RECORD",
    "STRING",
    "TIME",
    "TIMESTAMP",
]
TimePartitioningType = Literal["DAY", "HOUR", "MONTH", "YEAR"]


class TimePartitioning(Strict):
    """A BigQuery table's time partitioning: the window and the column (bizon 0.6.4's ``{type, field}``).

    ``field: null`` (bizon's ingestion-time partitioning) is refused: bizon-fast publishes with
    ``CREATE TABLE ... AS SELECT``, which cannot make an ingestion-time partitioned table, and a
    key accepted but not honoured would leave a table partitioned differently than configured.
    """

    type: TimePartitioningType = "DAY"
    field: str = "_bizon_loaded_at"

    @model_validator(mode="before")
    @classmethod
    def _bare_window(cls, value: Any) -> Any:
        """The historical bare window (``time_partitioning: DAY``) means ``{type: DAY}``."""
        return {"type": value} if isinstance(value, str) else as_mapping(value)


class BigQueryColumn(DestinationColumn):
    type: BigQueryColumnType
    mode: Literal["NULLABLE", "REQUIRED", "REPEATED"]
    default_value_expression: str | None = None

    @field_validator("type", "mode", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        """BigQuery types and modes are case-insensitive; bizon only took upper case."""
        return value.upper() if isinstance(value, str) else value


class BigQueryRecordSchemaConfig(Strict):
    destination_id: str
    record_schema: list[BigQueryColumn]
    clustering_keys: list[str] | None = None


class DestinationDetails(Strict):
    """Common ``destination.config`` keys (bizon's AbstractDestinationDetailsConfig)."""

    buffer_size: float = Field(50, ge=0, description="MiB buffered per consumer before a write; 0 writes every batch")
    buffer_flush_timeout: float = Field(600, ge=0, description="seconds a buffered batch may wait; 0 disables")
    max_concurrent_threads: int = Field(10, ge=1)
    destination_id: str | None = None
    unnest: bool = False
    record_schemas: list[RecordSchemaConfig] | None = None
    authentication: dict[str, Any] | None = None
    write_disposition: Literal["append", "replace", "merge"] | None = Field(
        None,
        description="append: add the job's rows; replace: the job's rows become the table (full refresh); merge: "
        "upsert the job's rows by primary_key (the last version of a key wins; a full refresh or a reset rebuilds the "
        "table from the job's rows, one per key; a NULL key fails the job). Default: replace for full_refresh, "
        "append for incremental and stream",
    )
    primary_key: list[str] | None = Field(
        None,
        description="merge: the key columns; default: the source's primary key (the Postgres source reads it from "
        "the catalog)",
    )
    deleted_flag: str | None = Field(
        None,
        description="merge: a boolean column; a row whose flag is true removes its key from the destination "
        "(a soft delete marker from the source; hard deletes at the source need a full refresh)",
    )
    schema_evolution: Literal["evolve", "freeze", "fail"] = Field(
        "evolve",
        description="a column new at the source, or widened (int32 -> int64, float32 -> float64, varchar(n) -> text, "
        "numeric precision up): evolve: add / widen it in the destination; freeze: keep the destination's columns "
        "and types (new columns are dropped; rows that need a widening fail the job, they would not fit); fail: fail "
        "the job before anything is published. An incompatible change always "
        "fails the job before anything is published, naming the column and both types",
    )

    def describe_output(self, source_name: str, stream: str) -> str:
        """Where the rows go, for the run's summary: a path or a table, never a credential.

        Each destination's config says it, so the summary needs no connector-specific code; those that
        derive a default target name it from ``source_name`` and ``stream``. This default names the
        ``destination_id``, which is what most destinations write to.
        """
        return self.destination_id or f"{source_name}.{stream} (no destination_id)"

    @model_validator(mode="after")
    def _merge_keys(self) -> DestinationDetails:
        self.check_keys()
        return self

    def check_keys(self) -> None:
        """``deleted_flag`` and ``primary_key`` only mean something to a merge: set elsewhere they would be ignored.

        A method of its own so that a destination giving ``primary_key`` a wider meaning (postgres: the key of the
        tables it creates) overrides it: the field's after-validators run on the destination's model too.
        """
        if self.write_disposition != "merge":
            for key in ("deleted_flag", "primary_key"):
                if getattr(self, key) is not None:
                    fail(type(self).__name__, [((key,), f"{key} applies to write_disposition: merge only", True)])
        if self.primary_key is not None and not self.primary_key:
            fail(type(self).__name__, [(("primary_key",), "give at least one column", True)])

    @model_validator(mode="after")
    def _unnest_needs_schemas(self) -> DestinationDetails:
        """Unnesting writes the declared columns, so without ``record_schemas`` there is nothing to write."""
        if self.unnest and not self.record_schemas:
            fail(
                type(self).__name__,
                [(("unnest",), "unnest: true needs record_schemas (the columns of each destination_id)", True)],
            )
        return self


class DestinationConfig(Strict):
    name: str
    alias: str | None = None
    buffer_size: float | None = Field(
        None,
        ge=0,
        description="bizon's BigQuery wrapper-level buffer size: used as config.buffer_size when that is unset",
    )
    config: DestinationDetails = Field(default_factory=DestinationDetails)

    @model_validator(mode="before")
    @classmethod
    def _config_block(cls, data: Any) -> Any:
        """An absent ``config:`` still goes through the destination's model, which reports its required keys."""
        if isinstance(data, dict) and data.get("config") is None:
            data = {**data, "config": {}}
        return data

    @field_validator("name")
    @classmethod
    def _known_name(cls, value: str, info: ValidationInfo) -> str:
        connectors = catalog_from(info)
        if connectors.destination_config_class(value) is None:
            raise PydanticCustomError(
                "config", f"unknown destination '{value}'; available: {', '.join(connectors.destination_names())}"
            )
        return value

    @field_validator("config", mode="before")
    @classmethod
    def _details_for_name(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.data.get("name")
        if name is None:  # the name itself is invalid: its error says what to fix first
            return DestinationDetails.model_construct()
        model = catalog_from(info).destination_config_class(name) or DestinationDetails
        if isinstance(value, model):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump(by_alias=True, exclude_unset=True)
        return model.model_validate(value)

    @model_validator(mode="after")
    def _defaults(self, info: ValidationInfo) -> DestinationConfig:
        capabilities = catalog_from(info).destination_capabilities(self.name) or NO_CAPABILITIES
        if self.alias is None:
            self.alias = capabilities.default_alias or self.name
        if self.buffer_size is not None:
            if not capabilities.wrapper_buffer_size:
                fail(
                    "destination",
                    [
                        (
                            ("buffer_size",),
                            "only bigquery destinations take it here; use destination.config.buffer_size",
                            self.buffer_size,
                        )
                    ],
                )
            if "buffer_size" not in self.config.model_fields_set:
                self.config.buffer_size = self.buffer_size
        return self

    @classmethod
    def child_model(cls, field: str, data: Any, connectors: ConnectorCatalog | None = None) -> type[BaseModel] | None:
        if (
            field == "config"
            and connectors is not None
            and isinstance(data, dict)
            and isinstance(data.get("name"), str)
        ):
            try:
                return connectors.destination_config_class(data["name"])
            except Exception:  # noqa: BLE001 - only used to word an error message
                return None
        return None
