"""A bizon custom source (the generator fixture, 1000 records a page of {id, name, age}) into NDJSON: what the
engine adds to the source's own ``get()`` loop, its start-up, and the memory a small job holds against bizon 0.6.4.

Three comparisons, same fixture file, same run. (1) Overhead: bizon-fast's whole command on 1M records against
the source's ``get()`` loop alone in one process (``native_bench.source_loop``); target: total <= 1.3x the loop
+ start-up, where start-up is command start to the source's first page read (the fixture stamps the wall clock of
its first ``get()`` into ``BIZON_BENCH_FIRST_GET``). (2) Footprint: 300k records with the defaults, bizon-fast
against bizon 0.6.4, peak PSS summed over each process tree (sampled every 100 ms; the 1M-record timed run every
0.5 s, so the probe does not take CPU from the run it times); target <= 2x bizon's.
(3) Start-up of both engines, from the same stamp.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from native_bench import pipelines, proctree, venvs, verify
from native_bench.context import Context
from native_bench.proctree import RunStats, measure
from native_bench.result import BenchResult, Target, fmt, median, ratio, table
from native_bench.rounds import interleave, summarize

NAME = "bizon_records"
TITLE = "A bizon custom source: engine overhead per record, start-up, footprint against bizon 0.6.4"
CUSTOM_SOURCE = pipelines.FIXTURES / "bizon_generator_source.py"
BIZON_REQUIREMENTS = ["bizon==0.6.4"]
STAMP_ENV = "BIZON_BENCH_FIRST_GET"
PAGE_SIZE = 1_000
OVERHEAD_TARGET = 1.3  # bizon-fast total <= 1.3 x (loop alone) + start-up
FOOTPRINT_TARGET = 2.0  # bizon-fast peak PSS <= 2 x bizon's
PSS_EVERY = 2  # one PSS sample per 2 polls of 50 ms: a small job's peak lasts well under a second
#: the 1M-record run is the time target: its PSS is sampled at proctree's default rate (every 0.5 s), as the
#: dense sampling of the footprint runs reads every process's smaps ~10 times a second, CPU the run's own
#: processes then lack on a 2-core machine
TIMED_PSS_EVERY = proctree.PSS_EVERY

LOOP = "source get() loop alone, one process"
BF = "bizon-fast -> file json"
BF_SMALL = "bizon-fast -> file json (300k, defaults)"
BIZON_SMALL = "bizon 0.6.4 -> file json (300k, defaults)"


def records_pipeline(name: str, rows: int) -> dict[str, Any]:
    """bizon's YAML for the generator custom source -> file (NDJSON), defaults otherwise; both engines accept it."""
    return {
        "name": name,
        "source": {"name": "generator", "stream": "records", "rows": rows, "page_size": PAGE_SIZE},
        "destination": {"name": "file", "config": {"destination_id": f"out/{name}", "format": "json"}},
    }


def _stamped(folder: Path, run: Callable[[dict[str, str]], RunStats]) -> RunStats:
    """``run(env)`` with the fixture's first-get stamp on; its start-up (command start to first page) in ``extra``."""
    stamp = folder / "first_get"
    env = {**os.environ, STAMP_ENV: str(stamp)}
    started = time.time()
    stats = run(env)
    if stamp.is_file():
        first = min(float(line) for line in stamp.read_text().split())
        stats.extra["startup_s"] = first - started
    return stats


