"""OAuth2 with a refresh token and client credentials (bizon's ``Oauth2Authenticator``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from .abstract_oauth import AbstractOauth2Authenticator


class Oauth2AuthParams(BaseModel):
    token_refresh_endpoint: str = Field(..., description="URL to refresh the token")
    client_id: str = Field(..., description="Client ID")
    client_secret: str = Field(..., description="Client Secret")
    refresh_token: str | None = Field(None, description="Refresh Token")
    scopes: list[str] | None = Field(None, description="Scopes")
    token_expiry_date: datetime | None = Field(None, description="Token expiry date")
    token_expiry_date_format: str | None = Field(None, description="Token expiry date format")
    access_token_name: str = Field("access_token", description="Name of the access token")
    expires_in_name: str = Field("expires_in", description="Name of the expires in")
    refresh_request_body: Mapping[str, Any] | None = Field(None, description="Request body to refresh the token")
    grant_type: str = Field("refresh_token", description="Grant type")
    response_field_path: str | None = Field(None, description="Slash-separated path to the token in the response")
    expiry_skew_seconds: float | None = Field(None, description="Refresh this many seconds before expiry")


class Oauth2Authenticator(AbstractOauth2Authenticator):
    def __init__(self, params: Oauth2AuthParams) -> None:
        self._params = params
        self._token_expiry_date = params.token_expiry_date or datetime.now(UTC) - timedelta(days=1)
        self.access_token = None

    def get_token_refresh_endpoint(self) -> str:
        return self._params.token_refresh_endpoint

    def get_client_id(self) -> str:
        return self._params.client_id

    def get_client_secret(self) -> str:
        return self._params.client_secret

    def get_refresh_token(self) -> str | None:
        return self._params.refresh_token

    def get_scopes(self) -> list[str] | None:
        return self._params.scopes

    def get_token_expiry_date(self) -> datetime:
        return self._token_expiry_date

    def get_access_token_name(self) -> str:
        return self._params.access_token_name

    def get_expires_in_name(self) -> str:
        return self._params.expires_in_name

    def get_refresh_request_body(self) -> Mapping[str, Any] | None:
        return self._params.refresh_request_body

    def get_grant_type(self) -> str:
        return self._params.grant_type

    def get_response_field_path(self) -> str | None:
        return self._params.response_field_path

    def get_token_expiry_date_format(self) -> str | None:
        return self._params.token_expiry_date_format

    def get_expiry_skew_seconds(self) -> float:
        return self._params.expiry_skew_seconds or 0
