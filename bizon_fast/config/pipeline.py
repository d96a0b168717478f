"""The pipeline: the whole YAML (``PipelineConfig``), its ``transforms`` and bizon's ``streams`` block.

Blocks chosen by a connector's name are validated with the model that connector declares; the
:class:`~bizon_fast.config.catalog.ConnectorCatalog` that knows them is handed in through pydantic's
validation context (``PipelineConfig.model_validate(raw, context={CONTEXT_KEY: catalog})``).

Every bizon 0.5.2 pipeline that validated there validates here unchanged; blocks that bizon forbade
extra keys in forbid them here too, and a few places where bizon silently ignored a key now either
honour it or reject it with a message that says where it belongs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bizon_fast.config.alerting import AlertingConfig, MonitoringConfig, SecretsConfig
from bizon_fast.config.blocks import Strict
from bizon_fast.config.capabilities import NO_CAPABILITIES
from bizon_fast.config.catalog import ConnectorCatalog, catalog_from
from bizon_fast.config.destination import BigQueryColumn, DestinationConfig
from bizon_fast.config.engine import EngineConfig
from bizon_fast.config.errors import Loc, fail
from bizon_fast.config.source import BizonSourceConfig, SourceConfig, source_config_classes, validate_source


class TransformModel(Strict):
    """One transform: bizon's per-record ``python`` code, or a vectorized ``sql``/``polars`` alternative.

    ``sql`` is a polars SQL query over the table ``batch``; ``polars`` is a polars expression
    string. Exactly one of the three is given.
    """

    label: str
    python: str | None = None
    sql: str | None = None
    polars: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TransformModel:
        given = [k for k in ("python", "sql", "polars") if getattr(self, k) is not None]
        if len(given) != 1:
            got = "none" if not given else " and ".join(given)
            fail("transform", [((), f"give exactly one of python, sql or polars (got {got})", None)])
        return self


class StreamSourceConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    topic: str | None = None
    endpoint: str | None = None


class StreamDestinationConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    table_id: str
    record_schema: list[BigQueryColumn] | None = None
    clustering_keys: list[str] | None = None

    @field_validator("table_id")
    @classmethod
    def _three_parts(cls, value: str) -> str:
        if len(value.split(".")) != 3 or not all(value.split(".")):
            raise PydanticCustomError("config", "expected 'project.dataset.table' (3 dot-separated parts)")
        return value


class StreamConfig(Strict):
    name: str
    source: StreamSourceConfig = Field(default_factory=StreamSourceConfig)
    destination: StreamDestinationConfig


def inject_config_from_streams(data: dict[str, Any], connectors: ConnectorCatalog) -> dict[str, Any]:
    """bizon's ``inject_config_from_streams``: fill Kafka topics and record schemas from ``streams``.

    Runs before validation and only touches well-formed parts (validation reports the rest).
    Unlike bizon, ``clustering_keys`` is injected only for destinations whose record schemas take it
    (BigQuery's): the others' have no such key, so bizon rejected every streams + file/logger pipeline.
    """
    streams = data.get("streams")
    if not isinstance(streams, list):
        return data
    entries = [
        s
        for s in streams
        if isinstance(s, dict) and isinstance(s.get("destination"), dict) and s["destination"].get("table_id")
    ]
    data = dict(data)
    source = data.get("source")
    if isinstance(source, dict) and source.get("name") == "kafka" and not source.get("topics"):
        topics = [
            {"name": s["source"]["topic"], "destination_id": s["destination"]["table_id"]}
            for s in entries
            if isinstance(s.get("source"), dict) and s["source"].get("topic")
        ]
        data["source"] = {**source, "topics": topics}
    destination = data.get("destination")
    if isinstance(destination, dict) and isinstance(destination.get("config") or {}, dict):
        details = destination.get("config") or {}
        if not details.get("record_schemas"):
            name = destination.get("name")
            capabilities = connectors.destination_capabilities(name) if isinstance(name, str) else None
            clustering = capabilities is not None and capabilities.clustering_keys
            schemas = []
            for s in entries:
                if not s["destination"].get("record_schema"):
                    continue
                schema = {
                    "destination_id": s["destination"]["table_id"],
                    "record_schema": s["destination"]["record_schema"],
                }
                if clustering:
                    schema["clustering_keys"] = s["destination"].get("clustering_keys")
                schemas.append(schema)
            if schemas:
                data["destination"] = {**destination, "config": {**details, "record_schemas": schemas}}
    return data


class PipelineConfig(Strict):
    name: str
    source: SourceConfig
    transforms: list[TransformModel] = Field(default_factory=list)
    destination: DestinationConfig
    engine: EngineConfig = Field(default_factory=EngineConfig)
    alerting: AlertingConfig | None = None
    monitoring: MonitoringConfig | None = None
    secrets: SecretsConfig | None = None
    streams: list[StreamConfig] | None = None

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if not (k in ("engine", "transforms") and v is None)}
        return inject_config_from_streams(data, catalog_from(info))

    @field_validator("source", mode="before")
    @classmethod
    def _connector_source(cls, value: Any, info: ValidationInfo) -> Any:
        return validate_source(value, catalog_from(info))

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> PipelineConfig:
        errors: list[tuple[Loc, str, Any]] = []
        if self.streams is not None:
            if self.source.sync_mode != "stream":
                errors.append(
                    (
                        ("streams",),
                        f"a streams block needs source.sync_mode: stream (got '{self.source.sync_mode}')",
                        None,
                    )
                )
            names: dict[str, int] = {}
            tables: dict[str, int] = {}
            for i, stream in enumerate(self.streams):
                if stream.name in names:
                    errors.append(
                        (
                            ("streams", i, "name"),
                            f"duplicate stream name '{stream.name}' (also streams[{names[stream.name]}])",
                            stream.name,
                        )
                    )
                names.setdefault(stream.name, i)
                table = stream.destination.table_id
                if table in tables:
                    errors.append(
                        (
                            ("streams", i, "destination", "table_id"),
                            f"duplicate table_id '{table}' (also streams[{tables[table]}])",
                            table,
                        )
                    )
                tables.setdefault(table, i)
        if (
            self.source.reset
            and self.source.sync_mode == "incremental"
            and not (
                catalog_from(info).destination_capabilities(self.destination.name) or NO_CAPABILITIES
            ).supports_reset
        ):
            errors.append(
                (
                    ("source", "reset"),
                    f"destination '{self.destination.name}' appends in every sync mode, so it cannot reset a stream; "
                    "use bigquery_streaming_v2 or bigquery",
                    True,
                )
            )
        capabilities = catalog_from(info).destination_capabilities(self.destination.name) or NO_CAPABILITIES
        details = self.destination.config
        if getattr(details, "write_disposition", None) == "merge" and not capabilities.merge:
            errors.append(
                (
                    ("destination", "config", "write_disposition"),
                    f"destination '{self.destination.name}' cannot merge; merge is supported by postgres, bigquery "
                    "and file (parquet)",
                    "merge",
                )
            )
        if errors:
            fail("pipeline", errors)
        return self

    @classmethod
    def child_model(cls, field: str, data: Any, connectors: ConnectorCatalog | None = None) -> type[BaseModel] | None:
        if field == "source" and isinstance(data, dict):
            src = data.get("source")
            named = isinstance(src, dict) and isinstance(src.get("name"), str) and isinstance(src.get("stream"), str)
            if connectors is not None and named:
                try:
                    return source_config_classes(connectors, src["name"], src["stream"], src.get("source_file_path"))[0]
                except Exception:  # noqa: BLE001 - only used to word an error message
                    return BizonSourceConfig
            return BizonSourceConfig
        return None
