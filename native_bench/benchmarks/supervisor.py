"""Supervisor capacity: how many batches a second the one supervisor process can broker and commit, from its own
CPU per batch, and what that means for 16 producers + 16 consumers at the default batch size.

Every batch crosses the supervisor (a slot granted, its ``Filled`` report, its assignment to a consumer, the
``Written`` ack, the cursor commit), so on a large machine either the supervisor's single core or the workers'
cores bind first. A 2-core machine cannot run 32 workers, so the ceiling is measured where it shows: tiny batches
(``batch_rows`` 4, ``batch_size_mb`` 0.0001: one source batch per ring batch) into ``noop`` (``buffer_size: 0``:
one write per batch), so the workers do almost nothing per batch and the supervisor's share is as large as it
gets. The supervisor's CPU (user+sys of that process alone, from ``getrusage`` at its exit) is measured at two
run lengths; the difference over the difference in batches is its CPU per batch, start-up and planning cancelled
out, and one core's worth of it is the ceiling in batches/s. The projection multiplies that ceiling by the rows of
a default batch (``engine.queue.config.batch_size_mb`` 4 MiB of synthetic rows) and sets it against 16 x the rows/s
one worker pair moves at the default batch size (synthetic -> noop, Parquet and NDJSON at 1 worker, in the same
run, each at two lengths: the steady rate, start-up cancelled, is what 16 pairs would multiply).
Assumed, not measured: the supervisor's cost per batch stays flat from 2 to 32 worker pipes.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from native_bench import pipelines, verify
from native_bench.context import Context
from native_bench.proctree import RunStats, measure
from native_bench.result import BenchResult, fmt, median, ratio, table
from native_bench.rounds import interleave, summarize

NAME = "supervisor"
TITLE = "Supervisor capacity: batches/s one supervisor core can broker and commit; 16+16 workers projected"
TINY_ROWS = 4  # rows per batch in the tiny-batch runs
TINY_BATCH_MB = 0.0001  # below one tiny batch's bytes: every source batch becomes its own ring batch
PROJECTED_WORKERS = 16
DEFAULT_BATCH_MB = 4.0  # engine.queue.config.batch_size_mb's default
SYNTHETIC_BATCH_ROWS = 65_536  # the synthetic source's default batch_rows
RUSAGE_ENV = "NB_SUPERVISOR_RUSAGE"
#: ``bizon-fast`` in this interpreter, writing its own (the supervisor's) user+sys CPU to $NB_SUPERVISOR_RUSAGE
#: at exit; workers leave through os._exit and never run it
_CLI = (
    "import atexit, os, resource\n"
    "def _dump():\n"
    "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
    f"    open(os.environ[{RUSAGE_ENV!r}], 'w').write(repr(r.ru_utime + r.ru_stime))\n"
    "atexit.register(_dump)\n"
    "import sys\n"
    "sys.argv[0] = 'bizon-fast'\n"
    "from bizon_fast.cli import main\n"
    "main()\n"
)


def _tiny(batches: int) -> dict[str, Any]:
    return pipelines.synthetic_pipeline(
        f"supervisor_tiny_{batches}",
        batches * TINY_ROWS,
        "noop",
        {"buffer_size": 0},
        splits=16,
        source={"batch_rows": TINY_ROWS},
        engine={"queue": {"config": {"batch_size_mb": TINY_BATCH_MB}}},
    )


def _run(config: dict[str, Any], workers: int, ctx: Context) -> RunStats:
    """``bizon-fast run`` of ``config`` like ``pipelines.run_bizon_fast``, plus the supervisor's own CPU
    (``extra["supervisor_cpu_s"]``)."""

    def body(folder: Path) -> RunStats:
        (folder / "out").mkdir()
        (folder / "pipeline.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        report = folder / "supervisor.rusage"
        env = {**os.environ, "BIZON_FAST_LOG_DIR": str(folder / "logs"), RUSAGE_ENV: str(report)}
        cmd = [sys.executable, "-c", _CLI, "run", "pipeline.yml", "--workers", str(workers), "--quiet"]
        stats = measure(cmd, cwd=folder, env=env, timeout=pipelines.TIMEOUT_S)
        if report.exists():
            stats.extra["supervisor_cpu_s"] = float(report.read_text())
        return stats

    rows = int(config["source"]["rows"])
    return pipelines.in_fresh_dir(ctx.scratch, body, rows, lambda folder: verify.pipeline_output(folder, config))


def default_batch_rows() -> int:
    """Rows of one ring batch at the defaults: synthetic batches of 65,536 rows, coalesced to 4 MiB or more."""
    row_bytes = pipelines.synthetic_bytes({"source": {"rows": 1, "payload_bytes": 32}})
    per_source_batch = SYNTHETIC_BATCH_ROWS * row_bytes
    return SYNTHETIC_BATCH_ROWS * max(1, math.ceil(DEFAULT_BATCH_MB * 2**20 / per_source_batch))


#: destination -> (example config, short and long run rows: full, then quick) of the 1-worker runs at default batches
WORKLOADS: dict[str, tuple[str, tuple[int, int], tuple[int, int]]] = {
    "noop": ("synthetic_to_noop.yml", (4_000_000, 16_000_000), (500_000, 2_000_000)),
    "parquet": ("synthetic_to_parquet.yml", (1_000_000, 4_000_000), (100_000, 400_000)),
    "json": ("synthetic_to_json.yml", (500_000, 2_000_000), (50_000, 200_000)),
}


def _per_worker(runs: dict[str, list[RunStats]], dest: str, sizes: tuple[int, int], notes: list[str]) -> dict:
    """One worker pair's rows/s at default batches: start-up included (long run), and steady (the extra rows
    over the extra time of the long run, start-up cancelled; None when the noise made it negative)."""
    summaries = [summarize(runs[f"{dest}{n}/1"], n) for n in sizes]
    for n, summary in zip(sizes, summaries, strict=True):
        if "failure" in summary:
            notes.append(f"synthetic -> {dest}, {n:,} rows at 1 worker: {summary['failure']}")
    walls = [summary["wall_s"] for summary in summaries]
    steady = None
    if None not in walls and walls[1] > walls[0]:
        steady = (sizes[1] - sizes[0]) / (walls[1] - walls[0])
    return {"with_startup": summaries[1]["rows_per_s"], "steady": steady}


def run(ctx: Context) -> BenchResult:
    short, long = ctx.size(4_000, 1_000), ctx.size(16_000, 4_000)
    contenders = {
        f"tiny{n}/{w}": (lambda n=n, w=w: _run(_tiny(n), w, ctx)) for w in ctx.worker_counts for n in (short, long)
    }
    sizes = {dest: ctx.size(full, quick) for dest, (_, full, quick) in WORKLOADS.items()}
    for dest, (example, _, _) in WORKLOADS.items():
        for n in sizes[dest]:
            config = pipelines.with_rows(pipelines.example(example), n, f"supervisor_{dest}_{n}")
            contenders[f"{dest}{n}/1"] = lambda c=config: _run(c, 1, ctx)
    runs = interleave(contenders, ctx.rounds)
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    for w in ctx.worker_counts:
        a, b = runs[f"tiny{short}/{w}"], runs[f"tiny{long}/{w}"]
        sa, sb = summarize(a, short * TINY_ROWS), summarize(b, long * TINY_ROWS)
        for s in (sa, sb):
            if "failure" in s:
                notes.append(f"tiny batches at {w} workers: {s['failure']}")
        sup_a = median(r.extra.get("supervisor_cpu_s") for r in a if r.ok)
        sup_b = median(r.extra.get("supervisor_cpu_s") for r in b if r.ok)
        extra = long - short
        per_batch = (sup_b - sup_a) / extra if sup_a is not None and sup_b is not None else None
        wall = sb["wall_s"] - sa["wall_s"] if sa["wall_s"] is not None and sb["wall_s"] is not None else None
        rows.append(
            {
                "workers": w,
                "batches": f"{short:,} / {long:,}",
                "wall_s": sb["wall_s"],
                "batches_per_s": extra / wall if wall and wall > 0 else None,
                "supervisor_cpu_s": sup_b,
                "supervisor_us_per_batch": per_batch * 1e6 if per_batch else None,
                "ceiling_batches_per_s": 1 / per_batch if per_batch and per_batch > 0 else None,
                "tree_cpu_s": sb["cpu_s"],
            }
        )
    ceiling = median(r["ceiling_batches_per_s"] for r in rows)
    batch_rows = default_batch_rows()
    supervisor_rows = ceiling * batch_rows if ceiling else None
    metrics: dict[str, float | None] = {
        "supervisor_us_per_batch": median(r["supervisor_us_per_batch"] for r in rows),
        "supervisor_ceiling_batches_per_s": ceiling,
        "tiny_batches_per_s_w1": rows[0]["batches_per_s"],
        "default_batch_rows": float(batch_rows),
        "projected_supervisor_rows_per_s": supervisor_rows,
    }
    cells = []
    for dest in WORKLOADS:
        rate = _per_worker(runs, dest, sizes[dest], notes)
        per_worker = rate["steady"] or rate["with_startup"]
        workers_rows = PROJECTED_WORKERS * per_worker if per_worker else None
        load = ratio(workers_rows / batch_rows if workers_rows else None, ceiling)
        binds = None if load is None else ("supervisor" if load > 1 else "workers' cores")
        metrics[f"{dest}_per_worker_rows_per_s"] = per_worker
        metrics[f"{dest}_per_worker_rows_per_s_with_startup"] = rate["with_startup"]
        metrics[f"{dest}_projected_16x16_rows_per_s"] = workers_rows
        metrics[f"{dest}_projected_16x16_supervisor_load"] = load
        cells.append(
            [
                f"synthetic -> {dest}",
                fmt(rate["with_startup"]),
                fmt(rate["steady"]),
                fmt(workers_rows),
                fmt(workers_rows / batch_rows if workers_rows else None),
                fmt(100 * load, 1, " %") if load is not None else "n/a",
                binds or "n/a",
            ]
        )
    head = (
        f"Supervisor ceiling: **{fmt(ceiling)} batches/s** on one core ({fmt(metrics['supervisor_us_per_batch'], 1)} "
        f"µs of its CPU a batch); a default batch is {fmt(batch_rows)} synthetic rows (4 MiB), so the supervisor "
        f"can carry **{fmt(supervisor_rows)} rows/s**. Against it, {PROJECTED_WORKERS} producers + "
        f"{PROJECTED_WORKERS} consumers, each pair as fast as one pair here (steady rate; start-up included where "
        "the noise hid it):"
    )
    projection = table(
        [
            "workload (1 worker pair, default batches)",
            "rows/s, start-up included",
            "rows/s, steady",
            f"x {PROJECTED_WORKERS} pairs, rows/s",
            "batches/s needed",
            "supervisor core busy",
            "binds first",
        ],
        cells,
    )
    return BenchResult(
        name=NAME,
        title=TITLE,
        description="",
        rows=rows,
        metrics=metrics,
        notes=notes,
        markdown=_markdown(rows) + "\n\n" + head + "\n\n" + projection,
    )


def _markdown(rows: list[dict[str, Any]]) -> str:
    cells = [
        [
            str(r["workers"]),
            r["batches"],
            fmt(r["wall_s"], 2),
            fmt(r["batches_per_s"]),
            fmt(r["supervisor_cpu_s"], 2),
            fmt(r["supervisor_us_per_batch"], 1),
            fmt(r["ceiling_batches_per_s"]),
            fmt(r["tree_cpu_s"], 1),
        ]
        for r in rows
    ]
    headers = [
        "workers",
        "tiny batches (short / long run)",
        "wall s (long)",
        "batches/s moved",
        "supervisor CPU s (long)",
        "supervisor µs/batch",
        "ceiling batches/s (1 core)",
        "tree CPU s (long)",
    ]
    return table(headers, cells)
