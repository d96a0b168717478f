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
