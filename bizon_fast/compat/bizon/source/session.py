"""The HTTP session a bizon source gets as ``self.session``: requests with retries and raise-for-status.

requests is not a bizon-fast dependency. With it installed, :class:`Session` is a ``requests.Session``
that retries GET/POST on transient errors (urllib3 ``Retry``) and raises on 4xx/5xx, like bizon's;
without it, sources that never touch ``self.session`` still run, and creating one says what to install.
"""

from __future__ import annotations

from typing import Any

try:
    import requests
    from requests.adapters import HTTPAdapter, Retry
except ImportError:  # pragma: no cover - exercised only without requests
    requests = None  # type: ignore[assignment]


def raise_for_status_hook(response: Any, *args: Any, **kwargs: Any) -> None:
    response.raise_for_status()


def requests_available() -> bool:
    return requests is not None


if requests is not None:

    def legacy_retry_policy() -> Retry:
        return Retry(total=20, backoff_factor=1, raise_on_status=True, status=30, allowed_methods=["GET", "POST"])

    class Session(requests.Session):
        __attrs__ = [*requests.Session.__attrs__, "timeout"]

        def __init__(self, retries: Retry | None = None, timeout: Any = None, raise_for_status: bool = True) -> None:
            super().__init__()
            self.timeout = timeout
            if raise_for_status:
                self.hooks["response"] = [raise_for_status_hook]
            adapter = HTTPAdapter(max_retries=retries or legacy_retry_policy(), pool_maxsize=64)
            self.mount("https://", adapter)
            self.mount("http://", adapter)

        def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
            if self.timeout is not None:
                kwargs.setdefault("timeout", self.timeout)
            return super().request(method, url, *args, **kwargs)

else:  # pragma: no cover - exercised only without requests

    class Session:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("this source uses an HTTP session, which needs requests: pip install requests")
