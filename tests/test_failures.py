"""Failure paths through the CLI: failing sources and destinations, restart budget, Ctrl-C, bad input."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from native_bench.services import start_run, workers_of
from tests.conftest import REPO
from tests.faults import assert_synthetic_parquet_exact, check_json_ids, check_parquet_ids, committed_rows, job_rows

FIXTURES = REPO / "tests" / "fixtures"
PLUGIN_ENV = {
    "BIZON_FAST_DESTINATIONS": "flaky=tests.fixtures.flaky_destination:FlakyDestination",
    "PYTHONPATH": str(REPO),
}


def test_failing_source_publishes_nothing_and_the_next_run_resumes(tmp_path: Path, cli) -> None:
    (tmp_path / "fail.flag").touch()
    (tmp_path / "p.yml").write_text(
        f"""
name: flaky-source
source: {{name: flaky, stream: numbers, source_file_path: {FIXTURES / "flaky_source.py"}, rows: 100000}}
destination: {{name: file, config: {{destination_id: out/numbers, format: json, buffer_size: 0}}}}
engine: {{queue: {{config: {{batch_size_mb: 0.01}}}}, runner: {{config: {{max_workers: 2}}}}}}
"""
    )
    res = cli("run", "p.yml", "--quiet")
    assert res.returncode == 1, res.stderr
    assert "source exploded" in res.stderr and "log:" in res.stderr and "Traceback" not in res.stderr
    # one line, then bizon's status line (cli/result.py)
    assert res.stderr.strip().splitlines()[1:] == [
        "Pipeline finished with status Failure (Producer: source_error, Consumer: source_error)"
    ], res.stderr
    assert not (tmp_path / "out" / "numbers.json").exists(), "a failed full refresh must publish nothing"
    [(job_id, status, attempt, error)] = job_rows(tmp_path)
    assert status == "failed" and "source exploded" in error
    committed = committed_rows(tmp_path)
    assert 0 < committed < 100_000

    (tmp_path / "fail.flag").unlink()
    res = cli("run", "p.yml", "--quiet")
    assert res.returncode == 0, res.stderr
    [(job_id2, status, attempt, _)] = job_rows(tmp_path)
    assert (job_id2, status, attempt) == (job_id, "succeeded", 2), "the job resumed instead of starting over"
    check_json_ids(tmp_path / "out" / "numbers.json", 100_000)


def _flaky_config(tmp_path: Path, **extra: object) -> None:
    opts = "".join(f", {k}: {v}" for k, v in extra.items())
    (tmp_path / "p.yml").write_text(
        f"""
name: flaky-dest
source: {{name: synthetic, stream: events, rows: 200000, splits: 4, batch_rows: 10000}}
destination: {{name: flaky, config: {{destination_id: out/events, format: parquet, buffer_size: 0{opts}}}}}
engine: {{runner: {{config: {{max_workers: 2}}}}}}
"""
    )


def test_transient_destination_errors_are_retried(tmp_path: Path, cli) -> None:
    _flaky_config(tmp_path, fail_first_writes=2)
    res = cli("run", "p.yml", "--quiet", env=PLUGIN_ENV)
    assert res.returncode == 0, res.stderr
    log_text = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "retrying" in log_text
    check_parquet_ids(tmp_path / "out" / "events", 200_000)


def test_failing_destination_commits_nothing_unwritten(tmp_path: Path, cli) -> None:
    _flaky_config(tmp_path)
    (tmp_path / "dest-fail.flag").touch()
    res = cli("run", "p.yml", "--quiet", env=PLUGIN_ENV)
    assert res.returncode == 1, res.stderr
    assert "destination unavailable" in res.stderr and "Traceback" not in res.stderr
    assert committed_rows(tmp_path) == 0, "no cursor may be committed for a batch that was not written"
    assert not (tmp_path / "out" / "events").exists()
    (tmp_path / "dest-fail.flag").unlink()
    res = cli("run", "p.yml", "--quiet", env=PLUGIN_ENV)
    assert res.returncode == 0, res.stderr
    check_parquet_ids(tmp_path / "out" / "events", 200_000)


def test_restart_budget_spent_fails_the_job(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(
        """
name: budget
source: {name: synthetic, stream: events, rows: 50000000, splits: 8}
destination: {name: noop, config: {buffer_size: 0}}
engine: {runner: {config: {max_workers: 1, max_restarts: 0}}}
"""
    )
    proc = start_run(tmp_path, "p.yml")
    deadline = time.monotonic() + 60
    victims = []
    while not victims and time.monotonic() < deadline:
        victims = [w for w in workers_of(proc.pid) if w.name().startswith("bf-producer")]
        time.sleep(0.05)
    victims[0].send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "max_restarts=0" in err and "SIGKILL" in err
    assert job_rows(tmp_path)[0][1] == "failed"


def test_ctrl_c_drains_commits_and_the_same_command_resumes(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(
        """
