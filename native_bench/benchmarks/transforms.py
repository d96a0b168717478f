"""Transforms: rows/s of bizon's per-record ``python:`` transform vs the vectorized ``sql:`` / ``polars:`` ones,
one core, on bizon source records and on typed columns (bizon's own transform as a reference when its venv
exists).

The benchmark itself is ``native_bench/transforms.py`` (its docstring has the method); the suite's
--quick runs it on 50k rows, one round.
"""

from __future__ import annotations

from native_bench import transforms
from native_bench.benchmarks.external import by, wrap
from native_bench.context import Context
from native_bench.result import BenchResult, ratio

NAME = "transforms"
TITLE = "Transforms: per-record python vs vectorized sql / polars"
PYTHON = "python (source records)"


def _metrics(rows: list[dict]) -> dict[str, float | None]:
    rates = by(rows, "transform", "rows_per_s")
    metrics: dict[str, float | None] = {f"{k}_rows_per_s": v for k, v in rates.items()}
    for name in rates:
        if name != PYTHON:
            metrics[f"{name}_vs_python"] = ratio(rates[name], rates.get(PYTHON))
    return metrics


def run(ctx: Context) -> BenchResult:
    return wrap(
        transforms,
        name=NAME,
        title=TITLE,
        quick=ctx.quick,
        metrics=_metrics,
        quick_overrides={"QUICK_ROWS": 50_000, "ROUNDS": 1},
    )
