"""End to end: synthetic rows -> noop / Parquet / NDJSON through ``bizon-fast run`` at 1..cores workers:
rows/s, payload MB/s, CPU (user+sys of the whole process tree) and peak RSS (summed over the tree).

Each destination starts from the project's example pipeline (``configs/synthetic_to_*.yml``) with
the row count scaled to the mode, so the numbers are those of the configs users copy. All the
(destination, workers) cases run interleaved, round by round.
"""

from __future__ import annotations

from collections.abc import Callable

from native_bench import pipelines
from native_bench.context import Context
from native_bench.proctree import RunStats
from native_bench.result import BenchResult, fmt, ratio, table
from native_bench.rounds import interleave, summarize

NAME = "e2e"
TITLE = "End to end: synthetic -> noop / parquet / json, by workers"

#: destination -> (example config, full rows, quick rows)
CASES: dict[str, tuple[str, int, int]] = {
    "noop": ("synthetic_to_noop.yml", 20_000_000, 2_000_000),
    "parquet": ("synthetic_to_parquet.yml", 4_000_000, 500_000),
    "json": ("synthetic_to_json.yml", 2_000_000, 200_000),
}


def _contender(config: dict, workers: int, ctx: Context) -> Callable[[], RunStats]:
    return lambda: pipelines.run_bizon_fast(config, workers=workers, scratch=ctx.scratch)


def run(ctx: Context) -> BenchResult:
    configs = {
        dest: pipelines.with_rows(pipelines.example(example), ctx.size(full, quick), f"e2e_{dest}")
        for dest, (example, full, quick) in CASES.items()
    }
    keys = [(dest, w) for dest in configs for w in ctx.worker_counts]
    runs = interleave({f"{d}/{w}": _contender(configs[d], w, ctx) for d, w in keys}, ctx.rounds)
    rows: list[dict] = []
    notes: list[str] = []
    for dest, workers in keys:
        config = configs[dest]
        summary = summarize(runs[f"{dest}/{workers}"], config["source"]["rows"], pipelines.synthetic_bytes(config))
        if "failure" in summary:
            notes.append(f"{dest} at {workers} workers: {summary['failure']}")
        rows.append({"destination": dest, "workers": workers, **summary})
    by = {(r["destination"], r["workers"]): r for r in rows}
    top = ctx.cores
    metrics: dict[str, float | None] = {}
    for dest in configs:
        for w in ctx.worker_counts:
            metrics[f"{dest}_rows_per_s_w{w}"] = by[(dest, w)]["rows_per_s"]
        metrics[f"{dest}_speedup_w{top}"] = ratio(by[(dest, top)]["rows_per_s"], by[(dest, 1)]["rows_per_s"])
    return BenchResult(
        name=NAME, title=TITLE, description="", rows=rows, metrics=metrics, notes=notes, markdown=_markdown(rows)
    )


def _markdown(rows: list[dict]) -> str:
    base = {r["destination"]: r["rows_per_s"] for r in rows if r["workers"] == 1}
    cells = [
        [
            r["destination"],
            str(r["workers"]),
            fmt(r["rows"]),
            fmt(r["wall_s"], 2),
            fmt(r["rows_per_s"]),
            fmt(r["mb_per_s"], 1),
            fmt(ratio(r["rows_per_s"], base.get(r["destination"])), 2, "x"),
            fmt(r["cpu_s"], 1),
            fmt(r["cpu_cores"], 2),
            fmt(r["rows_per_cpu_s"]),
            fmt(r["peak_rss_mb"]),
            fmt(r["peak_pss_mb"]),
            fmt(r["output_mb"]),
        ]
        for r in rows
    ]
    headers = [
        "destination",
        "workers",
        "rows",
        "wall s",
        "rows/s",
        "MB/s (Arrow)",
        "vs 1 worker",
        "CPU s",
        "cores busy",
        "rows per CPU-s",
        "peak RSS MB (tree)",
        "peak PSS MB (tree)",
        "output MB",
    ]
    return table(headers, cells)
