"""Crash recovery: workers SIGKILLed at random during a real synthetic -> Parquet run; rows lost and
duplicated (target: 0 and 0) and the time from a worker's death to its replacement working.

The benchmark itself is ``native_bench/recovery.py`` (its docstring has the method).
"""

from __future__ import annotations

from native_bench import recovery
from native_bench.benchmarks.external import wrap
from native_bench.context import Context
from native_bench.result import BenchResult, Target

NAME = "recovery"
TITLE = "Crash recovery: random SIGKILLs, rows lost / duplicated, replacement time"
KEYS = ["kills", "rows_lost", "duplicates", "recovery_median_s", "recovery_max_s", "replacement_up_median_s"]


def _metrics(rows: list[dict]) -> dict[str, float | None]:
    row = rows[0] if rows else {}
    return {key: row.get(key) for key in KEYS}


def _targets(m: dict[str, float | None]) -> list[Target]:
    return [
        Target("rows lost after the kills", m["rows_lost"], 0, "rows", higher_is_better=False),
        Target("rows duplicated after the kills", m["duplicates"], 0, "rows", higher_is_better=False),
    ]


def run(ctx: Context) -> BenchResult:
    return wrap(recovery, name=NAME, title=TITLE, quick=ctx.quick, metrics=_metrics, targets=_targets)
