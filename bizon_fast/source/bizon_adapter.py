"""Run a bizon-style source class (``AbstractSource``: ``get(pagination) -> SourceIteration``) as a native Source.

A bizon source is one chain of pages, so it is one split (named after the stream). ``read`` calls
``get`` page after page from ``{}`` -- or ``get_records_after`` on an incremental run that has a
previous success, when the class implements it -- and turns each page into ONE Arrow batch with
:func:`~bizon_fast.source.records.records_to_batch`; from there on nothing looks at a record. The
position after a page is its ``next_pagination``; an empty one (``{}``/None) ends the split, and a
resumed job hands the committed ``next_pagination`` straight back to the source.

Stream mode follows bizon's stream contract instead: ``poll`` calls ``get()`` without pagination (the
source tracks its own position, e.g. a Kafka consumer group) and ``commit`` is called once what it
returned is durable.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any, ClassVar

from bizon_fast.config.source import SourceConfig
from bizon_fast.errors import JobFailed
from bizon_fast.source.base import Source, SourceBatch, Split
from bizon_fast.source.incremental import IncrementalRun, with_next_state
from bizon_fast.source.records import records_to_batch


def is_bizon_source_class(obj: Any) -> bool:
    """bizon's rule: a concrete subclass of ``AbstractSource`` (ours or a real bizon's) with streams."""
    from bizon_fast.compat import abstract_source_classes

    if not (isinstance(obj, type) and issubclass(obj, abstract_source_classes())):
        return False
    if obj in abstract_source_classes() or inspect.isabstract(obj):
        return False
    try:
        return bool(obj.streams())
    except Exception:  # noqa: BLE001 - a broken streams() means "not a usable source", as in bizon
        return False


def implements_incremental(cls: type) -> bool:
    """bizon's rule, made robust: ``get_records_after`` is overridden and its body is not just ``pass``."""
    method = getattr(cls, "get_records_after", None)
    if method is None:
        return False
    from bizon_fast.compat import abstract_source_classes

    if any(method is getattr(base, "get_records_after", None) for base in abstract_source_classes()):
        return False
    try:
        return not inspect.getsource(method).strip().endswith("pass")
    except (OSError, TypeError):
        return True


@cache
def adapter_for(bizon_class: type) -> type[BizonSourceAdapter]:
    """The native Source class that runs ``bizon_class`` (one per class, so identity checks hold)."""
    attrs = {"bizon_class": bizon_class, "supports_incremental": implements_incremental(bizon_class)}
    return type(f"{bizon_class.__name__}Adapter", (BizonSourceAdapter,), attrs)


def _describe(result: Any, method: str) -> str:
    return f"{method}() returned {type(result).__name__}, expected a SourceIteration (next_pagination, records)"


class BizonSourceAdapter(Source):
    """A bizon ``AbstractSource`` behind the native contract; see the module docstring."""

    bizon_class: ClassVar[type]
    #: set from the incremental plan by the engine before ``read`` (native sources get ``watermark`` too)
    incremental: IncrementalRun | None = None

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        self.bizon = self.bizon_class(config)
        self._total: tuple[int | None] | None = None

    @classmethod
    def streams(cls) -> list[str]:  # type: ignore[override]
        return list(cls.bizon_class.streams())

    @classmethod
    def get_config_class(cls) -> type[SourceConfig]:  # type: ignore[override]
        return cls.bizon_class.get_config_class()

    @property
    def has_commit(self) -> bool:
        """True when the class overrides ``commit`` (the base one does nothing, so there is nothing to wait for)."""
        from bizon_fast.compat import abstract_source_classes

        method = type(self.bizon).commit
        return not any(method is getattr(base, "commit", None) for base in abstract_source_classes())

    def check_connection(self) -> tuple[bool, str | None]:
        ok, error = self.bizon.check_connection()
        return bool(ok), None if error is None else str(error)

    def total_rows(self) -> int | None:
        if self._total is None:
            self._total = (self.bizon.get_total_records_count(),)
        return self._total[0]

    def splits(self) -> list[Split]:
        return [Split(id=self.stream, total_rows=self.total_rows())]

    def _state(self) -> Any:
        from bizon_fast.compat.bizon.source.models import SourceIncrementalState

        run = self.incremental
        assert run is not None and run.last_run is not None
        # a source written against a real bizon gets that bizon's model
        state_class = getattr(sys.modules.get("bizon.source.models"), "SourceIncrementalState", SourceIncrementalState)
        return state_class(
            last_run=run.last_run,
            state=dict(run.state),
            cursor_field=run.cursor_field,
            run_started_at=run.run_started_at,
        )

    def _fetch(self, pagination: dict) -> Any:
        run = self.incremental
        if run is not None and run.has_previous and self.supports_incremental:
            result = self.bizon.get_records_after(source_state=self._state(), pagination=pagination)
            method = "get_records_after"
        else:
            result = self.bizon.get(pagination=pagination)
            method = "get"
        if result is None or not hasattr(result, "records") or not hasattr(result, "next_pagination"):
            raise JobFailed(f"{type(self.bizon).__name__}.{_describe(result, method)}")
        return result

    @staticmethod
    def _page(result: Any, position: Any) -> SourceBatch:
        batch = with_next_state(records_to_batch(result.records), getattr(result, "next_state", None))
        return SourceBatch(batch, position)

    def read(self, split: Split, position: Any | None) -> Iterator[SourceBatch]:
        if position is not None and not position:
            return  # the committed position after the last page: the stream is exhausted
        pagination: dict = {} if position is None else dict(position)
        while True:
            result = self._fetch(pagination)
            following = dict(result.next_pagination or {})
            yield self._page(result, following)
            if not following:
                return
            pagination = following

    def poll(self, split: Split) -> SourceBatch:
        """Stream mode: one ``get()`` without pagination (the source keeps its own position)."""
        result = self.bizon.get()
        if result is None or not hasattr(result, "records"):
            raise JobFailed(f"{type(self.bizon).__name__}.{_describe(result, 'get')}")
        return self._page(result, None)

    def commit(self) -> None:
        self.bizon.commit()
