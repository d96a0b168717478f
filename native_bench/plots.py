"""PNG charts of the results, one per workload (matplotlib, optional: ``pip install -e '.[bench]'``).

Why one chart per workload, on a linear axis, with whiskers and a subtitle (issue 15): a log axis made
326k rows/s look like a sliver next to 858k and 1/7 look like 1/30; one chart mixing the JSON and the
Parquet workloads compared contenders that never ran the same thing; a bar without its spread hid that
three rounds ran and how far apart they were; a picture without the machine, the date, the rows and the
mode (quick or full) could not be told from another run's. So: each chart compares only contenders of
one workload; bars (or points) are medians on a linear axis starting at zero, with whiskers from the
slowest to the fastest round; the reference contender is grey and every other bar says its ratio to it;
the subtitle names the CPU, cores, date, mode, git commit, rows and rounds.

Why the shaping (:func:`charts`) is apart from the drawing (:func:`render`): what a chart shows is
tested without matplotlib, and the suite still writes results.md and results.json on a machine
without it (CI installs only the ``test`` extra), saying the plots were skipped.

``--update-readme`` copies the run's charts to ``docs/bench/`` (:func:`publish`), where the README and
``native_bench/README.md`` show them; ``python -m native_bench.plots results.json`` redraws a run's charts.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from native_bench.benchmarks.alternatives import BIZON, DLT
from native_bench.benchmarks.files import PA_SCAN, PA_WRITE, POLARS
from native_bench.result import BenchResult, Target

#: where ``--update-readme`` puts a full run's charts, relative to the repository (committed, unlike results/)
DOCS_DIR = Path("docs") / "bench"
REFERENCE_COLOR = "#9e9e9e"
BAR_COLOR = "#1f77b4"
HEADER_INCHES = 0.85  # the title and the two subtitle lines above the axes


@dataclass
class Bar:
    """One contender of a chart: the median of its rounds, and the slowest and fastest round (the whisker).

    ``median`` None: the contender ran but produced no number (failed runs); the chart says so instead of
    dropping it. ``series`` groups points into lines (transport: one line per transport, ``label`` = x).
    """

    label: str
    median: float | None
    low: float | None = None
    high: float | None = None
    rounds: int = 0
    rows: int | None = None
    note: str = ""
    reference: bool = False
    series: str = ""


@dataclass
class Chart:
    """One PNG: one workload's contenders. ``volume`` says what each run moved (rows, bytes) for the subtitle."""

    name: str  # the file's stem: ``<benchmark>`` or ``<benchmark>-<workload>``
    benchmark: str
    title: str
    unit: str
    bars: list[Bar]
    volume: str = ""
    kind: str = "bars"  # "bars" (horizontal, value axis from 0) | "lines" (x: categories, y from 0)
    goal: float | None = None  # drawn as a dashed line: the target on this axis
    goal_label: str = ""
    style: str = "human"  # how values read: "human" (3 significant figures, k/M), "int" (MB), "seconds"

    @property
    def rounds(self) -> int:
        return max((b.rounds for b in self.bars), default=0)


# --- shaping: results -> charts ------------------------------------------------------------------------------


def samples(row: dict[str, Any], key: str = "rows_per_s") -> list[float]:
    """The per-round values of ``key`` a row kept: ``<key>_rounds`` (``rounds.summarize``), else rows over each
    of ``walls_s`` (pg, kafka) or ``seconds_rounds`` (transforms), else the single value."""
    kept = row.get(f"{key}_rounds")
    if kept:
        return [float(v) for v in kept if v is not None]
    if key == "rows_per_s" and row.get("rows"):
        for walls in (row.get("walls_s"), row.get("seconds_rounds")):
            if walls:
                return [row["rows"] / w for w in walls if w]
    value = row.get(key)
    return [float(value)] if isinstance(value, int | float) and math.isfinite(value) else []


