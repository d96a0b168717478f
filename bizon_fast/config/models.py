"""Pydantic models of the pipeline config: bizon's YAML schema plus bizon-fast's engine keys.

Every bizon 0.5.2 pipeline that validated there validates here unchanged; blocks that bizon forbade
extra keys in forbid them here too, and a few places where bizon silently ignored a key now either
honour it or reject it with a message that says where it belongs.

Two blocks depend on a sibling value, so their model is chosen at validation time:

- ``source:`` is validated with the connector's own ``get_config_class()`` (found through
  :mod:`bizon_fast.connectors.registry`), so connector keys such as ``source.rows`` are checked
  and reported at their YAML path;
- ``destination.config`` is validated with the destination class's ``config_class``, falling back
  to the models below for destinations whose code is not written yet.

The connector registry is imported lazily (inside validators): it imports
``bizon_fast.destination.base``, which imports this module, and connectors may need optional
libraries that config validation must not pull in at import time.
"""

from __future__ import annotations

import os
import re
import typing
from copy import copy
from datetime import datetime
from typing import Any, ClassVar, Literal, NoReturn

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

from bizon_fast.source.base import SourceConfig

Loc = tuple[str | int, ...]


_PYDANTIC_ERROR_TYPES = frozenset(typing.get_args(ErrorType))


def fail(title: str, errors: list[tuple[Loc, str, Any]], carried: ValidationError | None = None) -> NoReturn:
    """Raise ``errors`` (location, message, offending input) from inside a validator.

    Pydantic merges a ValidationError raised in a validator into the outer one and prefixes the
    outer location, so the user is told ``streams[1].destination.table_id`` rather than ``<root>``.
    ``carried`` errors are raised along with them, keeping their own types (and so their wording).
    """
    details = [
        InitErrorDetails(type=PydanticCustomError("config", msg), loc=loc, input=value) for loc, msg, value in errors
    ]
    for err in carried.errors() if carried is not None else []:
        kind = err["type"]
        if kind in _PYDANTIC_ERROR_TYPES and kind not in ("value_error", "assertion_error"):
            details.append(InitErrorDetails(type=kind, loc=err["loc"], input=err.get("input"), ctx=err.get("ctx", {})))
        else:
            details.append(
                InitErrorDetails(
                    type=PydanticCustomError("config", _plain_msg(err)), loc=err["loc"], input=err.get("input")
                )
            )
    raise ValidationError.from_exception_data(title, details)


def _plain_msg(err: Any) -> str:
    """Pydantic's message, with the "Value error, " prefix that ValueError-based validators get removed."""
    msg = err["msg"]
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _as_mapping(value: Any) -> Any:
    """``config:`` left empty in YAML is None; treat it as an empty block so defaults and required keys apply."""
    return {} if value is None else value


