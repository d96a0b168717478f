"""Config of the ``dummy`` source: bizon's fake API wants an ``authentication`` block (which it ignores)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bizon_fast.config.source import SourceConfig

AUTH_HINT = "{type: api_key, params: {token: ...}} or {type: oauth, params: {...}}"


class ApiKeyParams(BaseModel):
    token: str


class ApiKeyAuth(BaseModel):
    type: Literal["api_key"]
    params: ApiKeyParams


class OAuthAuth(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["oauth"]
    params: dict[str, Any] = Field(default_factory=dict)


class DummySourceConfig(SourceConfig):
    """bizon's dummy config: ``authentication`` is required (the fake API ignores it), ``sleep`` slows each call."""

    authentication: Annotated[ApiKeyAuth | OAuthAuth, Field(discriminator="type")] | None = None
    sleep: float = Field(0, ge=0, description="seconds to sleep before each fake API call")

    @field_validator("authentication", mode="before")
    @classmethod
    def _auth_shape(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, dict) or value.get("type") not in ("api_key", "oauth")):
            raise ValueError(f"expected {AUTH_HINT}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _auth_required(self) -> DummySourceConfig:
        if self.authentication is None:
            raise ValueError(f"source.authentication is required: {AUTH_HINT}")
        return self
