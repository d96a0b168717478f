"""``source.authentication``: a type and the params of that type (bizon's non-discriminated union)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from .authenticators.basic import BasicHttpAuthParams
from .authenticators.cookies import CookiesAuthParams
from .authenticators.oauth import Oauth2AuthParams
from .authenticators.token import TokenAuthParams


class AuthType(StrEnum):
    OAUTH = "oauth"
    API_KEY = "api_key"
    BEARER = "bearer"
    BASIC = "basic"
    COOKIES = "cookies"


class AuthConfig(BaseModel):
    type: AuthType = Field(..., description="Type of authentication")
    params: Oauth2AuthParams | BasicHttpAuthParams | TokenAuthParams | CookiesAuthParams = Field(
        ..., description="Configuration for the authentication"
    )
