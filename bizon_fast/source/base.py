"""The native source contract: a source lists independent splits and reads one split from a position.

Producers run ``read`` in their own process, so a source must be constructible from its config alone
(no open connections carried over from the supervisor). Each yielded batch is an Arrow RecordBatch
with the source's position *after* it; resuming passes that position back to ``read``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import msgspec
import pyarrow as pa

from bizon_fast.config.source import SourceConfig


class Split(msgspec.Struct, frozen=True, kw_only=True):
    """An independent, resumable slice of a source's work. ``params`` must be msgpack-encodable."""

    id: str
    params: dict[str, Any] = {}
    total_rows: int | None = None


class SourceBatch(NamedTuple):
    batch: pa.RecordBatch
    position: Any  # msgpack-encodable; handed back to read() to resume after this batch


class Source(ABC):
    """Base class of bizon-fast sources (bizon's page-based sources are adapted to it elsewhere)."""

    name: ClassVar[str] = ""
    #: True when ``read`` honours ``self.watermark`` (the max of ``cursor_field`` the last successful
    #: incremental job committed, set by the engine before ``read``) to read only what changed since
    supports_incremental: ClassVar[bool] = False
    #: True when ``read`` is Python code that keeps a core busy for as long as it runs (a bizon source's ``get()``
    #: loop and its page conversion, under the GIL): the engine then leaves each producer a core and gives the
    #: destinations only the cores that remain. False for sources whose reads mostly wait or run in C (a database
    #: driver, a Kafka client, Arrow kernels).
    holds_a_core: ClassVar[bool] = False
    watermark: Any = None

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.stream = config.stream

    @staticmethod
    @abstractmethod
    def streams() -> list[str]: ...

    @classmethod
    def accepts_stream(cls, stream: str) -> bool:
        """Whether this class serves ``stream``. Sources whose streams are open-ended (a database
        source reads any table) override it; ``streams()`` then lists a placeholder for messages."""
        return stream in cls.streams()

    @staticmethod
    def get_config_class() -> type[SourceConfig]:
        return SourceConfig

    def check_connection(self) -> tuple[bool, str | None]:
        return True, None

    @abstractmethod
    def splits(self) -> list[Split]:
        """The work, cut into independent slices. More splits than workers keeps every core busy."""

    @abstractmethod
    def read(self, split: Split, position: Any | None) -> Iterator[SourceBatch]:
        """Yield batches of ``split`` starting after ``position`` (None = from the beginning)."""

    def total_rows(self) -> int | None:
        """Rows the whole job will read, when known cheaply (drives the ETA)."""
        return None

    def columns(self) -> list[str] | None:
        """The columns every batch will have, when known before reading; None when not (JSON records, a
        schema inferred from the data).

        The supervisor checks an incremental run's ``cursor_field`` against them at start-up: a typo
        otherwise reads the whole stream on every run and keeps no watermark. Called after
        ``check_connection``, in the supervisor only.
        """
        return None

    def label(self) -> str:
        """What this source reads, as messages name it (a table name, say)."""
        return f"stream {self.stream!r}"

    def endpoint(self) -> str | None:
        """The server it reads from (``host:port/database``, brokers), never a credential, for
        ``bizon-fast check``; None when the source reads no server or ``label`` says it all."""
        return None