class Strict(BaseModel):
    """A block that rejects unknown keys (typos must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    @classmethod
    def child_model(cls, field: str, data: Any) -> type[BaseModel] | None:
        """The model validating ``field`` when it depends on a sibling (``data`` is this block's raw dict).

        None means "the field's annotation says". Used by the error formatter to list the keys a
        block accepts; the validators below make the same choice.
        """
        return None


# ---------------------------------------------------------------- source


class ApiConfig(Strict):
    """bizon's ``source.api_config``; its ``retry_limit`` is accepted (bizon never read it either)."""

    retry_limit: int = Field(10, ge=0)


class TokenAuthParams(BaseModel):
    """``authentication.params`` for ``api_key``/``bearer``. Extra keys are ignored, as in bizon."""

    token: str = Field(repr=False)
    auth_method: str = "Bearer"
    auth_header: str = "Authorization"


class BasicAuthParams(BaseModel):
    username: str
    password: str = Field("", repr=False)
    auth_method: str = "Basic"
    auth_header: str = "Authorization"


class OAuth2AuthParams(BaseModel):
    token_refresh_endpoint: str
    client_id: str
    client_secret: str = Field(repr=False)
    refresh_token: str | None = Field(None, repr=False)
    scopes: list[str] | None = None
    token_expiry_date: datetime | None = None
    token_expiry_date_format: str | None = None
    access_token_name: str = "access_token"
    expires_in_name: str = "expires_in"
    refresh_request_body: dict[str, Any] | None = None
    grant_type: str = "refresh_token"
    response_field_path: str | None = None


class CookiesAuthParams(BaseModel):
    cookies: dict[str, Any]
    headers: dict[str, Any] = Field(default_factory=dict)


AuthType = Literal["oauth", "api_key", "bearer", "basic", "cookies"]
AuthParams = TokenAuthParams | BasicAuthParams | OAuth2AuthParams | CookiesAuthParams

#: the params shape each auth type means; bizon's union is not discriminated, so others are tried next
AUTH_PARAMS: dict[str, type[BaseModel]] = {
    "api_key": TokenAuthParams,
    "bearer": TokenAuthParams,
    "basic": BasicAuthParams,
    "oauth": OAuth2AuthParams,
    "cookies": CookiesAuthParams,
}
_AUTH_PARAMS_ORDER = (TokenAuthParams, BasicAuthParams, OAuth2AuthParams, CookiesAuthParams)


class AuthConfig(BaseModel):
    """``source.authentication``: ``type`` plus ``params``. Connectors narrow it (e.g. api_key only).

    Extra keys are allowed here because connectors add their own beside ``params`` (Kafka's
    ``schema_registry_url``); a connector's subclass may forbid them.
    """

    model_config = ConfigDict(extra="allow")

    type: AuthType
    params: AuthParams

    @field_validator("params", mode="before")
    @classmethod
    def _params_for_type(cls, value: Any, info: ValidationInfo) -> Any:
        """Validate params with the shape ``type`` names, so errors are about that shape only.

        bizon accepted any shape of its union whatever the type; to keep accepting those configs,
        the other shapes are tried before reporting the type's own errors.
        """
        if isinstance(value, BaseModel):
            return value
        preferred = AUTH_PARAMS.get(info.data.get("type", ""))
        first_error: ValidationError | None = None
        for model in (preferred, *(m for m in _AUTH_PARAMS_ORDER if m is not preferred)):
            if model is None:
                continue
            try:
                return model.model_validate(value)
            except ValidationError as exc:
                first_error = first_error or exc
        if preferred is None and isinstance(value, dict):
            return TokenAuthParams.model_construct()  # ``type`` is invalid: its error says what to fix first
        assert first_error is not None
        raise first_error  # pydantic nests its errors under ``params``

    @classmethod
    def child_model(cls, field: str, data: Any) -> type[BaseModel] | None:
        if field == "params" and isinstance(data, dict):
            return AUTH_PARAMS.get(data.get("type"))
        return None


SyncMode = Literal["full_refresh", "incremental", "stream"]


class BizonSourceConfig(SourceConfig):
    """bizon's common ``source:`` keys, typed. Connector config classes may subclass it.

    When a connector's class derives from the plain ``SourceConfig`` instead, these keys are still
    checked: :func:`source_config_classes` adds them to the connector's class for validation.
    """

    sync_mode: SyncMode = "full_refresh"
    max_iterations: int | None = Field(None, ge=0)
    authentication: AuthConfig | None = None
    api_config: ApiConfig = Field(default_factory=ApiConfig)
    init_pipeline: bool = True

    @field_validator("api_config", mode="before")
    @classmethod
    def _empty_api_config(cls, value: Any) -> Any:
        return _as_mapping(value)


class KafkaAuthConfig(AuthConfig):
    """bizon's Kafka auth: SASL ``basic`` only, plus the schema registry's location and credentials.

    ``params`` may be left out for a broker without SASL that still needs the schema registry keys;
    ``schema_registry_type: confluent`` (``/schemas/ids/{id}``, 4-byte ids) is added to bizon's apicurio.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["basic"] = "basic"
    params: BasicAuthParams | None = None  # type: ignore[assignment]
    schema_registry_type: Literal["apicurio", "confluent"] = "apicurio"
    schema_registry_url: str = ""
    schema_registry_username: str = ""
    schema_registry_password: str = Field("", repr=False)

    @field_validator("params", mode="before")
    @classmethod
    def _params_for_type(cls, value: Any, info: ValidationInfo) -> Any:
        return value


class KafkaTopicConfig(Strict):
    name: str
    destination_id: str


def _default_kafka_consumer_config() -> dict[str, Any]:
    return {
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 45000,
        "security.protocol": "SASL_SSL",
    }


class KafkaSourceConfig(BizonSourceConfig):
    """bizon's ``kafka`` source keys, plus bizon-fast's (``record_layout``, ``commit_group_offsets``,
    ``stream_splits``). Also the fallback model when confluent-kafka is not installed.

    Unknown keys stay allowed (bizon's kafka example carries ``nb_bytes_schema_id`` and
    ``timestamp_ms_name``, which are not fields). ``authentication`` is optional (bizon required it):
    it is needed only for SASL brokers, which the config check below enforces.
    """

    topics: list[KafkaTopicConfig] = Field(default_factory=list)
    bootstrap_servers: str
    group_id: str = "bizon"
    batch_size: int = Field(100, ge=1, le=1_000_000, description="messages per consume() call")
    consumer_timeout: float = Field(10, gt=0, description="seconds: consume() wait, metadata and end-of-data timeout")
    consumer_config: dict[str, Any] = Field(default_factory=_default_kafka_consumer_config)
    message_encoding: Literal["utf-8", "avro"] = "avro"
    skip_message_empty_value: bool = True
    skip_message_invalid_keys: bool = False
    skip_message_on_decode_error: bool = False
    authentication: KafkaAuthConfig | None = None
    record_layout: Literal["bizon", "columns"] = Field(
        "bizon",
        description="bizon: bizon's records (id, data JSON text, timestamp, destination_id); "
        "columns: the decoded value's typed columns plus _source_* metadata columns",
    )
    commit_group_offsets: bool = Field(True, description="also commit committed cursor positions to group_id")
    stream_splits: int = Field(1, ge=1, description="stream mode: splits per topic (partitions dealt among them)")
    batch_bytes: int = Field(4 << 20, ge=1, description="raw message bytes gathered into one Arrow batch at most")

    @field_validator("topics", mode="before")
    @classmethod
    def _no_topics(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSourceConfig:
        protocol = str(self.consumer_config.get("security.protocol", "plaintext")).upper()
        explicit = "sasl.username" in self.consumer_config
        if (
            protocol.startswith("SASL")
            and not explicit
            and (self.authentication is None or not self.authentication.params)
        ):
            raise PydanticCustomError(
                "config",
                "consumer_config security.protocol is {protocol}: set source.authentication (type: basic, "
                "params: {username, password}), or set consumer_config security.protocol: PLAINTEXT",
                {"protocol": protocol},
            )
        return self


#: sources with no connector code in bizon-fast yet whose config is still validated: name -> (model, streams)
FALLBACK_SOURCES: dict[str, tuple[type[SourceConfig], list[str]]] = {
    "kafka": (KafkaSourceConfig, ["topic"]),
}

#: bizon's other built-in sources, named in the error when a pipeline asks for one
BIZON_ONLY_SOURCES = ("cycle", "gbif", "gsheets", "hubspot", "notion", "periscope", "pokeapi", "sana_ai")


class SourceLookupError(Exception):
    """The ``source:`` block names a source or stream that does not exist; ``key`` is the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


_REGISTRY_ERROR = re.compile(r"^source\.(\w+): (.*)$", re.DOTALL)


def available_sources() -> list[str]:
    """Source names a pipeline can use: connectors in the tree plus the fallback models."""
    from bizon_fast.connectors import registry

    return sorted(set(registry.source_names()) | set(FALLBACK_SOURCES))


def _with_common_keys(cls: type[SourceConfig]) -> type[SourceConfig]:
    """``cls`` plus bizon's typed common keys it does not declare itself (for validation only).

    Pydantic takes an inherited field's definition from the first base, so multiple inheritance
    would keep ``SourceConfig``'s untyped ``sync_mode``; a subclass that redeclares the fields does not.
    """
    if issubclass(cls, BizonSourceConfig) or not issubclass(cls, SourceConfig):
        return cls
    cached = _COMMON_KEYS_CACHE.get(cls)
    if cached is not None:
        return cached
    base_fields = SourceConfig.model_fields
    fields: dict[str, Any] = {}
    for key, info in BizonSourceConfig.model_fields.items():
        own = cls.model_fields.get(key)
        inherited = (
            own is not None
            and key in base_fields
            and own.annotation == base_fields[key].annotation
            and own.default == base_fields[key].default
        )
        if own is None or inherited:
            fields[key] = (info.annotation, copy(info))
    combined = create_model(cls.__name__, __base__=cls, __module__=cls.__module__, **fields)
    _COMMON_KEYS_CACHE[cls] = combined
    return combined


_COMMON_KEYS_CACHE: dict[type, type[SourceConfig]] = {}


def source_config_classes(
    name: str, stream: str, source_file_path: str | None = None
) -> tuple[type[SourceConfig], type[SourceConfig]]:
    """(model to validate ``source:`` with, model of the returned config) for a source and stream.

    Raises :class:`SourceLookupError` for an unknown source, stream or custom-source file. A
    connector whose module cannot be imported (an optional library is missing) is validated with
    the fallback model, so ``config check`` works without the extra; running it will fail clearly.
    """
    from bizon_fast.connectors import registry
    from bizon_fast.errors import UserError

    if source_file_path or name in registry.source_names():
        try:
            cls = registry.source_class(name, stream, source_file_path).get_config_class()
        except UserError as exc:
            match = _REGISTRY_ERROR.match(str(exc))
            key, message = (match.group(1), match.group(2)) if match else ("name", str(exc))
            raise SourceLookupError(key, message) from None
        except ImportError as exc:
            if source_file_path:
                raise SourceLookupError("source_file_path", f"cannot import {source_file_path}: {exc}") from None
            fallback = FALLBACK_SOURCES.get(name, (BizonSourceConfig, []))[0]
            return fallback, fallback
        except Exception as exc:  # noqa: BLE001 - a user's custom source file failed to load
            if source_file_path:
                raise SourceLookupError(
                    "source_file_path", f"cannot load {source_file_path}: {type(exc).__name__}: {exc}"
                ) from None
            raise
        return _with_common_keys(cls), cls
    if name in FALLBACK_SOURCES:
        model, streams = FALLBACK_SOURCES[name]
        if stream not in streams:
            raise SourceLookupError(
                "stream", f"unknown stream '{stream}' for source '{name}'; available: {', '.join(streams)}"
            )
        return model, model
    available = ", ".join(available_sources())
    if name in BIZON_ONLY_SOURCES:
        raise SourceLookupError(
            "name", f"bizon's source '{name}' is not available in bizon-fast; available: {available}"
        )
    raise SourceLookupError("name", f"unknown source '{name}'; available: {available}")


def validate_source(value: Any) -> Any:
    """Validate a raw ``source:`` block with its connector's config class (see :func:`source_config_classes`)."""
    if isinstance(value, SourceConfig) or not isinstance(value, dict):
        return value
    name, stream, path = value.get("name"), value.get("stream"), value.get("source_file_path")
    if not (isinstance(name, str) and isinstance(stream, str) and (path is None or isinstance(path, str))):
        return BizonSourceConfig.model_validate(value)  # reports the missing or mistyped keys
    try:
        check_model, result_model = source_config_classes(name, stream, path)
    except SourceLookupError as exc:
        lookup_error: list[tuple[Loc, str, Any]] = [((exc.key,), exc.message, value.get(exc.key))]
        try:
            BizonSourceConfig.model_validate(value)
        except ValidationError as common:
            fail("source", lookup_error, carried=common)
        fail("source", lookup_error)
    checked = check_model.model_validate(value)
    if result_model is check_model:
        return checked
    return result_model.model_validate(value)


# ---------------------------------------------------------------- destination


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

    @model_validator(mode="after")
    def _unnest_needs_schemas(self) -> DestinationDetails:
        """Unnesting writes the declared columns, so without ``record_schemas`` there is nothing to write."""
        if self.unnest and not self.record_schemas:
            fail(
                type(self).__name__,
                [(("unnest",), "unnest: true needs record_schemas (the columns of each destination_id)", True)],
            )
        return self


class FileDestinationDetails(DestinationDetails):
    """``file``: NDJSON (bizon's layout) or a Parquet dataset, staged per job and published atomically."""

    format: Literal["json", "parquet"] = "json"
    fsync: bool = Field(
        False,
        description="fsync every part file and directory change: writes already survive a process crash "
        "(atomic renames); fsync makes them survive a power loss or kernel crash too, at a throughput cost",
    )


class LoggerDestinationDetails(DestinationDetails):
    dummy: str = "bizon"


class NoopDestinationDetails(DestinationDetails):
    pass


class BigQueryAuthentication(Strict):
    service_account_key: str = Field("", repr=False)


class BigQueryDetails(DestinationDetails):
    """``bigquery`` (Parquet load jobs; bizon's GCS bucket is accepted but not needed: bytes go into the job)."""

    project_id: str
    dataset_id: str
    dataset_location: str = "US"
    create_dataset: bool = False
    gcs_buffer_bucket: str | None = None
    gcs_buffer_format: Literal["parquet", "csv"] = "parquet"
    time_partitioning: TimePartitioningType = "DAY"
    async_load: bool = False
    load_files_per_job: int = Field(10, ge=1)
    load_max_in_flight_jobs: int = Field(3, ge=1)
    table_prefix: str = "_bizon_"
    record_schemas: list[BigQueryRecordSchemaConfig] | None = None
    authentication: BigQueryAuthentication | None = None


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

    @field_validator("time_partitioning", mode="before")
    @classmethod
    def _bare_window(cls, value: Any) -> Any:
        """Later bizon versions accept a bare window (``DAY``); it means ``{type: DAY}``."""
        return {"type": value} if isinstance(value, str) else _as_mapping(value)


class BigQueryStreamingV2Details(BigQueryStreamingDetails):
    pass


class PostgresDestinationDetails(DestinationDetails):
    """A Postgres table destination: a ``dsn``, or host/port/database/schema/username/password."""

    dsn: str | None = Field(None, repr=False)
    host: str | None = None
    port: int = Field(5432, ge=1, le=65535)
    database: str | None = None
    schema_name: str = Field("public", alias="schema")
    username: str | None = None
    password: str | None = Field(None, repr=False)
    lock_timeout: float = Field(
        60,
        gt=0,
        description="seconds a statement of the destination waits for a table lock (the full refresh's swap, "
        "an append, the stage's DDL) before the job fails, naming the session that holds it; nothing is published",
    )

    @model_validator(mode="after")
    def _dsn_or_host(self) -> PostgresDestinationDetails:
        if not self.dsn:
            missing = [k for k in ("host", "database", "username") if not getattr(self, k)]
            if missing:
                fail(
                    type(self).__name__,
                    [
                        ((k,), "missing required key (or give a dsn: postgresql://user:pass@host/db)", None)
                        for k in missing
                    ],
                )
        return self


#: ``destination.config`` models for destinations without code (and the built-ins, if theirs fail to import)
FALLBACK_DESTINATION_DETAILS: dict[str, type[DestinationDetails]] = {
    "bigquery": BigQueryDetails,
    "bigquery_streaming": BigQueryStreamingDetails,
    "bigquery_streaming_v2": BigQueryStreamingV2Details,
    "file": FileDestinationDetails,
    "logger": LoggerDestinationDetails,
    "noop": NoopDestinationDetails,
    "postgres": PostgresDestinationDetails,
}
BIGQUERY_DESTINATIONS = ("bigquery", "bigquery_streaming", "bigquery_streaming_v2")
#: bizon's ``destination.alias`` defaults (the type tag sent to Datadog); others default to the name
DEFAULT_ALIASES = dict.fromkeys(BIGQUERY_DESTINATIONS, "bigquery")


def available_destinations() -> list[str]:
    from bizon_fast.connectors import registry

    return sorted(set(registry.DESTINATIONS) | set(FALLBACK_DESTINATION_DETAILS))


def destination_details_class(name: str) -> type[DestinationDetails] | None:
    """The model of ``destination.config`` for destination ``name`` (None when the name is unknown)."""
    from bizon_fast.connectors import registry

    if name in registry.DESTINATIONS:
        try:
            return registry.destination_class(name).config_class
        except (ImportError, AttributeError):
            pass  # not written yet, or an optional library is missing: validate with the fallback model
    return FALLBACK_DESTINATION_DETAILS.get(name)


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
    def _known_name(cls, value: str) -> str:
        if destination_details_class(value) is None:
            raise PydanticCustomError(
                "config", f"unknown destination '{value}'; available: {', '.join(available_destinations())}"
            )
        return value

    @field_validator("config", mode="before")
    @classmethod
    def _details_for_name(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.data.get("name")
        if name is None:  # the name itself is invalid: its error says what to fix first
            return DestinationDetails.model_construct()
        model = destination_details_class(name) or DestinationDetails
        if isinstance(value, model):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump(by_alias=True, exclude_unset=True)
        return model.model_validate(value)

    @model_validator(mode="after")
    def _defaults(self) -> DestinationConfig:
        if self.alias is None:
            self.alias = DEFAULT_ALIASES.get(self.name, self.name)
        if self.buffer_size is not None:
            if self.name not in BIGQUERY_DESTINATIONS:
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
    def child_model(cls, field: str, data: Any) -> type[BaseModel] | None:
        if field == "config" and isinstance(data, dict) and isinstance(data.get("name"), str):
            try:
                return destination_details_class(data["name"])
            except Exception:  # noqa: BLE001 - only used to word an error message
                return None
        return None


# ---------------------------------------------------------------- engine


class BackendDetails(Strict):
    """``engine.backend.config`` for sqlite. ``schema_name`` is also accepted (bizon's README used it)."""

    database: str = "bizon"
    schema_name: str = Field("NOT_USED_IN_SQLITE", alias="schema")
    syncCursorInDBEvery: int = Field(10, ge=1)  # noqa: N815 - bizon's key
    echoEngine: bool = False  # noqa: N815 - bizon's key


class PostgresBackendDetails(BackendDetails):
    """Postgres checkpoint backend: bizon's host/port/username/password, or a ``dsn`` instead."""

    schema_name: str = Field("public", alias="schema")
    host: str | None = None
    port: int = Field(5432, ge=1, le=65535)
    username: str | None = None
    password: str | None = Field(None, repr=False)
    dsn: str | None = Field(None, repr=False)

    @model_validator(mode="after")
    def _dsn_or_host(self) -> PostgresBackendDetails:
        if not self.dsn:
            missing = [k for k in ("host", "username") if not getattr(self, k)]
            if missing:
                fail(
                    type(self).__name__,
                    [
                        ((k,), "missing required key (or give a dsn: postgresql://user:pass@host/db)", None)
                        for k in missing
                    ],
                )
        return self


class BigQueryBackendDetails(BackendDetails):
    """BigQuery checkpoint backend: ``database`` is the GCP project, ``schema`` the dataset.

    ``service_account_key`` is honoured (bizon dropped it silently and always used ADC).
    """

    database: str
    schema_name: str = Field(alias="schema")
    service_account_key: str = Field("", repr=False)


BACKEND_DETAILS: dict[str, type[BackendDetails]] = {
    "sqlite": BackendDetails,
    "sqlite_in_memory": BackendDetails,
    "postgres": PostgresBackendDetails,
    "bigquery": BigQueryBackendDetails,
}


def _typed_details(table: dict[str, type[BaseModel]], kind: Any, value: Any, default: type[BaseModel]) -> Any:
    """Validate a ``config:`` block with the model its sibling ``type`` selects."""
    if kind is None:  # the type itself is invalid: its error comes first
        return default.model_construct()
    model = table.get(kind, default)
    if isinstance(value, model):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_unset=True)
    return model.model_validate(_as_mapping(value))


# aliases: inside these classes the name ``type`` is the field, not the builtin
DetailsTable = dict[str, type[BaseModel]]
DetailsModel = type[BaseModel]


class _TypedBlock(Strict):
    """A ``{type, config}`` block whose ``config`` is validated by the model its ``type`` selects.

    Subclasses declare ``type`` and ``config`` and set the three class variables.
    """

    details_table: ClassVar[DetailsTable] = {}
    default_type: ClassVar[str] = ""
    default_details: ClassVar[DetailsModel] = BaseModel

    @model_validator(mode="before")
    @classmethod
    def _config_block(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("config") is None:
            data = {**data, "config": {}}
        return data

    @field_validator("config", mode="before", check_fields=False)
    @classmethod
    def _details_for_type(cls, value: Any, info: ValidationInfo) -> Any:
        return _typed_details(cls.details_table, info.data.get("type"), value, cls.default_details)

    @classmethod
    def child_model(cls, field: str, data: Any) -> type[BaseModel] | None:
        if field == "config" and isinstance(data, dict):
            return cls.details_table.get(data.get("type", cls.default_type))
        return None


class BackendConfig(_TypedBlock):
    details_table: ClassVar[DetailsTable] = BACKEND_DETAILS
    default_type: ClassVar[str] = "sqlite"
    default_details: ClassVar[DetailsModel] = BackendDetails

    type: Literal["sqlite", "sqlite_in_memory", "postgres", "bigquery"] = "sqlite"
    config: BackendDetails = Field(default_factory=BackendDetails)


class QueueDetails(Strict):
    """``engine.queue.config`` of the ``shm`` ring (bizon-fast's default); the base of the other queues."""

    ring_size_mb: int | None = Field(None, ge=1, description="shared-memory ring size; default: sized from workers")
    batch_size_mb: float = Field(4, gt=0, description="target Arrow batch size a producer writes into the ring")
    max_nb_messages: int = Field(1_000_000, ge=1)  # bizon's key, accepted


class PythonQueueSettings(Strict):
    max_size: int = Field(0, ge=0)


class PollingConsumerSettings(Strict):
    poll_interval: float = Field(1, ge=0)


class PythonQueueDetails(QueueDetails):
    queue: PythonQueueSettings = Field(default_factory=PythonQueueSettings)
    consumer: PollingConsumerSettings = Field(default_factory=PollingConsumerSettings)


class KafkaQueueSettings(Strict):
    """bizon's ``queue.bootstrap_server``; ``bootstrap_servers`` (the Kafka spelling) is accepted too."""

    bootstrap_server: str = Field(validation_alias=AliasChoices("bootstrap_server", "bootstrap_servers"))
    topic: str = "bizon"
    partitions: int = Field(12, ge=1, description="partitions of the topic when bizon-fast creates it")
    max_message_bytes: int = Field(
        1_000_000, ge=65_536, description="the broker's message limit: larger batches are sent in parts"
    )
    compression: Literal["lz4", "zstd"] = "lz4"
    producer_config: dict[str, Any] = Field(default_factory=dict, description="extra librdkafka producer settings")


class KafkaConsumerSettings(Strict):
    group_id: str = "bizon"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    enable_auto_commit: bool = Field(
        False, description="accepted for bizon; offsets are always committed after the checkpoint commit"
    )
    consumer_timeout_ms: int = Field(1000, ge=0)
    session_timeout_ms: int = Field(10_000, ge=1000, description="how soon the group notices a dead consumer")
    assignment: Literal["group", "static"] = Field(
        "group",
        description="group: partitions shared by the consumer group (several consumer machines); "
        "static: consumer i of n reads partitions p % n == i, offsets still in the group (one consumer machine)",
    )
    no_partitions_warning_s: float = Field(
        30.0, gt=0, description="a group consumer given no partition for this long says so in the log"
    )
    consumer_config: dict[str, Any] = Field(default_factory=dict, description="extra librdkafka consumer settings")


class KafkaQueueDetails(QueueDetails):
    queue: KafkaQueueSettings
    consumer: KafkaConsumerSettings = Field(default_factory=KafkaConsumerSettings)


class RabbitMQQueueSettings(Strict):
    host: str
    port: int = Field(5672, ge=1, le=65535)
    queue_name: str
    exchange: str = ""
    username: str = "guest"
    password: str = Field("guest", repr=False)
    virtual_host: str = "/"
    partitions: int | None = Field(None, ge=1, description="queues queue_name.0..n-1; default: one per consumer")
    prefetch: int = Field(16, ge=1, description="unacknowledged messages per consumer (backpressure)")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=65_536)

    def url(self) -> str:
        from urllib.parse import quote

        vhost = quote(self.virtual_host, safe="")
        return f"amqp://{quote(self.username, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/{vhost}"


class RabbitMQQueueDetails(QueueDetails):
    queue: RabbitMQQueueSettings
    consumer: PollingConsumerSettings = Field(default_factory=PollingConsumerSettings)


QUEUE_DETAILS: dict[str, type[QueueDetails]] = {
    "shm": QueueDetails,
    "python_queue": PythonQueueDetails,
    "kafka": KafkaQueueDetails,
    "rabbitmq": RabbitMQQueueDetails,
}


class QueueConfig(_TypedBlock):
    details_table: ClassVar[DetailsTable] = QUEUE_DETAILS
    default_type: ClassVar[str] = "shm"
    default_details: ClassVar[DetailsModel] = QueueDetails

    type: Literal["shm", "python_queue", "kafka", "rabbitmq"] = "shm"
    config: QueueDetails = Field(default_factory=QueueDetails)


class RunnerDetails(Strict):
    max_workers: int | None = Field(None, ge=1, description="workers: producers and consumers each (bizon's key)")
    producers: int | None = Field(None, ge=1)
    consumers: int | None = Field(None, ge=1)
    max_restarts: int = Field(5, ge=0, description="worker restarts allowed per job before it fails")
    role: Literal["all", "producer", "consumer"] = Field(
        "all", description="broker queues: which half of the pipeline this machine runs (--role)"
    )
    lease_seconds: float = Field(30, gt=0, description="broker queues: a dead producer's splits are re-leased after")
    stall_timeout_s: float = Field(
        60,
        gt=0,
        description="process runner: a worker silent this long (no heartbeat: stopped or frozen) while it holds "
        "work is killed and replaced like a crash; workers beat every second, so keep it at several seconds",
    )
    drain_timeout_s: float = Field(
        30,
        gt=0,
        description="Ctrl-C, SIGTERM or a source failure: in-flight batches get this long to be written; then "
        "the stragglers are killed, what is written is committed, and the same command resumes",
    )
    consumer_start_delay: float = Field(0, ge=0)  # bizon's key, accepted; bizon-fast never waits
    is_alive_check_interval: float = Field(2, gt=0)  # bizon's key, accepted; liveness uses process sentinels

    def workers(self) -> int:
        return self.max_workers or os.cpu_count() or 1

    def producer_count(self) -> int:
        return self.producers or self.workers()

    def consumer_count(self) -> int:
        return self.consumers or self.workers()


LogLevel = Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class RunnerConfig(Strict):
    type: Literal["thread", "process", "stream"] = "process"
    log_level: LogLevel = "INFO"
    config: RunnerDetails = Field(default_factory=RunnerDetails)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("config", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return _as_mapping(value)


class EngineConfig(Strict):
    backend: BackendConfig = Field(default_factory=BackendConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)

    @field_validator("backend", "queue", "runner", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return _as_mapping(value)


# ---------------------------------------------------------------- other blocks


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


class SlackAlertDetails(Strict):
    webhook_url: str = Field(repr=False)


class AlertingConfig(Strict):
    type: Literal["slack"]
    log_levels: list[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]] = Field(
        default_factory=lambda: ["ERROR"]
    )
    config: SlackAlertDetails


class DatadogDetails(Strict):
    enable_tracing: bool = False
    datadog_agent_host: str | None = None
    datadog_host_env_var: str | None = None
    datadog_agent_port: int = Field(8125, ge=1, le=65535)
    tags: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _host_given(self) -> DatadogDetails:
        if not self.datadog_agent_host and not self.datadog_host_env_var:
            fail("datadog", [(("datadog_agent_host",), "give datadog_agent_host or datadog_host_env_var", None)])
        return self


class MonitoringConfig(Strict):
    type: Literal["datadog"]
    enable_tracing: bool = Field(
        False, description="bizon's top-level flag (unused there): honoured as config.enable_tracing"
    )
    config: DatadogDetails

    @model_validator(mode="after")
    def _honour_top_level_tracing(self) -> MonitoringConfig:
        if self.enable_tracing:
            self.config.enable_tracing = True
        return self


class GsmSecretsConfig(Strict):
    project_id: str | None = None


class SecretsConfig(Strict):
    gsm: GsmSecretsConfig | None = None


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


# ---------------------------------------------------------------- pipeline


def inject_config_from_streams(data: dict[str, Any]) -> dict[str, Any]:
    """bizon's ``inject_config_from_streams``: fill Kafka topics and record schemas from ``streams``.

    Runs before validation and only touches well-formed parts (validation reports the rest).
    Unlike bizon, ``clustering_keys`` is injected only for BigQuery destinations: the others'
    record schemas have no such key, so bizon rejected every streams + file/logger pipeline.
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
            bigquery = destination.get("name") in BIGQUERY_DESTINATIONS
            schemas = []
            for s in entries:
                if not s["destination"].get("record_schema"):
                    continue
                schema = {
                    "destination_id": s["destination"]["table_id"],
                    "record_schema": s["destination"]["record_schema"],
                }
                if bigquery:
                    schema["clustering_keys"] = s["destination"].get("clustering_keys")
                schemas.append(schema)
            if schemas:
                data["destination"] = {**destination, "config": {**details, "record_schemas": schemas}}
    return data


#: destinations that append in every sync mode, so a reset cannot replace their data
RESET_UNSUPPORTED_DESTINATIONS = ("bigquery_streaming",)


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
    def _prepare(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if not (k in ("engine", "transforms") and v is None)}
        return inject_config_from_streams(data)

    @field_validator("source", mode="before")
    @classmethod
    def _connector_source(cls, value: Any) -> Any:
        return validate_source(value)

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
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
            and self.destination.name in RESET_UNSUPPORTED_DESTINATIONS
        ):
            errors.append(
                (
                    ("source", "reset"),
                    f"destination '{self.destination.name}' appends in every sync mode, so it cannot reset a stream; "
                    "use bigquery_streaming_v2 or bigquery",
                    True,
                )
            )
        if errors:
            fail("pipeline", errors)
        return self

    @classmethod
    def child_model(cls, field: str, data: Any) -> type[BaseModel] | None:
        if field == "source" and isinstance(data, dict):
            src = data.get("source")
            if isinstance(src, dict) and isinstance(src.get("name"), str) and isinstance(src.get("stream"), str):
                try:
                    return source_config_classes(src["name"], src["stream"], src.get("source_file_path"))[0]
                except Exception:  # noqa: BLE001 - only used to word an error message
                    return BizonSourceConfig
            return BizonSourceConfig
        return None