def bar(label: str, row: dict[str, Any], key: str = "rows_per_s") -> Bar:
    """A bar from a result row: its median (the row's own figure) and the min-max of its rounds."""
    values = samples(row, key)
    median = row.get(key)
    if median is None and values:
        median = sorted(values)[len(values) // 2]
    rows = row.get("rows")
    return Bar(
        label=label,
        median=float(median) if median is not None else None,
        low=min(values) if values else None,
        high=max(values) if values else None,
        rounds=len(values),
        rows=int(rows) if isinstance(rows, int | float) else None,
    )


def _times(value: float) -> str:
    return f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def relative_to(bars: list[Bar], reference: str, short: str, reference_value: float | None = None) -> None:
    """Mark the bar labelled ``reference`` and note every bar's ratio to it (``reference_value``: one not drawn)."""
    ref = next((b for b in bars if b.label == reference), None)
    if ref is not None:
        ref.reference = True
    base = reference_value if reference_value is not None else ref.median if ref else None
    if not base:
        return
    for b in bars:
        if b.median is not None:
            b.note = "reference" if b is ref else f"{_times(b.median / base)} {short}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def volume(bars: list[Bar]) -> str:
    """What each run moved: ``4,000,000 rows``, or the most common count with the exceptions named."""
    counts = [b.rows for b in bars if b.rows]
    if not counts:
        return ""
    common = max(set(counts), key=lambda n: (counts.count(n), n))  # a tie: the larger (fewer rows: the slow one)
    others = [f"{b.label}: {b.rows:,}" for b in bars if b.rows and b.rows != common]
    return f"{common:,} rows a run" + (f" ({'; '.join(others)})" if others else "")


def _target(result: BenchResult, prefix: str) -> Target | None:
    return next((t for t in result.targets if t.label.startswith(prefix)), None)


def _e2e(result: BenchResult) -> list[Chart]:
    out = []
    for dest in dict.fromkeys(r["destination"] for r in result.rows):
        rows = [r for r in result.rows if r["destination"] == dest]
        bars = [bar(_plural(r["workers"], "worker"), r) for r in rows]
        relative_to(bars, "1 worker", "1 worker")
        title = f"synthetic -> {dest} through bizon-fast run, by workers"
        out.append(Chart(f"e2e-{dest}", result.name, title, "rows/s", bars, volume(bars)))
    return out


def _showcase(result: BenchResult) -> list[Chart]:
    noop = [r for r in result.rows if r["case"].startswith("noop")]
    by = {r["case"]: r for r in result.rows}
    out = []
    a, b, c = _target(result, "(a)"), _target(result, "(b)"), _target(result, "(c)")
    if noop:
        bars = [bar(f"{r['rows']:,.0f} rows", r) for r in noop]
        title = "(a) synthetic -> noop, 2 workers: rows/s by run length"
        goal, label = (a.goal, f"target: {human(a.goal)} rows/s") if a else (None, "")
        out.append(Chart("showcase-noop", result.name, title, "rows/s", bars, "", goal=goal, goal_label=label))
        rss = [bar(f"{r['rows']:,.0f} rows", r, "peak_rss_mb") for r in noop]
        relative_to(rss, rss[0].label, "the smallest")
        goal = c.goal * rss[0].median if c and rss[0].median else None
        title = "(c) peak RSS of the process tree, synthetic -> noop, by rows"
        label = f"target: {c.goal:g}x the smallest" if c else ""
        out.append(
            Chart(
                "showcase-memory",
                result.name,
                title,
                "peak RSS, MB (summed over the tree)",
                rss,
                "",
                goal=goal,
                goal_label=label,
                style="int",
            )
        )
    if "parquet engine" in by and "parquet single process" in by:
        bars = [
            bar("bizon-fast, 2 workers", by["parquet engine"]),
            bar("one process (pyarrow.parquet)", by["parquet single process"]),
        ]
        relative_to(bars, bars[1].label, "one process")
        goal = b.goal * bars[1].median if b and bars[1].median else None
        label = f"target: {b.goal:g}x one process" if b else ""
        title = "(b) synthetic -> Parquet: 2 workers vs one process"
        out.append(
            Chart("showcase-parquet", result.name, title, "rows/s", bars, volume(bars), goal=goal, goal_label=label)
        )
    return out


def _alternatives(result: BenchResult) -> list[Chart]:
    out = []
    titles = {
        "json": ("Records -> NDJSON: bizon vs bizon-fast", BIZON, "bizon"),
        "parquet": ("synthetic -> Parquet: dlt, bizon-fast, a one-process pyarrow loop", DLT, "dlt"),
    }
    for workload in dict.fromkeys(r["workload"] for r in result.rows):
        rows = [r for r in result.rows if r["workload"] == workload]
        title, reference, short = titles.get(workload, (workload, "", ""))
        bars = [bar(r["contender"], r) for r in rows]
        relative_to(bars, reference, short)
        ref = next((b for b in bars if b.reference), None)
        target = _target(result, "bizon-fast json" if workload == "json" else "bizon-fast parquet")
        if target and ref and ref.median:
            goal = target.goal * ref.median
            if goal <= 3 * max((b.high or 0) for b in bars):  # a goal far off the bars would squash them
                out_goal: float | None = goal
            else:
                out_goal, title = None, f"{title} (target {target.goal:g}x {short}, off this axis)"
        else:
            out_goal = None
        label = f"target: {target.goal:g}x {short}" if target else ""
        out.append(
            Chart(
                f"alternatives-{workload}",
                result.name,
                title,
                "rows/s",
                bars,
                volume(bars),
                goal=out_goal,
                goal_label=label,
            )
        )
    return out


def _files(result: BenchResult) -> list[Chart]:
    references = {"parquet->parquet": PA_WRITE, "parquet->noop": PA_SCAN, "csv->parquet": POLARS}
    out = []
    for workload in dict.fromkeys(r["workload"] for r in result.rows):
        rows = [r for r in result.rows if r["workload"] == workload]
        bars = [bar(r["contender"], r) for r in rows]
        reference = references.get(workload, "")
        relative_to(bars, reference, reference.split()[0] if reference else "")
        source, dest = workload.split("->")
        title = f"Files: a folder of {source} files -> {dest}"
        out.append(Chart(f"files-{source}-{dest}", result.name, title, "rows/s", bars, volume(bars)))
    return out


def _checkpoint(result: BenchResult) -> list[Chart]:
    bars = [bar(f"{r['backend']}, every {r['every']} batch{'es' if r['every'] > 1 else ''}", r) for r in result.rows]
    for backend in dict.fromkeys(r["backend"] for r in result.rows):
        group = [b for b in bars if b.label.startswith(f"{backend},")]
        relative_to(group, group[-1].label, "every 100")
        group[-1].reference = False  # per backend: no single grey reference
    title = "Checkpoint: cursor commits every 1 / 10 / 100 batches (synthetic -> noop)"
    return [Chart("checkpoint", result.name, title, "rows/s", bars, volume(bars))]


def _pg(result: BenchResult) -> list[Chart]:
    bars = [bar(r["contender"], r) for r in result.rows]
    relative_to(bars, "psql pipe", "psql")
    target = _target(result, "bizon-fast 2 workers")
    ref = next((b for b in bars if b.reference), None)
    goal = target.goal * ref.median if target and ref and ref.median else None
    label = f"target: {target.goal:g}x psql" if target else ""
    title = "Postgres -> Postgres: bizon-fast vs a psql COPY pipe"
    return [Chart("pg", result.name, title, "rows/s", bars, volume(bars), goal=goal, goal_label=label)]


def _merge(result: BenchResult) -> list[Chart]:
    bars = [bar(r["contender"], r, "wall_s") for r in result.rows]
    relative_to(bars, next((b.label for b in bars if b.label.startswith("full refresh")), ""), "full refresh")
    changed = next((r.get("changed_rows") for r in result.rows if r.get("changed_rows")), None)
    title = "Postgres merge of 1% changed rows vs a full refresh of the table (wall time, lower is better)"
    size = next((b.rows for b in bars if b.rows), None)
    parts = (f"{size:,}-row table" if size else "", f"{changed:,.0f} rows changed a round" if changed else "")
    what = ", ".join(p for p in parts if p)
    return [Chart("merge", result.name, title, "seconds a run", bars, what, style="seconds")]


def _kafka(result: BenchResult) -> list[Chart]:
    bars = [bar(r["contender"], r) for r in result.rows]
    relative_to(bars, "shm ring", "ring")
    title = "synthetic -> Parquet through Kafka vs through the shm ring"
    return [Chart("kafka", result.name, title, "rows/s", bars, volume(bars))]


def _bigquery(result: BenchResult) -> list[Chart]:
    bars = [bar(r["destination"], r) for r in result.rows]
    title = "synthetic -> BigQuery (emulator), by destination"
    return [Chart("bigquery", result.name, title, "rows/s", bars, volume(bars))]


def _transforms(result: BenchResult) -> list[Chart]:
    python = "python (source records)"
    base = next((r.get("rows_per_s") for r in result.rows if r["transform"] == python), None)
    out = []
    for layout, stem, title in (
        ("source records", "records", "Transforms on bizon source records (JSON text), one core"),
        ("typed columns", "typed", "Vectorized transforms on typed columns, one core"),
    ):
        rows = [
            r
            for r in result.rows
            if layout in r["transform"] or (layout == "source records" and "bizon" in r["transform"])
        ]
        if not rows:
            continue
        bars = [bar(r["transform"], r) for r in rows]
        relative_to(bars, python, "python", reference_value=base)
        out.append(Chart(f"transforms-{stem}", result.name, title, "rows/s", bars, volume(bars)))
    return out


def _recovery(result: BenchResult) -> list[Chart]:
    r = result.rows[0]
    keys = [
        ("replacement up (median)", "replacement_up_median_s"),
        ("working again (median)", "recovery_median_s"),
        ("working again (slowest)", "recovery_max_s"),
        ("producer working again (median)", "producer_recovery_median_s"),
    ]
    bars = [Bar(label, r.get(key), r.get(key), r.get(key), 1) for label, key in keys]
    title = (
        f"Crash recovery: {r['kills']} SIGKILLs of random workers, "
        f"{r['rows_lost']} rows lost, {r['duplicates']} duplicated"
    )
    return [
        Chart(
            "recovery",
            result.name,
            title,
            "seconds after the worker died",
            bars,
            f"{r['rows']:,} rows",
            style="seconds",
        )
    ]


def _size_label(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def _transport(result: BenchResult) -> list[Chart]:
    bars = []
    for r in sorted(result.rows, key=lambda r: r["batch_bytes"]):
        b = bar(_size_label(r["batch_bytes"]), r, "gbps")
        b.series = r["transport"]
        bars.append(b)
    moved = {r.get("bytes_moved") for r in result.rows if r.get("bytes_moved")}
    what = f"{max(moved) / 2**20:,.0f} MiB a point" if moved else ""
    title = "Transport: Arrow batches producer -> consumer, by batch size"
    return [Chart("transport", result.name, title, "GB/s (payload, wall clock)", bars, what, kind="lines")]


def _pgread(result: BenchResult) -> list[Chart]:
    charts = []
    refs = {"postgres->parquet": "ADBC + pyarrow", "postgres->noop": "psql"}
    for workload, short in refs.items():
        rows = [r for r in result.rows if r.get("workload") == workload and r.get("rows_per_s")]
        if not rows:
            continue
        key = "rows_per_s" if workload.endswith("parquet") else "wall_s"
        bars = [bar(r["contender"], r, key) for r in rows]
        reference = next((b.label for b in bars if b.label.lower().startswith(short.lower())), "")
        relative_to(bars, reference, short)
        if key == "rows_per_s":
            title = "Postgres -> Parquet: bizon-fast vs one process of ADBC + pyarrow, ConnectorX"
            charts.append(Chart("pgread-parquet", result.name, title, "rows/s", bars, volume(bars)))
        else:
            title = "Postgres -> noop: bizon-fast vs psql \\copy binary to /dev/null (wall time, lower is better)"
            charts.append(
                Chart("pgread-noop", result.name, title, "seconds a run", bars, volume(bars), style="seconds")
            )
    return charts


def _kafka_source(result: BenchResult) -> list[Chart]:
    rows = [r for r in result.rows if r.get("rows_per_s")]
    bars = [bar(r["contender"], r) for r in rows]
    relative_to(bars, next((b.label for b in bars if b.label.startswith("one-process script")), ""), "script")
    title = "Kafka (JSON messages) -> Parquet: bizon-fast vs a one-process confluent-kafka + pyarrow script"
    return [Chart("kafka-source", result.name, title, "rows/s", bars, volume(bars))] if bars else []


def _bizon_records(result: BenchResult) -> list[Chart]:
    charts = []
    big = [r for r in result.rows if "300k" not in r["contender"] and r.get("wall_s")]
    if big:
        # the target's own terms: the loop alone (its time inside the process, not the process: that also runs
        # the producer-path measurement) against bizon-fast's whole run and its run after start-up
        bars = []
        for r in big:
            if "loop" in r["contender"]:
                bars.append(Bar(label="source get() loop alone", median=r.get("loop_s"), rounds=1))
                continue
            bars.append(bar(f"{r['contender']}, whole run", r, "wall_s"))
            if r.get("startup_s") is not None:
                after = r["wall_s"] - r["startup_s"]
                bars.append(Bar(label=f"{r['contender']}, after start-up", median=after, rounds=1))
        relative_to(bars, "source get() loop alone", "loop")
        title = "A bizon custom source -> file json vs the source's own get() loop (wall time, lower is better)"
        charts.append(
            Chart("bizon-records-time", result.name, title, "seconds a run", bars, volume(bars), style="seconds")
        )
    small = [r for r in result.rows if "300k" in r["contender"] and r.get("peak_pss_mb")]
    if small:
        bars = [bar(r["contender"], r, "peak_pss_mb") for r in small]
        relative_to(bars, next((b.label for b in bars if b.label.startswith("bizon 0.6.4")), ""), "bizon")
        title = "300k records with the defaults: peak PSS of the process tree (lower is better)"
        charts.append(Chart("bizon-records-memory", result.name, title, "MB", bars, volume(bars), style="int"))
    return charts


SHAPERS: dict[str, Callable[[BenchResult], list[Chart]]] = {
    "transport": _transport,
    "e2e": _e2e,
    "showcase": _showcase,
    "alternatives": _alternatives,
    "files": _files,
    "checkpoint": _checkpoint,
    "pg": _pg,
    "merge": _merge,
    "bigquery": _bigquery,
    "kafka": _kafka,
    "transforms": _transforms,
    "recovery": _recovery,
    "pgread": _pgread,
    "kafka_source": _kafka_source,
    "bizon_records": _bizon_records,
}


def charts(result: BenchResult) -> list[Chart]:
    """The charts of one benchmark's result: one per workload it ran; none without rows or a shaper."""
    shaper = SHAPERS.get(result.name)
    if shaper is None or not result.rows or result.error:
        return []
    return [c for c in shaper(result) if c.bars]


def subtitle(chart: Chart, meta: dict[str, Any]) -> str:
    """Machine, date, mode and commit; then rows and rounds: what a reader needs to tell one run from another."""
    m = meta.get("machine", {})
    mode = "quick run (scaled down)" if meta.get("quick") else "full run"
    git = m.get("git") or "n/a"
    cpu = f"{m.get('cpu_model', 'unknown CPU')}, {m.get('logical_cores', '?')} cores"
    first = f"{cpu} · {m.get('date', '')} · {mode} · git {git}"
    n = chart.rounds
    what = "points" if chart.kind == "lines" else "bars"
    spread = f"{what}: median of {n} rounds, whiskers: slowest-fastest round" if n > 1 else "one round: no spread"
    second = " · ".join(p for p in (chart.volume, spread) if p)
    return f"{first}\n{second}"


# --- drawing ----------------------------------------------------------------------------------------------


def human(value: float) -> str:
    """3 significant figures with k / M / G: what a reader takes in at a glance (the tables have every digit)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def value_text(value: float, style: str) -> str:
    """A bar's value as printed beside it: ``human`` rates, whole MB, seconds to the hundredth."""
    if style == "int":
        return f"{value:,.0f}"
    if style == "seconds":
        return f"{value:.2f} s"
    return human(value)


def _whiskers(bars: list[Bar]) -> list[list[float]]:
    return [
        [max(0.0, b.median - (b.low if b.low is not None else b.median)) for b in bars],
        [max(0.0, (b.high if b.high is not None else b.median) - b.median) for b in bars],
    ]


def _draw_bars(chart: Chart, meta: dict[str, Any], plt: Any) -> Any:
    bars = chart.bars
    fig, ax = plt.subplots(figsize=(9, 2.1 + 0.55 * len(bars)), layout="constrained")
    labels = [textwrap.fill(b.label, 34) for b in bars]
    values = [b.median or 0.0 for b in bars]
    colors = [REFERENCE_COLOR if b.reference else BAR_COLOR for b in bars]
    ys = list(range(len(bars)))
    ax.barh(ys, values, color=colors, height=0.6)
    drawn = [i for i, b in enumerate(bars) if b.median is not None and b.rounds > 1]
    if drawn:
        err = _whiskers([bars[i] for i in drawn])
        ax.errorbar([values[i] for i in drawn], drawn, xerr=err, fmt="none", ecolor="black", capsize=4, lw=1.2)
    top = max([(b.high or b.median or 0.0) for b in bars] + [chart.goal or 0.0]) or 1.0
    for i, b in enumerate(bars):
        end = max(b.high or 0.0, b.median or 0.0)
        text = "no result (failed or not measured)" if b.median is None else value_text(b.median, chart.style)
        if b.note:
            text += f"  ({b.note})"
        ax.text(end + top * 0.01, i, " " + text, va="center", fontsize=9)
    if chart.goal:
        ax.axvline(chart.goal, color="tab:red", linestyle="--", lw=1.2)
        ax.text(chart.goal, len(bars) - 0.45, f" {chart.goal_label}", color="tab:red", fontsize=8, va="bottom")
    ax.set_yticks(ys, labels, fontsize=9)
    ax.set_ylim(len(bars) - 0.4, -0.6)
    ax.set_xlim(0, top * 1.38)
    if chart.style == "human":
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: human(v) if v else "0"))
    ax.set_xlabel(chart.unit)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    _titles(fig, ax, chart, meta)
    return fig


