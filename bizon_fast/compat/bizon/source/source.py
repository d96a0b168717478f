"""bizon's ``AbstractSource``: the page-by-page source contract that custom sources implement.

bizon-fast runs these through :mod:`bizon_fast.source.bizon_adapter`: ``get(pagination)`` is called
page after page (``{}`` first), each page becomes one Arrow batch, and an empty ``next_pagination``
ends the stream. ``get_records_after`` is called instead in incremental mode when the class overrides it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .callback import AbstractSourceCallback, NoOpSourceCallback
from .config import SourceConfig
from .models import SourceIncrementalState, SourceIteration
from .session import Session, requests_available


class AbstractSource(ABC):
    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.session = self.get_session()
        auth = self.get_authenticator()
        if auth and self.session is not None:
            self.session.auth = auth

    def __del__(self) -> None:
        session = getattr(self, "session", None)
        if session is not None and hasattr(session, "close"):
            session.close()

    @staticmethod
    @abstractmethod
    def streams() -> list[str]:
        """The streams this source serves."""

    @staticmethod
    @abstractmethod
    def get_config_class() -> type[SourceConfig]:
        """The model that validates this source's ``source:`` block."""

    def get_source_callback_instance(self) -> AbstractSourceCallback:
        return NoOpSourceCallback(config=self.config)

    @abstractmethod
    def get_authenticator(self) -> Any:
        """A requests ``AuthBase`` set on ``self.session``, or None."""

    @abstractmethod
    def check_connection(self) -> tuple[bool, Any]:
        """``(True, None)`` when the source can be read, else ``(False, error)``."""

    @abstractmethod
    def get(self, pagination: dict | None = None) -> SourceIteration:
        """One page: the records and the pagination of the next page (empty: no more pages)."""

    @abstractmethod
    def get_total_records_count(self) -> int | None:
        """Records the stream holds, when the API can tell cheaply."""

    def get_records_after(self, source_state: SourceIncrementalState, pagination: dict | None = None) -> Any:
        """One page of the records changed since ``source_state``; sources that support incremental override it."""
        pass

    def get_retry_policy(self) -> Any:
        return None

    def get_session(self) -> Session | None:
        """A requests session with retries, or None when requests is not installed."""
        return Session(retries=self.get_retry_policy()) if requests_available() else None

    def commit(self) -> None:
        """Stream mode: called once the records returned so far are durable (e.g. commit Kafka offsets)."""
        pass

    def set_streams_config(self, streams: list) -> None:
        """Receives the pipeline's ``streams:`` block when it has one."""
        pass
