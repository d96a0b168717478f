"""Postgres -> Postgres: bizon-fast at 1 and 2 workers against a ``psql \\copy | psql \\copy`` pipe
(target: >= 0.8x the pipe at 2 workers).

The benchmark itself is ``native_bench/pg.py`` (its docstring has the method); it needs the PostgreSQL
server on 127.0.0.1:5432 (``$BIZON_FAST_BENCH_PG``) and is skipped with a note without one. The
suite's --quick runs it on 200k rows, one round.
"""

from __future__ import annotations

from native_bench import pg
from native_bench.benchmarks.external import by, skip_or_fail, wrap
from native_bench.context import Context
from native_bench.result import BenchResult, Target

NAME = "pg"
TITLE = "Postgres -> Postgres: bizon-fast vs a psql COPY pipe"
TARGET = 0.8
QUICK_ROWS = 200_000  # the suite's --quick: a smoke test of the plumbing, not a measurement


def _metrics(rows: list[dict]) -> dict[str, float | None]:
    rates, ratios = by(rows, "contender", "rows_per_s"), by(rows, "contender", "vs_psql")
    metrics: dict[str, float | None] = {f"{k}_rows_per_s": v for k, v in rates.items()}
    metrics["bizon_fast_w2_vs_psql"] = ratios.get("bizon-fast -w 2")
    return metrics


def run(ctx: Context) -> BenchResult:
    try:
        pg._connect().close()
    except Exception as exc:  # psycopg missing or no server: nothing to measure here
        return skip_or_fail(NAME, TITLE, f"no PostgreSQL at {pg.DSN}: {type(exc).__name__}: {exc}")
    return wrap(
        pg,
        name=NAME,
        title=TITLE,
        quick=ctx.quick,
        metrics=_metrics,
        targets=lambda m: [Target("bizon-fast 2 workers / psql pipe", m["bizon_fast_w2_vs_psql"], TARGET)],
        quick_overrides={"QUICK_ROWS": QUICK_ROWS, "QUICK_ROUNDS": 1},
    )
