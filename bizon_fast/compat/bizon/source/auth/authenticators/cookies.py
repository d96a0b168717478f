"""Cookie authentication: fixed cookies (and optional headers) on every request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from .abstract_token import AuthBase


class CookiesAuthParams(BaseModel):
    cookies: Mapping[str, str] = Field(..., description="Cookies to be attached to the request")
    headers: Mapping[str, Any] | None = Field(default_factory=dict, description="Headers to be attached")


class CookiesAuthenticator(AuthBase):
    def __init__(self, params: CookiesAuthParams) -> None:
        super().__init__()
        self.cookies = params.cookies
        self.headers = params.headers

    def __call__(self, request: Any) -> Any:
        request.prepare_cookies(self.cookies)
        if self.headers:
            request.headers.update(self.headers)
        return request
