"""The ``dummy`` source: bizon's offline fake API (5 records, 3 pages), kept value for value.

It is the conformance fixture: the same YAML that runs against bizon must give the same rows here.
Positions are bizon's pagination dicts: a split starts from ``{}`` (passed to ``read`` as None),
goes to ``{"cursor": "vfvfvuhfefpeiduzhihxb"}``, then ``{"cursor": "final-cursor"}``, and the
position after the last page is ``{}`` again, which means exhausted (bizon's API returns an empty
cursor there). Batches are in the source-records layout, like every bizon-style source.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.sources.dummy.config import DummySourceConfig
from bizon_fast.errors import ConfigError
from bizon_fast.source.base import Source, SourceBatch, Split
from bizon_fast.source.records import records_to_batch

FIRST_CURSOR = "vfvfvuhfefpeiduzhihxb"
FINAL_CURSOR = "final-cursor"

_AGES = {9898: 26, 88787: 23, 98: 26, 3333: 23, 56565: 26}
_NAMES = {
    "creatures": {9898: "bizon", 88787: "croco", 98: "froggy", 3333: "turtle", 56565: "poulpo"},
    "plants": {9898: "tree", 88787: "flower", 98: "cactus", 3333: "bamboo", 56565: "rose"},
}
#: page -> (ids on it, the cursor the API returns after it); "" means no next page
_PAGES: dict[str | None, tuple[tuple[int, ...], str]] = {
    None: ((9898, 88787), FIRST_CURSOR),
    FIRST_CURSOR: ((98, 3333), FINAL_CURSOR),
    FINAL_CURSOR: ((56565,), ""),
}


def fake_api_call(stream: str, cursor: str | None, sleep: float = 0) -> dict[str, Any]:
    """bizon's ``fake_api_call``: the page for ``cursor`` (None = first) of ``stream``."""
    if sleep:
        time.sleep(sleep)
    if stream not in _NAMES:
        raise ValueError(f"dummy API has no stream {stream!r}")
    ids, next_cursor = _PAGES[cursor if cursor in (None, FINAL_CURSOR) else FIRST_CURSOR]
    names = _NAMES[stream]
    return {
        "results": [{"id": rid, "name": names[rid], "age": _AGES[rid]} for rid in ids],
        "next": {"cursor": next_cursor},
    }


def _describe(error: Any) -> str:
    """``source.<path>: message``, without pydantic's discriminator tag in the path."""
    loc = [str(p) for i, p in enumerate(error["loc"]) if not (i == 1 and p in ("api_key", "oauth"))]
    message = str(error["msg"]).removeprefix("Value error, ")
    return message if not loc else f"{'.'.join(['source', *loc])}: {message}"


def _coerce(config: SourceConfig) -> DummySourceConfig:
    if isinstance(config, DummySourceConfig):
        return config
    try:
        return DummySourceConfig.model_validate(config.model_dump())
    except ValidationError as exc:
        raise ConfigError(f"invalid dummy source config: {'; '.join(map(_describe, exc.errors()))}") from None


class DummySource(Source):
    """One split; one batch per page; ``destination_id`` follows bizon's stream-mode routing."""

    name = "dummy"

    def __init__(self, config: SourceConfig) -> None:
        config = _coerce(config)
        super().__init__(config)
        self.config: DummySourceConfig = config

    @staticmethod
    def streams() -> list[str]:
        return ["creatures", "plants"]

    @staticmethod
    def get_config_class() -> type[SourceConfig]:
        return DummySourceConfig

    def splits(self) -> list[Split]:
        return [Split(id=self.stream, total_rows=5)]

    def total_rows(self) -> int | None:
        return 5

    def _destination_id(self, next_cursor: str) -> str | None:
        """bizon routes page 2 (whose next cursor is final-cursor) to ``routed`` in stream mode only."""
        if self.config.sync_mode != "stream":
            return None
        return "routed" if next_cursor == FINAL_CURSOR else self.stream

    def _page(self, cursor: str | None) -> tuple[SourceBatch, str]:
        """The page for ``cursor`` as one batch, and the cursor the API returned after it ("" = last page)."""
        response = fake_api_call(self.stream, cursor, self.config.sleep)
        next_cursor = response["next"]["cursor"]
        destination_id = self._destination_id(next_cursor)
        records = [
            {"id": r["id"], "data": r, "timestamp": datetime.now(UTC), "destination_id": destination_id}
            for r in response["results"]
        ]
        return SourceBatch(records_to_batch(records), {"cursor": next_cursor} if next_cursor else {}), next_cursor

    def read(self, split: Split, position: Any | None) -> Iterator[SourceBatch]:
        if position is None:
            cursor: str | None = None
        elif isinstance(position, dict) and position.get("cursor"):
            cursor = str(position["cursor"])
        else:
            return  # {} after the first page is bizon's "no next page": the split is exhausted
        while True:
            page, next_cursor = self._page(cursor)
            yield page
            if not next_cursor:
                return
            cursor = next_cursor

    def poll(self, split: Split) -> SourceBatch:
        """Stream mode: bizon's stream runner calls ``get()`` without pagination, so every poll is page 1."""
        return self._page(None)[0]
