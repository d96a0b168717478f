"""The benchmark suite runs end to end and produces numbers (a smoke test: no figure is asserted).

Why only a cheap subset: the whole ``--quick`` suite takes about two minutes and is run separately;
this checks the plumbing every benchmark shares (CLI runs in fresh folders, process-tree measurement,
interleaved rounds, results.json / results.md / performance.md, plots) on two benchmarks that need no
network: the transport benchmark and the checkpoint benchmark (which drives ``bizon-fast run``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SUBSET = ["transport", "checkpoint"]


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)] if math.isfinite(value) else []
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_subset_writes_numbers_for_every_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "native_bench", "--quick", "--only", ",".join(SUBSET), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True
    assert results["benchmarks_run"] == SUBSET
    assert set(results["benchmarks"]) == set(SUBSET)
    machine = results["machine"]
    assert machine["cpu_model"] and machine["logical_cores"] >= 1 and machine["ram_gb"] > 0
    assert machine["versions"]["pyarrow"]
    for name, bench in results["benchmarks"].items():
        assert bench["error"] is None, f"{name}: {bench['error']}"
        assert bench["rows"], f"{name}: no rows"
        measured = [v for v in bench["metrics"].values() if v is not None]
        assert measured and all(math.isfinite(v) for v in measured), f"{name}: metrics {bench['metrics']}"
        assert _numbers(bench["rows"]), f"{name}: rows hold no numbers"
        for target in bench["targets"]:
            assert target["value"] is not None, f"{name}: target {target['label']} not measured"

    checkpoint = {(r["backend"], r["every"]): r for r in results["benchmarks"]["checkpoint"]["rows"]}
    for every in (1, 10, 100):
        row = checkpoint[("sqlite", every)]
        assert row["rows_per_s"] > 0 and row["cpu_s"] > 0 and row["peak_rss_mb"] > 0

    report = (out / "results.md").read_text()
    assert "## Machine" in report and "## Targets" in report
    assert (out / "performance.md").read_text().startswith("## Performance")
    plots = sorted(p.name for p in out.glob("*.png"))
    if results.get("plots_note"):
        assert "matplotlib" in results["plots_note"]
    else:
        assert plots == sorted(f"{name}.png" for name in SUBSET)


# --- the charts (issue 15): one per workload, linear, medians with min-max whiskers, a subtitle that dates them ---

MACHINE = {
    "cpu_model": "AMD EPYC 7B13",
    "logical_cores": 2,
    "date": "2026-12-05 09:31:10 UTC",
    "git": "2bcc889",
    "ram_gb": 25.3,
    "python": "3.11.7",
    "versions": {"pyarrow": "26.0.1"},
    "load_average_start": [0.1, 0.2, 0.3],
}


def _run(wall: float, rows: int, rss_mb: float = 100.0, ok: bool = True):  # noqa: ANN202 - a RunStats
    from native_bench.proctree import RunStats

    return RunStats(
        cmd=["x"],
        wall_s=wall,
        cpu_s=wall * 1.5,
        peak_rss=int(rss_mb * 1e6),
        peak_pss=None,
        peak_procs=3,
        returncode=0 if ok else 1,
        rows_written=rows,
    )


def _alternatives_result():  # noqa: ANN202 - a BenchResult
    from native_bench.benchmarks.alternatives import BF_JSON, BF_PARQUET, BIZON, DLT, LOOP
    from native_bench.result import BenchResult, Target
    from native_bench.rounds import summarize

    walls = {BIZON: (4.0, 5.0, 6.0), BF_JSON: (3.0, 3.5, 4.5), DLT: (2.5, 2.7, 3.0), BF_PARQUET: (2.0, 2.2, 2.1)}
    walls[LOOP] = (1.2, 1.3, 1.25)
    rows = {BIZON: 200_000, BF_JSON: 2_000_000, DLT: 4_000_000, BF_PARQUET: 4_000_000, LOOP: 4_000_000}
    workload = {BIZON: "json", BF_JSON: "json", DLT: "parquet", BF_PARQUET: "parquet", LOOP: "parquet"}
    result_rows = [
        {"contender": c, "workload": workload[c], **summarize([_run(w, rows[c]) for w in walls[c]], rows[c])}
        for c in walls
    ]
    targets = [
        Target("bizon-fast json rows/s / bizon (same custom source)", 8.6, 100.0),
        Target("bizon-fast parquet rows/s / dlt", 1.26, 1.0),
    ]
    return BenchResult("alternatives", "Against the alternatives", "", rows=result_rows, targets=targets)


def test_charts_split_the_workloads_and_whisker_the_rounds() -> None:
    """alternatives.png mixed JSON and Parquet: now one chart each, bars are medians, whiskers the min-max round."""
    from native_bench import plots
    from native_bench.benchmarks.alternatives import BF_JSON, BF_PARQUET, BIZON, DLT, LOOP

    charts = {c.name: c for c in plots.charts(_alternatives_result())}
    assert sorted(charts) == ["alternatives-json", "alternatives-parquet"]
    json_chart = charts["alternatives-json"]
    assert [b.label for b in json_chart.bars] == [BIZON, BF_JSON]  # no Parquet contender in the JSON chart
    assert [b.label for b in charts["alternatives-parquet"].bars] == [DLT, BF_PARQUET, LOOP]
    bizon, fast = json_chart.bars
    assert (bizon.low, bizon.median, bizon.high) == pytest.approx((200_000 / 6.0, 200_000 / 5.0, 200_000 / 4.0))
    assert (fast.low, fast.high, fast.rounds) == pytest.approx((2_000_000 / 4.5, 2_000_000 / 3.0, 3))
    assert bizon.reference and not fast.reference
    assert fast.note == f"{(2_000_000 / 3.5) / (200_000 / 5.0):.1f}x bizon"
    # the 100x target would sit far off the bars on a linear axis: named in the title, not drawn
    assert json_chart.goal is None and "target 100x bizon" in json_chart.title
    assert charts["alternatives-parquet"].goal == pytest.approx(4_000_000 / 2.7)  # 1.0x dlt's median


def test_charts_from_walls_and_one_per_destination() -> None:
    """pg and kafka keep each round's wall time (``walls_s``), e2e one chart per destination, failed runs shown."""
    from native_bench import plots
    from native_bench.result import BenchResult, Target
    from native_bench.rounds import summarize

    pg = BenchResult(
        "pg",
        "pg",
        "",
        rows=[
            {"contender": "psql pipe", "rows": 1000, "rows_per_s": 100.0, "walls_s": [10.0, 9.0, 11.0]},
            {"contender": "bizon-fast -w 2", "rows": 1000, "rows_per_s": 80.0, "walls_s": [12.5, 12.0, 14.0]},
        ],
        targets=[Target("bizon-fast 2 workers / psql pipe", 0.8, 0.8)],
    )
    (chart,) = plots.charts(pg)
    psql, fast = chart.bars
    assert (psql.low, psql.high) == pytest.approx((1000 / 11.0, 1000 / 9.0))
    assert (fast.low, fast.high) == pytest.approx((1000 / 14.0, 1000 / 12.0))
    assert chart.goal == pytest.approx(80.0) and fast.note == "0.80x psql"

    rows = []
    for dest in ("noop", "parquet"):
        for workers in (1, 2):
            runs = [_run(2.0, 1000), _run(2.0, 1000, ok=workers == 1)]  # a failed round drops out of the whisker
            rows.append({"destination": dest, "workers": workers, **summarize(runs, 1000)})
    rows.append({"destination": "json", "workers": 1, **summarize([_run(1.0, 10, ok=False)], 10)})
    charts = plots.charts(BenchResult("e2e", "e2e", "", rows=rows))
    assert [c.name for c in charts] == ["e2e-noop", "e2e-parquet", "e2e-json"]
    assert [b.rounds for b in charts[0].bars] == [2, 1]
    (failed,) = charts[2].bars
    assert failed.median is None  # drawn as "no result", not dropped