name: ctrl-c
source: {name: synthetic, stream: events, rows: 6000000, splits: 12, batch_rows: 20000}
destination: {name: file, config: {destination_id: out/events, format: parquet, buffer_size: 1}}
engine: {queue: {config: {batch_size_mb: 1}}, runner: {config: {max_workers: 2}}}
"""
    )
    proc = start_run(tmp_path, "p.yml")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("out/.*bizon-fast/*/part-*")) and time.monotonic() < deadline:
        time.sleep(0.02)  # interrupt once something was written, whatever the machine's load
    time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Run the same command to resume" in err
    [(job_id, status, attempt, _)] = job_rows(tmp_path)
    assert (status, attempt) == ("cancelled", 1)
    committed = committed_rows(tmp_path)
    assert 0 < committed < 6_000_000
    rerun = start_run(tmp_path, "p.yml")
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    # the same job resumed from its committed cursors; a fresh job (attempt 1, another id) fails here
    [rerun_log] = (tmp_path / "logs").glob(f"*-{rerun.pid}.log")
    assert f"resuming job {job_id} (attempt 2): " in rerun_log.read_text()
    assert f"{committed} rows already committed" in rerun_log.read_text()
    assert job_rows(tmp_path) == [(job_id, "succeeded", 2, None)]
    assert_synthetic_parquet_exact(tmp_path / "out" / "events", 6_000_000)


BAD_INPUTS = {
    "malformed YAML": ("name: x\nsource: [unclosed\n", "malformed YAML"),
    "unknown key": ("name: x\nsource: {name: synthetic, stream: events}\ndestination: {name: noop}\nfoo: 1\n", "foo"),
    "wrong type": (
        "name: x\nsource: {name: synthetic, stream: events, rows: many}\ndestination: {name: noop}\n",
        "source.rows",
    ),
    "unknown source": ("name: x\nsource: {name: nope, stream: s}\ndestination: {name: noop}\n", "source.name"),
    "unknown destination": (
        "name: x\nsource: {name: synthetic, stream: events}\ndestination: {name: nowhere}\n",
        "destination.name",
    ),
    "unknown stream": (
        "name: x\nsource: {name: synthetic, stream: rows}\ndestination: {name: noop}\n",
        "source.stream",
    ),
    "missing env variable": (
        "name: x\nsource: {name: synthetic, stream: events, seed: 'env://BIZON_FAST_TEST_UNSET'}\n"
        "destination: {name: noop}\n",
        "BIZON_FAST_TEST_UNSET",
    ),
    "/dev/shm smaller than the ring": (
        "name: x\nsource: {name: synthetic, stream: events, rows: 1000}\ndestination: {name: noop}\n"
        "engine: {queue: {config: {ring_size_mb: 100000000}}}\n",
        "engine.queue.config.ring_size_mb",
    ),
    "output directory not writable": (
        "name: x\nsource: {name: synthetic, stream: events, rows: 1000}\n"
        "destination: {name: file, config: {destination_id: a_file/out, format: parquet}}\n",
        "destination",
    ),
    "backend database unreachable": (
        "name: x\nsource: {name: synthetic, stream: events, rows: 1000}\ndestination: {name: noop}\n"
        "engine: {backend: {type: sqlite, config: {database: a_file/db, schema: x}}}\n",
        "engine.backend",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, cli, case: str) -> None:
    text, expected = BAD_INPUTS[case]
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "p.yml").write_text(text)
    res = cli("run", "p.yml", "--quiet")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert expected in res.stderr, res.stderr
    assert res.stderr.startswith("Error: ")


def test_locked_backend_is_a_clear_error(tmp_path: Path, cli) -> None:
    (tmp_path / "p.yml").write_text(
        "name: x\nsource: {name: synthetic, stream: events, rows: 1000}\ndestination: {name: noop}\n"
    )
    holder = sqlite3.connect(tmp_path / "bizon.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        res = cli("run", "p.yml", "--quiet")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert res.returncode == 2, res.stderr
    assert "locked" in res.stderr and "engine.backend" in res.stderr and "Traceback" not in res.stderr


def test_a_row_larger_than_a_ring_slot_fails_without_a_resume_hint(tmp_path: Path) -> None:
    """A rerun as is would fail the same way: the message names the knob and does not suggest rerunning."""
    (tmp_path / "p.yml").write_text(
        """
name: bigrow
source: {name: synthetic, stream: events, rows: 100, splits: 1, payload_bytes: 200000, batch_rows: 10}
destination: {name: file, config: {destination_id: out/events, format: parquet}}
engine: {queue: {config: {batch_size_mb: 0.01}}, runner: {config: {max_workers: 1}}}
"""
    )
    proc = start_run(tmp_path, "p.yml")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[1:] == ["Pipeline finished with status Failure (Producer: source_error, Consumer: source_error)"], err
    assert "more than a ring slot" in lines[0] and "engine.queue.config.batch_size_mb" in lines[0]
    assert "Run the same command" not in lines[0] and "A rerun as is fails the same way" in lines[0]
    assert job_rows(tmp_path)[0][1] == "failed"
