"""BigQuery destinations (load jobs, Storage Write API, insertAll) into the bqemulator: rows/s, load jobs
and API calls per million rows.

The benchmark itself is ``native_bench/bigquery.py`` (its docstring has the method). It needs the emulator's
venv (``.venv-bqemu``, installed by the BigQuery tests, or ``$BIZON_FAST_BQEMULATOR``) and is reported as
skipped without it -- never failed: the emulator is a test tool, not a service CI runs.
"""

from __future__ import annotations

from native_bench import bigquery
from native_bench.benchmarks.external import by, wrap
from native_bench.context import Context
from native_bench.result import BenchResult

NAME = "bigquery"
TITLE = "BigQuery destinations into the emulator"


def _metrics(rows: list[dict]) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {}
    for key in ("rows_per_s", "api_calls_per_M_rows", "load_jobs_per_M_rows"):
        metrics |= {f"{k}_{key}": v for k, v in by(rows, "destination", key).items()}
    return metrics


def run(ctx: Context) -> BenchResult:
    reason = bigquery.available()
    if reason:
        return BenchResult(name=NAME, title=TITLE, description="", skipped=reason)
    return wrap(bigquery, name=NAME, title=TITLE, quick=ctx.quick, metrics=_metrics)