def test_chart_subtitle_names_machine_date_mode_commit_rows_and_rounds() -> None:
    from native_bench import plots

    charts = {c.name: c for c in plots.charts(_alternatives_result())}
    full = plots.subtitle(charts["alternatives-json"], {"quick": False, "machine": MACHINE})
    for part in ("AMD EPYC 7B13, 2 cores", "2026-12-05 09:31:10 UTC", "full run", "git 2bcc889"):
        assert part in full
    assert "2,000,000 rows a run" in full and "bizon 0.6.4 (custom source): 200,000" in full
    assert "median of 3 rounds" in full
    quick = plots.subtitle(charts["alternatives-parquet"], {"quick": True, "machine": MACHINE})
    assert "quick run" in quick and "4,000,000 rows a run" in quick and "(" not in quick.split("\n")[1]


def test_publish_and_update_documents_link_the_charts(tmp_path: Path) -> None:
    """--update-readme: the run's PNGs go to docs/bench (stale ones of that benchmark go), the documents link them."""
    from native_bench import plots, report

    result = _alternatives_result()
    out, root = tmp_path / "out", tmp_path / "repo"
    out.mkdir()
    note = plots.render([result], out, {"quick": False, "machine": MACHINE})
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert note and "matplotlib" in note and not result.plots
        return
    assert note is None
    assert result.plots == ["alternatives-json.png", "alternatives-parquet.png"]
    assert all((out / name).read_bytes().startswith(b"\x89PNG") for name in result.plots)

    docs = root / plots.DOCS_DIR
    docs.mkdir(parents=True)
    (docs / "alternatives.png").write_bytes(b"stale")  # the old mixed chart
    (docs / "pg.png").write_bytes(b"kept")  # a benchmark this run did not run (--only)
    assert plots.publish([result], out, docs) == result.plots
    assert sorted(p.name for p in docs.iterdir()) == ["alternatives-json.png", "alternatives-parquet.png", "pg.png"]

    (root / "native_bench").mkdir()
    (root / "docs" / "bizon-compat.md").write_text("no markers\n")
    (root / "README.md").write_text(
        "# x\n<!-- native_bench:begin performance -->old<!-- native_bench:end performance -->\n"
    )
    meta = {"quick": False, "machine": MACHINE, "command": "python -m native_bench", "seconds": 1.0}
    section = report.readme_section(meta, [result], {"alternatives": "d"}, "../docs/bench/")
    report.update_documents(meta, [result], section, root)
    readme = (root / "README.md").read_text()
    assert "![alternatives-json](docs/bench/alternatives-json.png)" in readme
    assert "![alternatives-parquet](docs/bench/alternatives-parquet.png)" in readme
    bench_readme = (root / "native_bench" / "README.md").read_text()
    assert "![alternatives-json](../docs/bench/alternatives-json.png)" in bench_readme


