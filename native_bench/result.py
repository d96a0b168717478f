"""What a benchmark hands back: its rows of measurements, headline metrics, targets and notes.

Why one shape for all: the suite writes every benchmark into the same results.json and results.md,
and the CI smoke test only checks that each benchmark that ran produced numbers. A benchmark that
cannot measure something (a service or PyPI missing, a feature not built yet) says so in ``notes``
and leaves the metric ``None``, or sets ``skipped`` when it cannot run at all, instead of failing
the whole run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Target:
    """A goal from the issue: ``value`` compared with ``goal`` (``>=`` when ``higher_is_better``)."""

    label: str
    value: float | None
    goal: float
    unit: str = "x"
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


@dataclass
class BenchResult:
    """One benchmark's output. ``metrics`` holds its headline numbers (None: could not be measured)."""

    name: str
    title: str
    description: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    markdown: str = ""
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load_average: list[float] = field(default_factory=list)  # at the start: how busy others kept the machine
    error: str | None = None
    skipped: str | None = None  # why it could not run here (a service missing): not a failure

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [t.to_dict() for t in self.targets]
        return data

    def numbers(self) -> list[float]:
        """Every finite number this benchmark measured (what the smoke test looks for)."""
        values = [v for v in self.metrics.values() if v is not None]
        for row in self.rows:
            values += [v for v in row.values() if isinstance(v, int | float) and not isinstance(v, bool)]
        return [float(v) for v in values if math.isfinite(float(v))]


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that were measured; None when none was."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    """A table cell: thousands separators, ``n/a`` for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
