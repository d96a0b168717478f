"""Run a sibling benchmark module that has its own ``run(quick) -> list[dict]`` (and maybe ``markdown(rows)``).

Why a wrapper rather than a rewrite: ``native_bench/pg.py``, ``transforms.py`` and ``recovery.py`` belong
to the engineers of those features and are runnable on their own; the suite only adds them to the
same results.md / results.json, with their headline figures as metrics and their targets.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from native_bench.result import BenchResult, Target, table

#: as in the tests: with this set (CI), a benchmark skipped for a missing service is a failure
REQUIRE_SERVICES = "BIZON_FAST_REQUIRE_SERVICES"


@contextlib.contextmanager
def patched(module: ModuleType, **values: Any) -> Iterator[None]:
    """Set module-level constants (sizes, rounds) for one call, then restore them.

    The modules read these at call time; --quick uses it to fit the suite's two-minute budget with
    sizes the owner's own --quick does not go down to, without touching the owner's file.
    """
    saved = {key: getattr(module, key) for key in values}
    for key, value in values.items():
        setattr(module, key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(module, key, value)


def generic_markdown(rows: list[dict[str, Any]]) -> str:
    """A table of every key of the rows, for modules without a ``markdown``."""
    keys = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value: Any) -> str:
        if isinstance(value, float) and math.isfinite(value):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return "n/a" if value is None else str(value)

    return table(keys, [[cell(row.get(k)) for k in keys] for row in rows])


def wrap(
    module: ModuleType,
    *,
    name: str,
    title: str,
    quick: bool,
    metrics: Callable[[list[dict]], dict[str, float | None]],
    targets: Callable[[dict[str, float | None]], list[Target]] = lambda _: [],
    quick_overrides: dict[str, Any] | None = None,
) -> BenchResult:
    overrides = (quick_overrides or {}) if quick else {}
    with patched(module, **overrides):
        rows = module.run(quick)
    render = getattr(module, "markdown", None)
    values = metrics(rows)
    return BenchResult(
        name=name,
        title=title,
        description="",
        rows=rows,
        metrics=values,
        targets=targets(values),
        markdown=render(rows) if render else generic_markdown(rows),
    )


def skip_or_fail(name: str, title: str, reason: str) -> BenchResult:
    """A benchmark that cannot run here: skipped with the reason, or a failure where services are required."""
    result = BenchResult(name=name, title=title, description="")
    if os.environ.get(REQUIRE_SERVICES) == "1":
        result.error = f"required service missing ({REQUIRE_SERVICES}=1): {reason}"
    else:
        result.skipped = reason
    return result


def by(rows: list[dict], key: str, value_key: str) -> dict[str, Any]:
    """``{row[key]: row[value_key]}`` for the rows that have both."""
    return {str(r[key]): r.get(value_key) for r in rows if key in r}
