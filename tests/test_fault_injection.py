"""Crash safety: SIGKILL workers and the supervisor during real runs; nothing committed is lost or doubled."""

from __future__ import annotations

import random
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO
from tests.faults import check_json_ids, check_parquet_ids, kill_workers_randomly, start_run, workers_of

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _slow_file(monkeypatch) -> None:
    """Writes that take a moment: the run lasts long enough for the kills on a fast machine too
    (a CI run once finished between the second and the third kill)."""
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", "slow_file=tests.fixtures.slow_file:SlowFileDestination")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


ROWS = 3_000_000


def _config(tmp_path: Path, fmt: str, rows: int = ROWS) -> str:
    (tmp_path / "pipeline.yml").write_text(
        f"""
name: faults-{fmt}
source: {{name: synthetic, stream: events, rows: {rows}, splits: 12, batch_rows: 20000}}
destination: {{name: slow_file, config: {{destination_id: out/events, format: {fmt}, buffer_size: 2,
               write_delay_s: 0.05}}}}
engine:
  queue: {{config: {{batch_size_mb: 1}}}}
  runner: {{config: {{max_workers: 2, max_restarts: 50}}}}
"""
    )
    return "pipeline.yml"


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_sigkill_random_workers_loses_and_duplicates_nothing(tmp_path: Path, fmt: str) -> None:
    rng = random.Random(f"workers-{fmt}")
    proc = start_run(tmp_path, _config(tmp_path, fmt))
    killed = kill_workers_randomly(proc, kills=5, rng=rng)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert len(killed) >= 3, f"the run ended before enough kills: {killed}"
    if fmt == "parquet":
        check_parquet_ids(tmp_path / "out" / "events", ROWS)
    else:
        check_json_ids(tmp_path / "out" / "events.json", ROWS)


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_sigkill_supervisor_then_rerun_resumes_exactly(tmp_path: Path, fmt: str) -> None:
    config = _config(tmp_path, fmt)
    proc = start_run(tmp_path, config)
    deadline = time.monotonic() + 60
    # kill once the run has written something, at a random moment soon after: mid-run, whatever the load
    while not list(tmp_path.glob("out/.*bizon-fast/*/part-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(fmt).uniform(0.0, 0.3))
    assert proc.poll() is None, "the run finished before the supervisor could be killed"
    workers = workers_of(proc.pid)
    assert workers, "no workers to orphan"
    psutil.Process(proc.pid).kill()
    proc.wait(10)
    # the dead run's ring is left behind (any later start removes it: look before anything else runs)
    segments = [p for p in Path("/dev/shm").glob(f"bizon_fast_{proc.pid}_*")]
    assert segments, "the dead run's segment should be left behind for the next start to find"
    # no orphans: every worker follows its supervisor within seconds
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"orphaned workers: {alive}"
    # the same command resumes the job and finishes it exactly
    rerun = start_run(tmp_path, config)
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    assert not any(p.exists() for p in segments), "the stale segment was not removed"
    if fmt == "parquet":
        check_parquet_ids(tmp_path / "out" / "events", ROWS)
    else:
        check_json_ids(tmp_path / "out" / "events.json", ROWS)