def _draw_lines(chart: Chart, meta: dict[str, Any], plt: Any) -> Any:
    fig, ax = plt.subplots(figsize=(9, 5.4), layout="constrained")
    xs = list(dict.fromkeys(b.label for b in chart.bars))
    for series in dict.fromkeys(b.series for b in chart.bars):
        points = [b for b in chart.bars if b.series == series and b.median is not None]
        x = [xs.index(b.label) for b in points]
        ax.errorbar(x, [b.median for b in points], yerr=_whiskers(points), marker="o", capsize=4, label=series)
    ax.set_xticks(range(len(xs)), xs)
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_ylim(bottom=0)
    ax.set(xlabel="batch size", ylabel=chart.unit)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    _titles(fig, ax, chart, meta)
    return fig


def _titles(fig: Any, ax: Any, chart: Chart, meta: dict[str, Any]) -> None:
    """Title and subtitle across the whole width, above the area the axes are laid out in.

    Not the axes' own title: that starts where the axes do, right of long contender labels, and a
    subtitle naming the machine and commit would run off the picture.
    """
    height = fig.get_figheight()
    fig.get_layout_engine().set(rect=(0.01, 0, 0.98, 1 - HEADER_INCHES / height))
    fig.text(0.01, 1 - 0.1 / height, chart.title, ha="left", va="top", fontsize=12, fontweight="bold")
    fig.text(0.01, 1 - 0.42 / height, subtitle(chart, meta), ha="left", va="top", fontsize=8, color="dimgray")


