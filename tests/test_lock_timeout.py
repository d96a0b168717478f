"""Waits on PostgreSQL locks have a limit and say who holds the lock (``destination.config.lock_timeout``).

A full refresh's swap (``DROP TABLE`` of the old target) behind another session's ``LOCK TABLE ... IN
ACCESS EXCLUSIVE MODE`` used to wait silently for ever. Now the wait is logged while it lasts, and past
``lock_timeout`` the job fails with one line naming the table and the blocking session; the swap is one
transaction, so the old table is untouched, and a rerun once the lock is gone resumes and publishes.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from bizon_fast.connectors.registry import destination_class
from bizon_fast.destination.base import DestinationContext
from bizon_fast.engine.consumer import write_with_retries
from bizon_fast.errors import StepFailed
from native_bench.services import start_run
from tests.services.postgres import PG_DSN

pytestmark = pytest.mark.service

DSN = PG_DSN
LOCK_TIMEOUT = 3


@pytest.fixture
def pg(pg_admin, pg_schema: str) -> tuple[psycopg.Connection, str]:
    return pg_admin, pg_schema


def _holder(schema: str, table: str) -> psycopg.Connection:
    """Another session holding ``table`` in ACCESS EXCLUSIVE mode, in an open transaction."""
    conn = psycopg.connect(DSN, application_name="lock-holder")
    conn.execute(f"LOCK TABLE {schema}.{table} IN ACCESS EXCLUSIVE MODE")
    return conn


def _waiting_on_lock(admin: psycopg.Connection) -> bool:
    return bool(
        admin.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'bizon-fast' AND wait_event_type = 'Lock'"
        ).fetchone()
    )


def _config(cwd: Path, schema: str, lock_timeout: float) -> str:
    (cwd / "p.yml").write_text(
        f"""
name: lock-test
source: {{name: synthetic, stream: events, rows: 20000, splits: 4}}
destination:
  name: postgres
  config: {{dsn: "{DSN}", destination_id: {schema}.target, lock_timeout: {lock_timeout}}}
engine: {{runner: {{config: {{max_workers: 2}}}}}}
"""
    )
    return "p.yml"


def test_full_refresh_publish_behind_a_held_lock_fails_in_time_and_reruns_exact(pg, tmp_path: Path) -> None:
    admin, schema = pg
    admin.execute(f"CREATE TABLE {schema}.target (old int)")
    admin.execute(f"INSERT INTO {schema}.target VALUES (1), (2), (3)")
    holder = _holder(schema, "target")
    holder_pid = holder.info.backend_pid
    try:
        proc = start_run(tmp_path, _config(tmp_path, schema, LOCK_TIMEOUT))
        deadline = time.monotonic() + 120
        while not _waiting_on_lock(admin):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached the publish"
            time.sleep(0.1)
        wait_started = time.monotonic()
        _, stderr = proc.communicate(timeout=LOCK_TIMEOUT + 30)
        waited = time.monotonic() - wait_started
        assert proc.returncode == 1, stderr
        assert waited < LOCK_TIMEOUT + 10, f"the job failed {waited:.1f}s after its publish began to wait"
        errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, stderr
        assert "Traceback" not in stderr and "Internal error" not in stderr
        error = errors[0]
        assert f"gave up waiting for a lock on {schema}.target after 3s" in error
        assert f"held by pid {holder_pid} (application 'lock-holder'" in error
        assert "LOCK TABLE" in error and "nothing was published" in error
        # the wait was reported while it lasted, naming the same session
        assert any("waits for a lock" in line and f"pid {holder_pid}" in line for line in stderr.splitlines())
    finally:
        holder.rollback()
        holder.close()
    assert admin.execute(f"SELECT array_agg(old ORDER BY old) FROM {schema}.target").fetchone()[0] == [1, 2, 3]
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
        assert db.execute("SELECT status FROM bizon_fast_jobs").fetchall() == [("failed",)]

    # the lock is gone: the same job resumes (a new lock_timeout does not make it a new job) and publishes
    proc = start_run(tmp_path, _config(tmp_path, schema, 10))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    count, distinct, low, high = admin.execute(
        f"SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {schema}.target"
    ).fetchone()
    assert (count, distinct, low, high) == (20000, 20000, 0, 19999)
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
        assert db.execute("SELECT status, attempt FROM bizon_fast_jobs").fetchall() == [("succeeded", 2)]


def test_a_consumer_write_behind_a_held_lock_fails_once_without_retries(pg) -> None:
    """A consumer's write that hits lock_timeout is final: retried with backoff it would wait 4 times over."""
    admin, schema = pg
    ctx = DestinationContext(job_id="job-lock", pipeline="p", source_name="s", stream="s", sync_mode="full_refresh")
    cls = destination_class("postgres")
    config = cls.config_class.model_validate({"dsn": DSN, "destination_id": f"{schema}.dst", "lock_timeout": 1})
    destination = cls(config, ctx)
    destination.check_connection()
    destination.prepare({})
    holder = _holder(schema, "bizon_fast_destination_cursors")
    holder_pid = holder.info.backend_pid
    try:
        started = time.monotonic()
        with pytest.raises(StepFailed) as failed:
            write_with_retries(destination, "split-a", 0, 0, [pa.record_batch({"id": [1, 2, 3]})])
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
        destination.close()
    assert elapsed < 1 + 3, f"{elapsed:.1f}s: the write was retried"
    message = str(failed.value)
    assert f"writing split-a seq 0-0: gave up waiting for a lock on {schema}.bizon_fast_destination_cursors" in message
    assert f"held by pid {holder_pid} (application 'lock-holder'" in message
