"""Pydantic models of the pipeline config: bizon's YAML schema plus bizon-fast's engine keys.

Blocks that bizon forbids extra keys in forbid them here too; the ``source:`` block allows extras
because each connector re-validates it with its own config class.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bizon_fast.source.base import SourceConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- destination


class DestinationDetails(Strict):
    """Common ``destination.config`` keys (bizon's AbstractDestinationDetailsConfig)."""

    buffer_size: float = Field(50, ge=0, description="MiB buffered per consumer before a write; 0 writes every batch")
    buffer_flush_timeout: float = Field(600, ge=0, description="seconds a buffered batch may wait; 0 disables")
    max_concurrent_threads: int = 10
    destination_id: str | None = None
    unnest: bool = False
    record_schemas: list[dict] | None = None
    authentication: dict | None = None


class FileDestinationDetails(DestinationDetails):
    format: Literal["json", "parquet"] = "json"


class LoggerDestinationDetails(DestinationDetails):
    dummy: str = "bizon"


class NoopDestinationDetails(DestinationDetails):
    pass


class DestinationConfig(Strict):
    name: str
    alias: str | None = None
    config: DestinationDetails = Field(default_factory=DestinationDetails)


# ---------------------------------------------------------------- engine


class BackendDetails(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    database: str = "bizon"
    schema_name: str = Field("NOT_USED_IN_SQLITE", alias="schema")
    syncCursorInDBEvery: int = 10  # noqa: N815 - bizon's key
    echoEngine: bool = False  # noqa: N815 - bizon's key


class BackendConfig(BaseModel):
    type: Literal["sqlite", "sqlite_in_memory", "postgres", "bigquery"] = "sqlite"
    config: BackendDetails = Field(default_factory=BackendDetails)


class QueueDetails(Strict):
    ring_size_mb: int | None = Field(None, ge=1, description="shared-memory ring size; default: sized from workers")
    batch_size_mb: float = Field(4, gt=0, description="target Arrow batch size a producer writes into the ring")
    max_nb_messages: int = 1_000_000  # bizon's key, accepted
    queue: dict | None = None
    consumer: dict | None = None


class QueueConfig(Strict):
    type: Literal["shm", "python_queue", "kafka", "rabbitmq"] = "shm"
    config: QueueDetails = Field(default_factory=QueueDetails)


class RunnerDetails(Strict):
    max_workers: int | None = Field(None, ge=1, description="workers: producers and consumers each (bizon's key)")
    producers: int | None = Field(None, ge=1)
    consumers: int | None = Field(None, ge=1)
    max_restarts: int = Field(5, ge=0, description="worker restarts allowed per job before it fails")
    consumer_start_delay: float = 0  # bizon's key, accepted; bizon-fast never waits
    is_alive_check_interval: float = 2  # bizon's key, accepted; liveness uses process sentinels

    def workers(self) -> int:
        return self.max_workers or os.cpu_count() or 1

    def producer_count(self) -> int:
        return self.producers or self.workers()

    def consumer_count(self) -> int:
        return self.consumers or self.workers()


class RunnerConfig(Strict):
    type: Literal["thread", "process", "stream"] = "process"
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    config: RunnerDetails = Field(default_factory=RunnerDetails)


class EngineConfig(Strict):
    backend: BackendConfig = Field(default_factory=BackendConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)


# ---------------------------------------------------------------- pipeline


class TransformModel(Strict):
    label: str
    python: str | None = None


class PipelineConfig(Strict):
    name: str
    source: SourceConfig
    destination: DestinationConfig
    transforms: list[TransformModel] = Field(default_factory=list)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    alerting: dict | None = None
    monitoring: dict | None = None
    secrets: dict | None = None
    streams: list[dict] | None = None
