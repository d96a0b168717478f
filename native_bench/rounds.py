"""Side-by-side runs: contenders interleaved round by round, then summarized by their medians.

Why: the machine is shared and noisy (other jobs come and go on 2 cores). Running contender A three
times and then B three times lets a burst of load land on one of them only; interleaving them, with
the starting contender rotated each round, spreads it over all, and the median drops the outlier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from native_bench.proctree import RunStats
from native_bench.result import median

MB = 1e6


def interleave(contenders: dict[str, Callable[[], RunStats]], rounds: int) -> dict[str, list[RunStats]]:
    """Run every contender ``rounds`` times, round-robin, rotating which one goes first."""
    names = list(contenders)
    runs: dict[str, list[RunStats]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            runs[name].append(contenders[name]())
    return runs


def _mb(nbytes: float | None) -> float | None:
    return nbytes / MB if nbytes else None


def summarize(runs: list[RunStats], rows: int, nbytes: float | None = None) -> dict[str, Any]:
    """Medians of the successful runs: wall time, rates, CPU and memory of the process tree.

    A successful run exited 0 *and* wrote ``rows`` distinct ids, read back after it (``RunStats.rows_written``,
    checked by ``native_bench.verify``); rates are the rows read back over each run's time, and a run nobody
    read back counts as failed: no rate is reported for nominal rows.

    ``nbytes`` is the payload moved (Arrow bytes of the rows) for MB/s; ``output_mb`` is what the run
    wrote to disk. Peak RSS is the tree's sampled sum (shared pages counted per process), peak PSS the
    same with shared pages split among their users (see ``proctree``). Every figure is None when no
    run succeeded; ``failure`` then says why.
    """
    for r in runs:  # a rate is reported only for rows read back from the output (``native_bench.verify``)
        if r.ok and r.rows_written is None:
            r.verify_error = "output not verified: the benchmark did not read back what the run wrote"
    ok = [r for r in runs if r.ok]
    wall = median(r.wall_s for r in ok)
    cpu = median(r.cpu_s for r in ok)
    written = median(r.rows_written for r in ok)
    out_bytes = median(r.extra.get("output_bytes") for r in ok)
    summary: dict[str, Any] = {
        "rows": written if written is not None else rows,
        "runs": len(runs),
        "failed_runs": len(runs) - len(ok),
        "wall_s": wall,
        "rows_per_s": median(r.rows_written / r.wall_s for r in ok if r.wall_s),
        "mb_per_s": nbytes / MB / wall if wall and nbytes else None,
        "cpu_s": cpu,
        "cpu_cores": cpu / wall if wall and cpu is not None else None,
        "rows_per_cpu_s": median(r.rows_written / r.cpu_s for r in ok if r.cpu_s),
        "peak_rss_mb": _mb(median(r.peak_rss for r in ok)),
        "peak_pss_mb": _mb(median(r.peak_pss for r in ok)),
        "output_mb": _mb(out_bytes),
        "output_files": median(r.extra.get("output_files") for r in ok),
        "processes": max((r.peak_procs for r in ok), default=None),
        # every successful round, in run order: the charts draw min-max whiskers around the medians above
        "rows_per_s_rounds": [r.rows_written / r.wall_s for r in ok if r.wall_s],
        "wall_s_rounds": [r.wall_s for r in ok],
        "peak_rss_mb_rounds": [r.peak_rss / MB for r in ok if r.peak_rss],
    }
    if len(ok) < len(runs):
        summary["failure"] = next(r.failure() for r in runs if not r.ok)
    return summary