def _bizon_fast(rows: int, ctx: Context, name: str, pss_every: int = PSS_EVERY) -> RunStats:
    config = records_pipeline(name, rows)

    def body(folder: Path) -> RunStats:
        (folder / "out").mkdir()
        (folder / "pipeline.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [sys.executable, "-m", "bizon_fast", "run", "pipeline.yml", "--quiet", "--custom-source"]
        cmd.append(str(CUSTOM_SOURCE))
        return _stamped(
            folder,
            lambda env: measure(
                cmd, cwd=folder, env={**env, "BIZON_FAST_LOG_DIR": str(folder / "logs")}, pss_every=pss_every
            ),
        )

    return pipelines.in_fresh_dir(ctx.scratch, body, rows, lambda folder: verify.pipeline_output(folder, config))


def _bizon(venv: venvs.Venv, rows: int, ctx: Context) -> RunStats:
    config = records_pipeline("bizon_records", rows)

    def body(folder: Path) -> RunStats:
        (folder / "out").mkdir()
        (folder / "pipeline.yml").write_text(yaml.safe_dump(config))
        bizon = Path(str(venv.python)).parent / "bizon"
        cmd = [str(bizon), "run", "pipeline.yml", "--custom-source", str(CUSTOM_SOURCE)]
        return _stamped(folder, lambda env: measure(cmd, cwd=folder, env=env, pss_every=PSS_EVERY))

    return pipelines.in_fresh_dir(ctx.scratch, body, rows)


def _loop(rows: int, ctx: Context) -> RunStats:
    def body(folder: Path) -> RunStats:
        path = os.pathsep.join(p for p in (str(pipelines.REPO), os.environ.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "native_bench.source_loop", "--rows", str(rows), "--out", "loop.json"]
        stats = measure(cmd, cwd=folder, env={**os.environ, "PYTHONPATH": path})
        if stats.ok:
            found = json.loads((folder / "loop.json").read_text())
            for key in ("loop_s", "loop_cpu_s", "engine_cpu_s"):
                stats.extra[key] = found[key]
        return stats

    def read(folder: Path) -> verify.Written:
        found = json.loads((folder / "loop.json").read_text())["rows"]
        return verify.Written(found, None, "rows the loop got from get()")

    return pipelines.in_fresh_dir(ctx.scratch, body, rows, read)


def _extra(runs: list[RunStats], key: str) -> float | None:
    return median(r.extra.get(key) for r in runs if r.ok)


def run(ctx: Context) -> BenchResult:
    notes: list[str] = []
    rows = ctx.size(1_000_000, 300_000)
    small = 300_000  # the small job, in quick mode too: the footprint target is stated at this size
    bizon_venv = venvs.ensure("bizon", BIZON_REQUIREMENTS, "import bizon.cli.main")
    if bizon_venv.problem:
        notes.append(f"bizon skipped: {bizon_venv.problem}")
    contenders: dict[str, tuple[int, Callable[[], RunStats]]] = {
        LOOP: (rows, lambda: _loop(rows, ctx)),
        BF: (rows, lambda: _bizon_fast(rows, ctx, "bf_records", TIMED_PSS_EVERY)),
        BF_SMALL: (small, lambda: _bizon_fast(small, ctx, "bf_small")),
    }
    if bizon_venv.python:
        contenders[BIZON_SMALL] = (small, lambda: _bizon(bizon_venv, small, ctx))
    runs = interleave({label: job for label, (_, job) in contenders.items()}, ctx.rounds)
    table_rows = []
    for label, (n, _) in contenders.items():
        summary = summarize(runs[label], n)
        if "failure" in summary:
            notes.append(f"{label}: {summary['failure']}")
        summary["startup_s"] = _extra(runs[label], "startup_s")
        summary["loop_s"] = _extra(runs[label], "loop_s")
        summary["loop_cpu_s"] = _extra(runs[label], "loop_cpu_s")
        summary["engine_cpu_s"] = _extra(runs[label], "engine_cpu_s")
        table_rows.append({"contender": label, **summary})
    by = {r["contender"]: r for r in table_rows}

    def get(label: str, key: str) -> float | None:
        return by[label][key] if label in by else None

    loop_s, bf_wall, startup = get(LOOP, "loop_s"), get(BF, "wall_s"), get(BF, "startup_s")
    after_startup = bf_wall - startup if bf_wall is not None and startup is not None else None
    overhead = ratio(after_startup, loop_s)
    engine_us = (after_startup - loop_s) / rows * 1e6 if after_startup is not None and loop_s else None
    source_side, loop_cpu = get(LOOP, "engine_cpu_s"), get(LOOP, "loop_cpu_s")
    source_ns = (source_side - loop_cpu) / rows * 1e9 if source_side is not None and loop_cpu else None
    footprint = ratio(get(BF_SMALL, "peak_pss_mb"), get(BIZON_SMALL, "peak_pss_mb"))
    metrics = {
        "records": rows,
        "source_loop_s": loop_s,
        "bizon_fast_wall_s": bf_wall,
        "bizon_fast_startup_s": startup,
        "bizon_fast_after_startup_vs_loop": overhead,
        "engine_us_per_record_beyond_loop": engine_us,
        "source_loop_cpu_s": loop_cpu,
        "producer_path_cpu_s": source_side,
        "producer_ns_per_record_beyond_get": source_ns,
        "small_bizon_fast_peak_pss_mb": get(BF_SMALL, "peak_pss_mb"),
        "small_bizon_peak_pss_mb": get(BIZON_SMALL, "peak_pss_mb"),
        "small_pss_vs_bizon": footprint,
        "small_bizon_fast_startup_s": get(BF_SMALL, "startup_s"),
        "small_bizon_startup_s": get(BIZON_SMALL, "startup_s"),
    }
    notes.append(
        f"{rows:,} records: loop alone {fmt(loop_s, 2)} s; bizon-fast {fmt(bf_wall, 2)} s of which start-up "
        f"{fmt(startup, 2)} s (command to first page read): (total - start-up) / loop = {fmt(overhead, 2)}x, "
        f"{fmt(engine_us, 2)} us of engine time per record beyond get() (wall, the consumer's JSON writing included)"
    )
    notes.append(
        f"the producer's path alone, in one process (adapter read: get() + page -> Arrow batch, and the IPC write "
        f"of each 1 MiB): {fmt(source_side, 2)} CPU s against {fmt(loop_cpu, 2)} CPU s for get() alone: "
        f"{fmt(source_ns)} ns per record of engine work on the source side (target ~500)"
    )
    targets = [
        Target("bizon-fast (total - start-up) / source loop alone", overhead, OVERHEAD_TARGET, higher_is_better=False),
        Target(
            "producer path: engine CPU ns per record beyond get()", source_ns, 500, unit="ns", higher_is_better=False
        ),
        Target("300k records: bizon-fast peak PSS / bizon's", footprint, FOOTPRINT_TARGET, higher_is_better=False),
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description="",
        rows=table_rows,
        metrics=metrics,
        targets=targets,
        notes=notes,
        markdown=_markdown(table_rows),
    )


def _markdown(rows: list[dict]) -> str:
    cells = [
        [
            r["contender"],
            fmt(r["rows"]),
            fmt(r["wall_s"], 2),
            fmt(r["startup_s"], 2),
            fmt(r["loop_s"], 2),
            fmt(r["rows_per_s"]),
            fmt(r["cpu_s"], 1),
            fmt(r["processes"]),
            fmt(r["peak_rss_mb"]),
            fmt(r["peak_pss_mb"]),
        ]
        for r in rows
    ]
    headers = [
        "contender",
        "records",
        "wall s",
        "start-up s (to first page)",
        "get() loop s",
        "records/s",
        "CPU s",
        "processes",
        "peak RSS MB (tree)",
        "peak PSS MB (tree)",
    ]
    return table(headers, cells)
