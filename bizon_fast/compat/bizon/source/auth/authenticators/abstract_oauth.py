"""The OAuth2 refresh-token flow: refresh the access token when it has expired, then send it as a Bearer token."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .abstract_token import AuthBase


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class AbstractOauth2Authenticator(AuthBase):
    access_token: str | None = None

    def __call__(self, request: Any) -> Any:
        request.headers.update(self.get_auth_header())
        return request

    def get_auth_header(self) -> Mapping[str, Any]:
        return {"Authorization": f"Bearer {self.get_access_token()}"}

    def get_access_token(self) -> str:
        if self.token_has_expired():
            token, expires_in = self.refresh_access_token()
            self.access_token = token
            self.set_token_expiry_date(expires_in)
        assert self.access_token is not None
        return self.access_token

    def token_has_expired(self) -> bool:
        skew = timedelta(seconds=self.get_expiry_skew_seconds())
        return datetime.now(UTC) + skew > _utc(self.get_token_expiry_date())

    def get_expiry_skew_seconds(self) -> float:
        return 0

    def build_refresh_request_body(self) -> Mapping[str, Any]:
        payload: dict[str, Any] = {
            "grant_type": self.get_grant_type(),
            "client_id": self.get_client_id(),
            "client_secret": self.get_client_secret(),
            "refresh_token": self.get_refresh_token(),
        }
        if self.get_scopes():
            payload["scopes"] = self.get_scopes()
        payload.update(self.get_refresh_request_body() or {})
        return payload

    def refresh_access_token(self) -> tuple[str, Any]:
        """POST the refresh request; return ``(access_token, expires_in)`` read from the response."""
        try:
            import requests
        except ImportError:
            raise ImportError("OAuth2 token refresh needs the requests library: pip install requests") from None
        response = requests.post(self.get_token_refresh_endpoint(), data=self.build_refresh_request_body(), timeout=60)
        response.raise_for_status()
        body: Any = response.json()
        path = self.get_response_field_path()
        for part in filter(None, (path or "").split("/")):
            body = body[int(part)] if isinstance(body, list) else body[part]
        return body[self.get_access_token_name()], body.get(self.get_expires_in_name())

    def set_token_expiry_date(self, expires_in: Any) -> None:
        self._token_expiry_date = self._expiry_from(expires_in)

    def _expiry_from(self, expires_in: Any) -> datetime:
        if expires_in is None:
            return datetime.now(UTC) + timedelta(hours=1)
        if isinstance(expires_in, str) and not expires_in.strip().lstrip("-").isdigit():
            fmt = self.get_token_expiry_date_format()
            parsed = datetime.strptime(expires_in, fmt) if fmt else datetime.fromisoformat(expires_in)
            return _utc(parsed)
        return datetime.now(UTC) + timedelta(seconds=float(expires_in))

    @abstractmethod
    def get_token_refresh_endpoint(self) -> str: ...

    @abstractmethod
    def get_client_id(self) -> str: ...

    @abstractmethod
    def get_client_secret(self) -> str: ...

    @abstractmethod
    def get_refresh_token(self) -> str | None: ...

    @abstractmethod
    def get_scopes(self) -> list[str] | None: ...

    @abstractmethod
    def get_token_expiry_date(self) -> datetime: ...

    @abstractmethod
    def get_access_token_name(self) -> str: ...

    @abstractmethod
    def get_expires_in_name(self) -> str: ...

    @abstractmethod
    def get_refresh_request_body(self) -> Mapping[str, Any] | None: ...

    @abstractmethod
    def get_grant_type(self) -> str: ...

    def get_response_field_path(self) -> str | None:
        return None

    def get_token_expiry_date_format(self) -> str | None:
        return None
