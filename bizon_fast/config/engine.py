"""``engine:``: the checkpoint backend, the queue (transport) and the runner, each a ``{type, config}`` block."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, Field, ValidationInfo, field_validator, model_validator

from bizon_fast.config.blocks import Strict, as_mapping
from bizon_fast.config.errors import require_dsn_or
from bizon_fast.config.paths import LOCAL_PATH

if TYPE_CHECKING:
    from bizon_fast.config.catalog import ConnectorCatalog


class BackendDetails(Strict):
    """``engine.backend.config`` for sqlite. ``schema_name`` is also accepted (bizon's README used it).

    ``database`` is the sqlite file (``{database}.sqlite3``), relative to the pipeline file's folder.
    """

    database: Annotated[str, LOCAL_PATH] = "bizon"
    schema_name: str = Field("NOT_USED_IN_SQLITE", alias="schema")
    syncCursorInDBEvery: int = Field(10, ge=1)  # noqa: N815 - bizon's key
    echoEngine: bool = False  # noqa: N815 - bizon's key


class InMemoryBackendDetails(BackendDetails):
    """``sqlite_in_memory``: bizon's keys, accepted; there is no file, so ``database`` is only a name."""

    database: str = "bizon"


class PostgresBackendDetails(BackendDetails):
    """Postgres checkpoint backend: bizon's host/port/username/password, or a ``dsn`` instead."""

    database: str = "bizon"  # a database name here, not a file
    schema_name: str = Field("public", alias="schema")
    host: str | None = None
    port: int = Field(5432, ge=1, le=65535)
    username: str | None = None
    password: str | None = Field(None, repr=False)
    dsn: str | None = Field(None, repr=False)

    @model_validator(mode="after")
    def _dsn_or_host(self) -> PostgresBackendDetails:
        require_dsn_or(self, ("host", "username"))
        return self


class BigQueryBackendDetails(BackendDetails):
    """BigQuery checkpoint backend: ``database`` is the GCP project, ``schema`` the dataset.

    ``service_account_key`` is honoured (bizon dropped it silently and always used ADC).
    """

    database: str
    schema_name: str = Field(alias="schema")
    service_account_key: Annotated[str, LOCAL_PATH] = Field("", repr=False)


BACKEND_DETAILS: dict[str, type[BackendDetails]] = {
    "sqlite": BackendDetails,
    "sqlite_in_memory": InMemoryBackendDetails,
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
    return model.model_validate(as_mapping(value))


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
    def child_model(cls, field: str, data: Any, connectors: ConnectorCatalog | None = None) -> type[BaseModel] | None:
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
        return as_mapping(value)


class PrometheusConfig(Strict):
    """``engine.monitoring.prometheus``: serve the run's metrics at ``http://host:port/metrics`` while it runs."""

    port: int = Field(ge=0, le=65535, description="0: any free port (the URL is logged); --metrics-port overrides")
    host: str = Field("127.0.0.1", min_length=1, description="the address to listen on; 0.0.0.0: every interface")


class MonitoringConfig(Strict):
    """``engine.monitoring``: the engine's own metrics (bizon's top-level ``monitoring:`` is Datadog, separate)."""

    prometheus: PrometheusConfig | None = None

    @field_validator("prometheus", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return as_mapping(value)  # ``prometheus:`` left empty asks for metrics: its missing port is the error


class EngineConfig(Strict):
    backend: BackendConfig = Field(default_factory=BackendConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @field_validator("backend", "queue", "runner", "monitoring", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return as_mapping(value)
