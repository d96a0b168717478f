"""Stall detection and a bounded stop: SIGSTOP a worker during a real run, through the CLI.

A stopped worker never dies, so no sentinel fires: only its silent heartbeat tells the supervisor. These
tests check that a stopped worker is killed and replaced (the output still exact), that Ctrl-C with a
stopped worker ends within ``drain_timeout_s`` and leaves the job resumable, and that the second Ctrl-C
aborts at once. No test may leave a stopped process behind: every worker it saw is killed in the end.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.sources.synthetic.source import SCHEMA, SyntheticSource
from native_bench.services import start_run, workers_of
from tests.conftest import REPO
from tests.faults import check_parquet_ids

pytestmark = pytest.mark.slow

ROWS, SPLITS, BATCH_ROWS = 600_000, 6, 20_000  # 30 batches: one consumer writing each in 0.2 s+ takes 6 s+


@pytest.fixture(autouse=True)
def _slow_file(monkeypatch) -> None:
    """Every write sleeps: the run outlasts the SIGSTOP by seconds on any machine, without timing guesses."""
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", "slow_file=tests.fixtures.slow_file:SlowFileDestination")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def _config(
    tmp_path: Path,
    *,
    stall_timeout_s: float,
    drain_timeout_s: float,
    rows: int = ROWS,
    splits: int = SPLITS,
    write_delay_s: float = 0.2,
) -> str:
    # one consumer: once it is stopped nothing more is written, so the run cannot end without the engine
    (tmp_path / "p.yml").write_text(
        f"""
name: stall
source: {{name: synthetic, stream: events, rows: {rows}, splits: {splits}, batch_rows: {BATCH_ROWS}}}
destination: {{name: slow_file, config: {{destination_id: out/events, format: parquet, buffer_size: 0,
               write_delay_s: {write_delay_s}}}}}
engine:
  queue: {{config: {{batch_size_mb: 1}}}}
  runner: {{config: {{producers: 2, consumers: 1, max_restarts: 5, stall_timeout_s: {stall_timeout_s},
                     drain_timeout_s: {drain_timeout_s}}}}}
"""
    )
    return "p.yml"


class Run:
    """One CLI run whose every worker process is remembered, so none can outlive the test."""

    def __init__(self, tmp_path: Path, config: str) -> None:
        self.tmp_path = tmp_path
        self.proc = start_run(tmp_path, config)
        self.seen: dict[int, psutil.Process] = {}

    def look(self) -> list[psutil.Process]:
        workers = workers_of(self.proc.pid)
        for w in workers:
            self.seen.setdefault(w.pid, w)
        return workers

    def stop_worker_mid_run(self, role: str) -> psutil.Process:
        """SIGSTOP a ``role`` worker once three parts were written (something is committed, most is not)."""
        deadline = time.monotonic() + 60
        while len(list(self.tmp_path.glob("out/.*bizon-fast/*/part-*"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        victims = [w for w in self.look() if w.name().startswith(f"bf-{role}")]
        assert self.proc.poll() is None and victims, "the run finished before a worker could be stopped"
        victims[0].send_signal(signal.SIGSTOP)
        return victims[0]

    def wait(self, timeout: float) -> tuple[int, str]:
        """Wait for the exit (watching for new workers meanwhile); the exit code and stderr."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.look()
            time.sleep(0.1)
        if self.proc.poll() is None:
            pytest.fail(f"the run did not exit within {timeout:.0f}s")
        _, err = self.proc.communicate()
        return self.proc.returncode, err

    def assert_no_worker_left(self) -> None:
        _, alive = psutil.wait_procs(list(self.seen.values()), timeout=5)
        assert not alive, f"workers left behind: {alive}"

    def kill_leftovers(self) -> None:
        """SIGKILL ends a stopped process too: nothing stopped survives a failed test."""
        for p in [*self.seen.values(), psutil.Process(self.proc.pid) if self.proc.poll() is None else None]:
            if p is not None:
                with contextlib.suppress(psutil.Error):
                    p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.communicate(timeout=10)


@contextlib.contextmanager
def run(tmp_path: Path, config: str) -> Iterator[Run]:
    r = Run(tmp_path, config)
    try:
        yield r
    finally:
        r.kill_leftovers()


def _check_output(tmp_path: Path, rows: int = ROWS, splits: int = SPLITS) -> None:
    """Every id exactly once, and every value what the source generates for that id."""
    out = tmp_path / "out" / "events"
    check_parquet_ids(out, rows)
    src = SyntheticSource(
        SourceConfig(name="synthetic", stream="events", rows=rows, splits=splits, batch_rows=BATCH_ROWS)
    )
    expected = pa.Table.from_batches([p.batch for s in src.splits() for p in src.read(s, None)]).sort_by("id")
    got = ds.dataset(out, format="parquet").to_table(columns=SCHEMA.names).sort_by("id")
    assert got.cast(expected.schema).equals(expected), "values differ from the source's"


