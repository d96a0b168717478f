"""Token (``api_key``/``bearer``) authentication: ``Authorization: Bearer <token>`` by default."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .abstract_token import AbstractHeaderAuthenticator


class TokenAuthParams(BaseModel):
    token: str = Field(..., description="Token to be attached to the request")
    auth_method: str = Field("Bearer", description="Prefix of the header value; empty sends the bare token")
    auth_header: str = Field("Authorization", description="Auth header for token auth")


class TokenAuthenticator(AbstractHeaderAuthenticator):
    def __init__(self, params: TokenAuthParams) -> None:
        self._auth_header = params.auth_header
        self._auth_method = params.auth_method
        self._token = params.token

    @property
    def auth_header(self) -> str:
        return self._auth_header

    @property
    def token(self) -> str:
        return f"{self._auth_method} {self._token}" if self._auth_method else self._token
