"""Run a bizon-style source class (``AbstractSource``: ``get(pagination) -> SourceIteration``) as a native Source.

A bizon source is one chain of pages, so it is one split (named after the stream). ``read`` calls
``get`` page after page from ``{}`` -- or ``get_records_after`` on an incremental run that has a
previous success, when the class implements it -- and turns each page into ONE Arrow batch with
:func:`~bizon_fast.source.records.records_to_batch`; from there on nothing looks at a record. The
position after a page is its ``next_pagination``; an empty one (``{}``/None) ends the split, and a
resumed job hands the committed ``next_pagination`` straight back to the source.

A page may also come back as bizon's older ``(next_pagination, records)`` tuple with the API's raw
objects as records -- bizon 0.6.4's own hubspot source returns its last page that way (bizon itself
then fails on it); each raw object becomes a record with the object's ``id``.

A source written against a real bizon (its built-in sources, or a custom file) declares a config class
derived from bizon's ``SourceConfig``; :func:`engine_config_class` makes it a bizon-fast ``SourceConfig``
as well, so one validated object serves both the source and the engine.

Stream mode follows bizon's stream contract instead: ``poll`` calls ``get()`` without pagination (the
source tracks its own position, e.g. a Kafka consumer group) and ``commit`` is called once what it
returned is durable.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from enum import Enum
from functools import cache
from typing import Any, ClassVar

from pydantic import BaseModel, Field, create_model, field_validator

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


@cache
def engine_config_class(model: type[BaseModel]) -> type[SourceConfig]:
    """``model`` (a bizon source's config class) as a class that is also bizon-fast's ``SourceConfig``.

    A real bizon's config class is not a bizon-fast model, so the pipeline could not hold it; the class
    made here derives from both, its instances pass the source's own ``isinstance`` checks and the
    engine's. ``sync_mode`` becomes a ``StrEnum`` (equal to bizon's members) so it prints as its value, and
    a ``stream`` typed as a ``(str, Enum)`` (pokeapi's, notion's) is kept as its plain value once checked:
    since Python 3.11 such a member formats as ``PokeAPIStreams.POKEMON``, so bizon 0.6.4's pokeapi asks
    for ``/api/v2/PokeAPIStreams.POKEMON`` under bizon itself, and the engine would key jobs by that text.
    """
    if issubclass(model, SourceConfig):
        return model
    from bizon_fast.compat.bizon.source.config import SourceSyncModes

    mode = Field(SourceSyncModes.FULL_REFRESH, description="Sync mode to use")
    return create_model(  # type: ignore[call-overload, no-any-return]
        model.__name__,
        __base__=(model, SourceConfig),
        __module__=model.__module__,
        __validators__={"_plain_stream": field_validator("stream", mode="after")(_plain_value)},
        sync_mode=(SourceSyncModes, mode),
    )


def _plain_value(value: Any) -> Any:
    """An enum member's value (it still compares equal to the member: both are the same ``str``)."""
    return value.value if isinstance(value, Enum) else value


def _describe(result: Any, method: str) -> str:
    return f"{method}() returned {type(result).__name__}, expected a SourceIteration (next_pagination, records)"


def _as_record(record: Any) -> Any:
    """A record of a ``(next_pagination, records)`` page: a SourceRecord as is, a raw API object wrapped."""
    if isinstance(record, dict) and not {"id", "data"} <= record.keys():
        return {"id": None if record.get("id") is None else str(record["id"]), "data": record}
    return record


class _Page:
    """One page from a source, whatever shape it came back in (see the module docstring)."""

    __slots__ = ("next_pagination", "records", "next_state")

    def __init__(self, next_pagination: Any, records: list, next_state: Any = None) -> None:
        self.next_pagination = next_pagination
        self.records = records
        self.next_state = next_state


def _page_of(result: Any, needs_pagination: bool = True) -> _Page | None:
    """The page in ``result``; None when it is no page (``needs_pagination``: a page chain needs its link)."""
    if hasattr(result, "records") and (hasattr(result, "next_pagination") or not needs_pagination):
        return _Page(getattr(result, "next_pagination", None), result.records, getattr(result, "next_state", None))
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[0], dict | None)
        and isinstance(result[1], list)
    ):
        return _Page(result[0], [_as_record(record) for record in result[1]])
    return None


class BizonSourceAdapter(Source):
    """A bizon ``AbstractSource`` behind the native contract; see the module docstring."""

    bizon_class: ClassVar[type]
    holds_a_core: ClassVar[bool] = True  # get() builds Python records; the page -> batch conversion runs beside it
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
        return engine_config_class(cls.bizon_class.get_config_class())

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

    def _fetch(self, pagination: dict) -> _Page:
        run = self.incremental
        if run is not None and run.has_previous and self.supports_incremental:
            result = self.bizon.get_records_after(source_state=self._state(), pagination=pagination)
            method = "get_records_after"
        else:
            result = self.bizon.get(pagination=pagination)
            method = "get"
        page = _page_of(result)
        if page is None:
            raise JobFailed(f"{type(self.bizon).__name__}.{_describe(result, method)}")
        return page

    @staticmethod
    def _page(page: _Page, position: Any) -> SourceBatch:
        batch = with_next_state(records_to_batch(page.records), page.next_state)
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
        page = _page_of(result, needs_pagination=False)
        if page is None:
            raise JobFailed(f"{type(self.bizon).__name__}.{_describe(result, 'get')}")
        return self._page(page, None)

    def commit(self) -> None:
        self.bizon.commit()
