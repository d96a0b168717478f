"""PNG plots of the results (matplotlib, optional: ``pip install -e '.[bench]'``).

Why optional: the numbers are the product; the suite must still write results.md and results.json
on a machine without matplotlib (CI installs only the ``test`` extra) and say the plots were skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from native_bench.result import BenchResult


def _size_label(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def _transport(result: BenchResult, plt: Any, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted({r["batch_bytes"] for r in result.rows})
    for name in sorted({r["transport"] for r in result.rows}):
        points = sorted((r["batch_bytes"], r["gbps"]) for r in result.rows if r["transport"] == name)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [_size_label(s) for s in sizes])
    ax.set(xlabel="batch size", ylabel="GB/s (payload, wall clock)", title="Producer -> consumer transport")
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, plt, path)


def _e2e(result: BenchResult, plt: Any, path: Path) -> None:
    fig, (rate_ax, speed_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    workers = sorted({r["workers"] for r in result.rows})
    for dest in dict.fromkeys(r["destination"] for r in result.rows):
        points = sorted((r["workers"], r["rows_per_s"]) for r in result.rows if r["destination"] == dest)
        points = [p for p in points if p[1]]
        if not points:
            continue
        rate_ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=dest)
        base = dict(points).get(1)
        if base:
            speed_ax.plot([p[0] for p in points], [p[1] / base for p in points], marker="o", label=dest)
    speed_ax.plot(workers, workers, linestyle="--", color="grey", label="linear")
    rate_ax.set_yscale("log")
    rate_ax.set(xlabel="workers (producers = consumers)", ylabel="rows/s", title="bizon-fast end to end")
    speed_ax.set(xlabel="workers", ylabel="speed-up vs 1 worker", title="Scaling")
    for ax in (rate_ax, speed_ax):
        ax.set_xticks(workers)
        ax.grid(True, alpha=0.3)
        ax.legend()
    _save(fig, plt, path)


def _bars(result: BenchResult, plt: Any, path: Path, label: Callable[[dict], str], title: str) -> None:
    """Horizontal bars of rows/s (log scale: bizon and noop differ by three orders of magnitude)."""
    rows = [r for r in result.rows if r.get("rows_per_s")]
    labels = [label(r) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    ax.barh(labels, [r["rows_per_s"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(r["rows_per_s"], i, f" {r['rows_per_s']:,.0f}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set(xlabel="rows/s (log scale)", title=title)
    ax.grid(True, axis="x", alpha=0.3)
    _save(fig, plt, path)


def _alternatives(result: BenchResult, plt: Any, path: Path) -> None:
    _bars(result, plt, path, lambda r: r["contender"], "Same workloads, same run")


def _showcase(result: BenchResult, plt: Any, path: Path) -> None:
    _bars(result, plt, path, lambda r: r["case"], "Showcase (2 workers)")


def _checkpoint(result: BenchResult, plt: Any, path: Path) -> None:
    label = lambda r: f"{r['backend']}, every {r['every']}"  # noqa: E731
    _bars(result, plt, path, label, "Cursor commits: every 1 / 10 / 100 batches")


def _pg(result: BenchResult, plt: Any, path: Path) -> None:
    _bars(result, plt, path, lambda r: r["contender"], "Postgres -> Postgres")


def _transforms(result: BenchResult, plt: Any, path: Path) -> None:
    _bars(result, plt, path, lambda r: r["transform"], "Transforms, one core")


def _save(fig: Any, plt: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTTERS: dict[str, Callable[[BenchResult, Any, Path], None]] = {
    "transport": _transport,
    "e2e": _e2e,
    "showcase": _showcase,
    "alternatives": _alternatives,
    "checkpoint": _checkpoint,
    "pg": _pg,
    "transforms": _transforms,
}


def render(results: list[BenchResult], out: Path) -> str | None:
    """Draw every result that has rows into ``out/<name>.png``; return a note when plots were skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plots skipped: matplotlib is not installed (pip install -e '.[bench]')"
    failed = []
    for result in results:
        plotter = PLOTTERS.get(result.name)
        if plotter is None or not result.rows:
            continue
        path = out / f"{result.name}.png"
        try:
            plotter(result, plt, path)
        except Exception as exc:  # a plot must never cost the numbers
            failed.append(f"{result.name} ({type(exc).__name__}: {exc})")
            plt.close("all")
            continue
        if path.name not in result.plots:
            result.plots.append(path.name)
    return f"plots failed: {', '.join(failed)}" if failed else None
