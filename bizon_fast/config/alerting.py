"""bizon's ``alerting:``, ``monitoring:`` and ``secrets:`` blocks: Slack alerts, Datadog metrics, GSM secrets.

Why a module of its own: these blocks are bizon's top-level keys, not the engine's, and a bizon user's YAML
carries them unchanged. The models accept what bizon 0.6.4 accepts; the engine acts on them
(``engine/alerts.py`` posts to Slack, ``engine/datadog.py`` sends DogStatsD metrics). The helpers here answer
the two questions those parts ask of the config: which log records are alerts, and which agent gets metrics.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bizon_fast.config.blocks import Strict
from bizon_fast.config.errors import fail

LogLevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class SlackAlertDetails(Strict):
    webhook_url: str = Field(repr=False)  # a secret: anyone holding it posts to the channel


class AlertingConfig(Strict):
    type: Literal["slack"]
    log_levels: list[LogLevelName] = Field(default_factory=lambda: ["ERROR"])
    config: SlackAlertDetails

    @property
    def min_level(self) -> int:
        """The lowest configured level: a record at or above it is posted (once, at its own level).

        bizon adds one loguru sink per configured level, each a minimum, so a record above two of them is
        posted twice; one post per record says the same without the duplicate.
        """
        return min((logging.getLevelName(name) for name in self.log_levels), default=logging.ERROR)


class DatadogDetails(Strict):
    enable_tracing: bool = False
    datadog_agent_host: str | None = None
    datadog_host_env_var: str | None = None
    datadog_agent_port: int = Field(8125, ge=1, le=65535)
    tags: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tags", mode="before")
    @classmethod
    def _null_tags(cls, value: Any) -> Any:
        return {} if value is None else value  # bizon's tags are Optional: ``tags:`` left empty means none

    @model_validator(mode="after")
    def _host_given(self) -> DatadogDetails:
        if not self.datadog_agent_host and not self.datadog_host_env_var:
            fail("datadog", [(("datadog_agent_host",), "give datadog_agent_host or datadog_host_env_var", None)])
        return self

    def agent_host(self) -> str | None:
        """The agent's host as bizon picks it: the env var's value when set (Kubernetes' host IP), else the host.

        Read when the run starts, not when the config is loaded: the variable belongs to the machine that runs.
        None (the variable unset and no host given) leaves the choice to the datadog client: ``DD_AGENT_HOST``,
        else localhost.
        """
        from_env = os.environ.get(self.datadog_host_env_var) if self.datadog_host_env_var else None
        return from_env or self.datadog_agent_host

    def tag_list(self) -> list[str]:
        """The configured tags as DogStatsD ``key:value`` strings."""
        return [f"{key}:{value}" for key, value in self.tags.items()]


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
