"""Pipelines end to end through the CLI, with the output's row count and ids checked."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from native_bench.services import start_run
from tests.conftest import REPO
from tests.faults import check_json_ids, check_parquet_ids


def _write(tmp_path: Path, text: str) -> str:
    (tmp_path / "p.yml").write_text(text)
    return "p.yml"


def test_quickstart_config_runs(tmp_path: Path, cli) -> None:
    config = (REPO / "configs" / "quickstart.yml").read_text()
    (tmp_path / "quickstart.yml").write_text(config)
    res = cli("run", "quickstart.yml")
    assert res.returncode == 0, res.stderr
    assert "Pipeline finished successfully." in res.stdout
    assert "rows written" in res.stdout  # the summary table
    check_parquet_ids(tmp_path / "out" / "quickstart_events", 2_000_000)
    assert (tmp_path / "bizon.sqlite3").exists(), "the default backend is a sqlite file"


@pytest.mark.parametrize("queue", ["shm", "python_queue"])
def test_synthetic_to_parquet(tmp_path: Path, cli, queue: str) -> None:
    _write(
        tmp_path,
        f"""
name: pq
source: {{name: synthetic, stream: events, rows: 1000000, splits: 7, batch_rows: 30000}}
destination: {{name: file, config: {{destination_id: out/events, format: parquet, buffer_size: 4}}}}
engine: {{queue: {{type: {queue}}}, runner: {{config: {{max_workers: 2}}}}}}
""",
    )
    res = cli("run", "p.yml", "--quiet")
    assert res.returncode == 0, res.stderr
    check_parquet_ids(tmp_path / "out" / "events", 1_000_000)


def test_synthetic_to_json_with_bizon_envelope(tmp_path: Path, cli) -> None:
    _write(
        tmp_path,
        """
name: js
source: {name: synthetic, stream: events, rows: 200000, splits: 3}
destination: {name: file, config: {destination_id: out/events, format: json}}
engine: {backend: {type: sqlite_in_memory}}
""",
    )
    res = cli("run", "p.yml", "--quiet", "--workers", "2")
    assert res.returncode == 0, res.stderr
    path = tmp_path / "out" / "events.json"
    check_json_ids(path, 200_000)
    first = json.loads(path.open().readline())
    assert set(first) == {
        "bizon_id",
        "bizon_extracted_at",
        "bizon_loaded_at",
        "source_record_id",
        "source_timestamp",
        "source_data",
    }
    assert json.loads(first["source_data"])["id"] == int(first["source_record_id"])


def test_noop_counts_everything(tmp_path: Path, cli) -> None:
    _write(
        tmp_path,
        """
name: noop
source: {name: synthetic, stream: events, rows: 3000000, splits: 5}
destination: {name: noop, config: {buffer_size: 0}}
""",
    )
    res = cli("run", "p.yml", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "3,000,000" in res.stdout


def test_dummy_to_file_matches_bizon(tmp_path: Path, cli) -> None:
    (tmp_path / "d.yml").write_text((REPO / "configs" / "dummy_to_file.yml").read_text())
    res = cli("run", "d.yml", "--quiet")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in (tmp_path / "out" / "creatures.json").read_text().splitlines()]
    assert {x["source_record_id"] for x in lines} == {"9898", "88787", "98", "3333", "56565"}
    bizon = next(x for x in lines if x["source_record_id"] == "9898")
    assert json.loads(bizon["source_data"])["name"] == "bizon"


def test_rerun_of_a_finished_job_starts_a_new_job(tmp_path: Path, cli) -> None:
    _write(
        tmp_path,
        """
name: twice
source: {name: synthetic, stream: events, rows: 100000, splits: 2}
destination: {name: file, config: {destination_id: out/events, format: parquet}}
""",
    )
    for _ in range(2):
        res = cli("run", "p.yml", "--quiet", "-w", "1")
        assert res.returncode == 0, res.stderr
    check_parquet_ids(tmp_path / "out" / "events", 100_000)  # replaced, not appended
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM bizon_fast_jobs")]
    assert statuses == ["succeeded", "succeeded"]


def test_buffer_flush_timeout_is_a_real_timer(tmp_path: Path) -> None:
    fixture = REPO / "tests" / "fixtures" / "slow_source.py"
    _write(
        tmp_path,
        f"""
name: trickle
source: {{name: slow, stream: trickle, source_file_path: {fixture}, batches: 3, pause_s: 3}}
destination: {{name: file, config: {{destination_id: out/t, format: parquet, buffer_size: 50,
               buffer_flush_timeout: 1}}}}
engine: {{runner: {{config: {{max_workers: 1}}}}}}
""",
    )
    proc = start_run(tmp_path, "p.yml")
    staged: list[Path] = []
    deadline = time.monotonic() + 30
    # the first batch must be written about 1 s after it arrived, while the source sleeps
    while not staged and proc.poll() is None and time.monotonic() < deadline:
        staged = list(tmp_path.glob("out/.t.bizon-fast/*/part-*.parquet"))
        time.sleep(0.1)
    assert staged, "nothing was written before the source finished: the flush timer did not fire"
    assert proc.poll() is None, "the run ended before the timer could be observed"
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    check_parquet_ids(tmp_path / "out" / "t", 3)


def test_help_works(tmp_path: Path) -> None:
    res = subprocess.run(
        [str(Path(sys.executable).parent / "bizon-fast"), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert res.returncode == 0 and "run" in res.stdout