def _jobs(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as conn:
        return conn.execute("SELECT id, status FROM bizon_fast_jobs ORDER BY created_at").fetchall()


def _committed_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as conn:
        return conn.execute("SELECT COALESCE(SUM(rows), 0) FROM bizon_fast_cursors").fetchone()[0]


def _log_of(tmp_path: Path, pid: int) -> str:
    (log,) = (tmp_path / "logs").glob(f"*-{pid}.log")
    return log.read_text()


@pytest.mark.parametrize("role", ["consumer", "producer"])
def test_a_stopped_worker_is_killed_and_replaced_and_the_output_is_exact(tmp_path: Path, role: str) -> None:
    stall_timeout_s = 3
    with run(tmp_path, _config(tmp_path, stall_timeout_s=stall_timeout_s, drain_timeout_s=30)) as r:
        victim = r.stop_worker_mid_run(role)
        stopped_at = time.monotonic()
        name = victim.name().removeprefix("bf-")  # producer-0 or producer-1: whichever was stopped
        code, err = r.wait(timeout=stall_timeout_s + 60)
        took = time.monotonic() - stopped_at
        assert code == 0, err
        assert took < stall_timeout_s + 30, f"the run took {took:.1f}s after the SIGSTOP"
        stall = f"{name} (pid {victim.pid}) stalled: silent for"
        assert stall in err and stall in _log_of(tmp_path, r.proc.pid), err
        assert f"{name} died (stalled, killed by SIGKILL); restart 1 of 5" in err
        r.assert_no_worker_left()
    _check_output(tmp_path)


def test_ctrl_c_with_a_stopped_consumer_ends_within_the_drain_timeout_and_resumes(tmp_path: Path) -> None:
    drain_timeout_s = 5
    config = _config(tmp_path, stall_timeout_s=600, drain_timeout_s=drain_timeout_s)
    with run(tmp_path, config) as r:
        r.stop_worker_mid_run("consumer")  # it holds batches: the drain cannot finish
        r.proc.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        code, err = r.wait(timeout=drain_timeout_s + 60)
        took = time.monotonic() - interrupted_at
        assert code == 130, err
        assert took < drain_timeout_s + 8, f"the stop took {took:.1f}s"
        assert f"the drain did not finish within {drain_timeout_s}s" in err
        assert "Run the same command to resume" in err
        r.assert_no_worker_left()  # the stopped consumer too: no SIGCONT needed
    (job_id, status), *_ = _jobs(tmp_path)
    assert status == "cancelled"
    assert 0 < _committed_rows(tmp_path) < ROWS
    with run(tmp_path, config) as rerun:
        code, err = rerun.wait(timeout=120)
        assert code == 0, err
        assert f"resuming job {job_id}" in _log_of(tmp_path, rerun.proc.pid)
        rerun.assert_no_worker_left()
    assert _jobs(tmp_path) == [(job_id, "succeeded")]
    _check_output(tmp_path)


def test_second_ctrl_c_during_a_hung_drain_aborts_at_once(tmp_path: Path) -> None:
    config = _config(tmp_path, stall_timeout_s=600, drain_timeout_s=600)  # only the second Ctrl-C can end it
    with run(tmp_path, config) as r:
        r.stop_worker_mid_run("consumer")
        r.proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert r.proc.poll() is None, "the drain of a stopped consumer cannot have finished"
        r.proc.send_signal(signal.SIGINT)
        aborted_at = time.monotonic()
        code, err = r.wait(timeout=60)
        took = time.monotonic() - aborted_at
        assert code == 130, err
        assert took < 5, f"the abort took {took:.1f}s"
        assert "Run the same command to resume" in err
        r.assert_no_worker_left()
    assert [status for _, status in _jobs(tmp_path)] == ["cancelled"]
    with run(tmp_path, config) as rerun:  # an abort is resumable too
        code, err = rerun.wait(timeout=120)
        assert code == 0, err
        rerun.assert_no_worker_left()
    _check_output(tmp_path)


def test_a_worker_busy_longer_than_the_stall_timeout_is_not_killed(tmp_path: Path) -> None:
    """Each write takes over 3 s, the stall timeout is 2 s: the heartbeat thread beats through every write."""
    rows = 2 * BATCH_ROWS  # 2 batches, one split each
    config = _config(tmp_path, stall_timeout_s=2, drain_timeout_s=30, rows=rows, splits=2, write_delay_s=3)
    with run(tmp_path, config) as r:
        code, err = r.wait(timeout=120)
        assert code == 0, err
        log = _log_of(tmp_path, r.proc.pid)
        assert "stalled" not in log and "died" not in log, err
        r.assert_no_worker_left()
    _check_output(tmp_path, rows, splits=2)
