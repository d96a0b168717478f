"""Crash safety: SIGKILL workers and the supervisor during real runs; nothing committed is lost or doubled.

The slow destination sleeps *before* each write (``write_delay_where: before``): a random kill then mostly
lands while a consumer holds batches that are not durable yet, or while a producer fills slots, rather than
after a write was already durable. The kills at exact steps are in ``tests/test_fault_points.py``.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from native_bench.services import start_run, workers_of
from tests.conftest import REPO
from tests.faults import (
    assert_synthetic_exact,
    assert_synthetic_parquet_exact,
    committed_rows,
    job_rows,
    kill_workers_randomly,
    read_synthetic_json,
    run_log,
)

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
               write_delay_s: 0.05, write_delay_where: before}}}}
engine:
  queue: {{config: {{batch_size_mb: 1}}}}
  runner: {{config: {{max_workers: 2, max_restarts: 50}}}}
"""
    )
    return "pipeline.yml"


def _check_output(tmp_path: Path, fmt: str) -> None:
    """Every id once with the values the source generated for it, not only the ids."""
    if fmt == "parquet":
        assert_synthetic_parquet_exact(tmp_path / "out" / "events", ROWS)
    else:
        assert_synthetic_exact(read_synthetic_json(tmp_path / "out" / "events.json"), ROWS)


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_sigkill_random_workers_loses_and_duplicates_nothing(tmp_path: Path, fmt: str) -> None:
    rng = random.Random(f"workers-{fmt}")
    proc = start_run(tmp_path, _config(tmp_path, fmt))
    killed = kill_workers_randomly(proc, kills=5, rng=rng)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert len(killed) >= 3, f"the run ended before enough kills: {killed}"
    # the supervisor saw every kill: a "died" line for each killed worker (bf-consumer-1 -> consumer-1)
    died = Counter(
        re.findall(r"supervisor bizon_fast\.supervisor: (\S+) died \(killed by SIGKILL\)", run_log(tmp_path, proc.pid))
    )
    for name, times in Counter(k.removeprefix("bf-") for k in killed).items():
        assert died[name] >= times, f"{name} was killed {times} times, the supervisor saw {died[name]}: {died}"
    _check_output(tmp_path, fmt)


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_sigkill_supervisor_then_rerun_resumes_exactly(tmp_path: Path, fmt: str) -> None:
    config = _config(tmp_path, fmt)
    proc = start_run(tmp_path, config)
    deadline = time.monotonic() + 60
    # kill once the run has committed something, at a random moment soon after: mid-run, whatever the load
    while committed_rows(tmp_path) == 0 and time.monotonic() < deadline and proc.poll() is None:
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
    [(job_id, status, attempt, _)] = job_rows(tmp_path)
    assert (status, attempt) == ("running", 1)
    committed = committed_rows(tmp_path)
    assert 0 < committed < ROWS, f"the kill must land mid-run: {committed} of {ROWS} rows committed"
    # the same command resumes the job from its committed cursors (a fresh job from zero fails here) and
    # finishes it exactly
    rerun = start_run(tmp_path, config)
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    assert f"resuming job {job_id} (attempt 2): " in run_log(tmp_path, rerun.pid)
    assert f"{committed} rows already committed" in run_log(tmp_path, rerun.pid)
    assert job_rows(tmp_path) == [(job_id, "succeeded", 2, None)], "the rerun must resume the job, not start over"
    assert not any(p.exists() for p in segments), "the stale segment was not removed"
    _check_output(tmp_path, fmt)