def draw(chart: Chart, meta: dict[str, Any], path: Path) -> None:
    """Write ``chart`` to ``path`` (PNG). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = (_draw_lines if chart.kind == "lines" else _draw_bars)(chart, meta, plt)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def render(results: list[BenchResult], out: Path, meta: dict[str, Any]) -> str | None:
    """Draw every result's charts into ``out/<chart>.png`` and list them in ``result.plots``.

    Returns a note when plots were skipped (no matplotlib) or some failed; a plot never costs the numbers.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "plots skipped: matplotlib is not installed (pip install -e '.[bench]')"
    failed = []
    for result in results:
        try:
            shaped = charts(result)
        except Exception as exc:  # a result of an unexpected shape: say so, keep the others
            failed.append(f"{result.name} ({type(exc).__name__}: {exc})")
            continue
        for chart in shaped:
            path = out / f"{chart.name}.png"
            try:
                draw(chart, meta, path)
            except Exception as exc:
                failed.append(f"{chart.name} ({type(exc).__name__}: {exc})")
                continue
            if path.name not in result.plots:
                result.plots.append(path.name)
    return f"plots failed: {', '.join(failed)}" if failed else None


def publish(results: list[BenchResult], out: Path, docs: Path) -> list[str]:
    """Copy the run's charts from ``out`` to ``docs`` (``docs/bench``); return the names copied.

    A benchmark that ran replaces all of its pictures there (a workload it no longer has leaves no stale
    one); the pictures of benchmarks that did not run (``--only``) stay. The suite calls this only for
    ``--update-readme``, and refuses ``--quick`` there unless ``--docs-root`` points at a copy, so quick
    pictures never replace the committed ones.
    """
    docs.mkdir(parents=True, exist_ok=True)
    copied = []
    for result in results:
        if not result.plots:
            continue
        for stale in [*docs.glob(f"{result.name}.png"), *docs.glob(f"{result.name}-*.png")]:
            stale.unlink()
        for name in result.plots:
            shutil.copyfile(out / name, docs / name)
            copied.append(name)
    return copied


def _load(path: Path) -> tuple[dict[str, Any], list[BenchResult]]:
    data = json.loads(path.read_text())
    results = []
    for name, bench in data.pop("benchmarks").items():
        targets = [Target(**{k: v for k, v in t.items() if k != "met"}) for t in bench.pop("targets", [])]
        results.append(BenchResult(**{**bench, "name": name, "targets": targets, "plots": []}))
    return data, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m native_bench.plots", description="Redraw a run's charts.")
    parser.add_argument("results", type=Path, help="a run's results.json")
    parser.add_argument("--out", type=Path, help="where to write the PNGs (default: next to results.json)")
    args = parser.parse_args(argv)
    meta, results = _load(args.results)
    out = args.out or args.results.parent
    out.mkdir(parents=True, exist_ok=True)
    note = render(results, out, meta)
    for r in results:
        for name in r.plots:
            print(out / name)
    if note:
        print(note)
    return 1 if note else 0


if __name__ == "__main__":
    raise SystemExit(main())
