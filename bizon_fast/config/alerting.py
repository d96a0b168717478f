"""bizon's ``alerting:``, ``monitoring:`` and ``secrets:`` blocks (accepted and checked; Slack, Datadog, GSM)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from bizon_fast.config.blocks import Strict
from bizon_fast.config.errors import fail


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
