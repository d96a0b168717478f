"""HTTP basic authentication (RFC 7617): ``Authorization: Basic base64(user:password)``."""

from __future__ import annotations

import base64

from pydantic import BaseModel, Field

from .abstract_token import AbstractHeaderAuthenticator


class BasicHttpAuthParams(BaseModel):
    username: str = Field(..., description="Username for basic auth")
    password: str = Field("", description="Password for basic auth")
    auth_method: str = Field("Basic", description="Auth method for basic auth")
    auth_header: str = Field("Authorization", description="Auth header for basic auth")


class BasicHttpAuthenticator(AbstractHeaderAuthenticator):
    def __init__(self, params: BasicHttpAuthParams) -> None:
        self._auth_header = params.auth_header
        self._auth_method = params.auth_method
        self._token = base64.b64encode(f"{params.username}:{params.password}".encode()).decode()

    @property
    def auth_header(self) -> str:
        return self._auth_header

    @property
    def token(self) -> str:
        return f"{self._auth_method} {self._token}"