def test_quick_update_readme_without_a_copy_is_refused(tmp_path: Path) -> None:
    """Quick numbers and quick pictures never land in the committed documents or docs/bench."""
    proc = subprocess.run(
        [sys.executable, "-m", "native_bench", "--quick", "--update-readme", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--docs-root" in proc.stderr
    assert not list(tmp_path.glob("*.png"))


# --- merge (issue 16): 1% changed rows merged vs a full refresh of the table ---


@pytest.mark.service
@pytest.mark.timeout(120)
def test_quick_merge_benchmark_verifies_and_reports_the_ratio(tmp_path: Path) -> None:
    """``--quick --only merge``: both contenders ran, their tables were read back (no failure), the ratio measured."""
    from native_bench.benchmarks.merge import FULL, MERGE

    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "native_bench", "--quick", "--only", "merge", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bench = json.loads((out / "results.json").read_text())["benchmarks"]["merge"]
    assert bench["error"] is None and bench["skipped"] is None, bench["error"] or bench["skipped"]
    by_contender = {r["contender"]: r for r in bench["rows"]}
    assert len(by_contender) == 2
    for row in by_contender.values():
        assert row["failed_runs"] == 0 and row["rows"] == 200_000 and row["wall_s"] > 0
        assert row["changed_rows"] == 2_000
    assert by_contender[MERGE]["rows_read"] == 2_000  # the merge read only the changed rows
    assert by_contender[FULL]["rows_read"] == 200_000
    (target,) = bench["targets"]
    assert target["value"] == pytest.approx(bench["metrics"]["full_refresh_wall_s"] / bench["metrics"]["merge_wall_s"])
    assert "RUN FAILED VERIFICATION" not in proc.stdout


def test_merge_chart_is_seconds_with_whiskers_against_the_full_refresh() -> None:
    from native_bench import plots
    from native_bench.benchmarks.merge import FULL, MERGE
    from native_bench.result import BenchResult
    from native_bench.rounds import summarize

    rows = [
        {"contender": MERGE, "changed_rows": 100_000, **summarize([_run(w, 10_000_000) for w in (4.0, 5.0, 6.0)], 1)},
        {"contender": FULL, "changed_rows": 100_000, **summarize([_run(w, 10_000_000) for w in (40, 50, 45)], 1)},
    ]
    (chart,) = plots.charts(BenchResult("merge", "merge", "", rows=rows))
    merge, full = chart.bars
    assert chart.style == "seconds" and chart.kind == "bars"
    assert (merge.low, merge.median, merge.high, merge.rounds) == pytest.approx((4.0, 5.0, 6.0, 3))
    assert full.reference and not merge.reference and merge.note == "0.11x full refresh"
    assert chart.volume == "10,000,000-row table, 100,000 rows changed a round"
