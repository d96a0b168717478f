"""The benchmarks of the suite, in the order they run. Each module has ``NAME``, ``TITLE`` and ``run(ctx)``."""

from __future__ import annotations

from types import ModuleType

from native_bench.benchmarks import (
    alternatives,
    bigquery,
    bizon_records,
    checkpoint,
    e2e,
    files,
    kafka,
    kafka_source,
    merge,
    pg,
    pgread,
    pgwrite,
    recovery,
    showcase,
    supervisor,
    transforms,
    transport,
)

ALL: list[ModuleType] = [
    transport,
    e2e,
    showcase,
    alternatives,
    bizon_records,
    files,
    checkpoint,
    supervisor,
    pg,
    pgwrite,
    pgread,
    merge,
    bigquery,
    kafka,
    kafka_source,
    transforms,
    recovery,
]
BY_NAME: dict[str, ModuleType] = {m.NAME: m for m in ALL}


def description(module: ModuleType) -> str:
    """The first paragraph of a benchmark's docstring: what it measures (shown in the reports)."""
    return " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
