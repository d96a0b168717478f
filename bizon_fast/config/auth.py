"""``source.authentication``: bizon's auth types and the ``params`` shape each one means."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

if TYPE_CHECKING:
    from bizon_fast.config.catalog import ConnectorCatalog


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
    def child_model(cls, field: str, data: Any, connectors: ConnectorCatalog | None = None) -> type[BaseModel] | None:
        if field == "params" and isinstance(data, dict):
            return AUTH_PARAMS.get(data.get("type"))
        return None
