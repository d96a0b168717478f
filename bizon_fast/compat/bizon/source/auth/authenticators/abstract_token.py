"""Header authenticators: attach ``{auth_header: token}`` to every request of the source's session."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

try:  # requests is optional: sources that never use the session run without it
    from requests.auth import AuthBase
except ImportError:  # pragma: no cover - exercised only without requests

    class AuthBase:  # type: ignore[no-redef]
        """Stand-in for ``requests.auth.AuthBase`` when requests is not installed."""

        def __call__(self, request: Any) -> Any:
            raise TypeError("Auth hooks must be callable: subclasses implement __call__.")


class AbstractHeaderAuthenticator(AuthBase):
    def __call__(self, request: Any) -> Any:
        request.headers.update(self.get_auth_header())
        return request

    def get_auth_header(self) -> Mapping[str, Any]:
        return {self.auth_header: self.token} if self.auth_header else {}

    @property
    @abstractmethod
    def auth_header(self) -> str:
        """The header to set."""

    @property
    @abstractmethod
    def token(self) -> str:
        """The header's value."""
