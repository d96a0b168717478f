"""``bizon-fast check FILE`` and ``bizon-fast run FILE --dry-run``, through the CLI as a user runs them.

``check`` must reach every part (one line each, exit 1 when one fails, 2 for a bad config) and leave no
trace: no run lock, no job, nothing in the destination. ``--dry-run`` must print the splits the supervisor
would plan, and the job it would resume, without moving a row or creating a job.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from native_bench.services import BQEMU_PROJECT
from tests.services.postgres import PG_DSN

LINE = re.compile(r"^(ok  |FAIL) (\w+) (\w+) +(.*)  \((\d+\.\d\d) s\)$")


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lines(stdout: str) -> dict[str, tuple[str, str, str]]:
    """part -> (mark, kind, detail) of check's lines; every line must have the documented shape."""
    parts = {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        assert m, f"not a check line: {line!r}"
        parts[m[2]] = (m[1].strip(), m[3], m[4])
    return parts


def pg_pipeline(
    tmp_path: Path, schema: str, *, stream: str, dsn: str = PG_DSN, port: int = 5432, backend: str | None = None
) -> Path:
    backend = backend or f'{{type: postgres, config: {{dsn: "{PG_DSN}", schema: {schema}}}}}'
    path = tmp_path / "pg.yml"
    path.write_text(
        f"""name: check-pg
source:
  name: postgres
  stream: {stream}
  host: 127.0.0.1
  port: {port}
  database: test
  username: postgres
  splits: 4
destination:
  name: postgres
  config:
    dsn: "{dsn}"
    destination_id: {schema}.copy
engine:
  backend: {backend}
"""
    )
    return path


def synthetic_pipeline(tmp_path: Path, destination_id: str, backend: str = "{type: sqlite_in_memory}") -> Path:
    path = tmp_path / "syn.yml"
    path.write_text(
        f"""name: check-syn
source: {{name: synthetic, stream: events, rows: 1000, splits: 4}}
destination:
  name: file
  config: {{destination_id: {destination_id}, format: parquet}}
engine:
  backend: {backend}
"""
    )
    return path


@pytest.fixture
def events(pg_admin, pg_schema: str) -> str:  # noqa: ANN001 - psycopg.Connection
    """A 1,000-row table with an integer key in the test's schema."""
    pg_admin.execute(f"CREATE TABLE {pg_schema}.events (id bigint PRIMARY KEY, v text)")
    pg_admin.execute(f"INSERT INTO {pg_schema}.events SELECT g, 'v' || g FROM generate_series(1, 1000) g")
    pg_admin.execute(f"ANALYZE {pg_schema}.events")
    return f"{pg_schema}.events"


def relations(pg_admin, schema: str) -> set[str]:  # noqa: ANN001
    rows = pg_admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return {r[0] for r in rows}


# ---------------------------------------------------------------- check


def test_check_reaches_postgres_source_destination_backend(cli, tmp_path, pg_admin, pg_schema, events) -> None:
    r = cli("check", str(pg_pipeline(tmp_path, pg_schema, stream=events)))
    assert r.returncode == 0, r.stdout + r.stderr
    parts = lines(r.stdout)
    assert list(parts) == ["source", "destination", "backend"]
    assert parts["source"] == ("ok", "postgres", f"127.0.0.1:5432/test {events}, 4 splits")
    assert parts["destination"] == ("ok", "postgres", f"127.0.0.1:5432/test table {pg_schema}.copy (new)")
    assert parts["backend"] == ("ok", "postgres", f"127.0.0.1:5432/test schema {pg_schema}")
    # a probe, not a run: no target, no stage, no destination bookkeeping, no job
    assert relations(pg_admin, pg_schema) == {
        "events",
        "bizon_fast_jobs",
        "bizon_fast_cursors",
        "bizon_fast_watermarks",
    }
    assert pg_admin.execute(f"SELECT count(*) FROM {pg_schema}.bizon_fast_jobs").fetchone()[0] == 0


def test_check_existing_target_table_is_described(cli, tmp_path, pg_admin, pg_schema, events) -> None:
    pg_admin.execute(f"CREATE TABLE {pg_schema}.copy (id bigint, v text, w int)")
    r = cli("check", str(pg_pipeline(tmp_path, pg_schema, stream=events)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert lines(r.stdout)["destination"][2] == f"127.0.0.1:5432/test table {pg_schema}.copy (exists, 3 columns)"


def test_check_unreachable_postgres_fails_fast_naming_host_and_port(cli, tmp_path) -> None:
    port = closed_port()
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=test connect_timeout=2"
    backend = "{type: sqlite_in_memory}"
    config = pg_pipeline(tmp_path, "public", stream="public.events", dsn=dsn, port=port, backend=backend)
    started = time.monotonic()
    r = cli("check", str(config))
    elapsed = time.monotonic() - started
    assert r.returncode == 1, r.stdout + r.stderr
    parts = lines(r.stdout)
    for part in ("source", "destination"):
        mark, _, detail = parts[part]
        assert mark == "FAIL"
        assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}/test" in detail
    assert parts["backend"][0] == "ok"  # the other parts are still checked
    assert elapsed < 10, f"check took {elapsed:.1f} s against a closed port"


def test_check_missing_table_fails_naming_it(cli, tmp_path, pg_admin, pg_schema) -> None:
    r = cli("check", str(pg_pipeline(tmp_path, pg_schema, stream=f"{pg_schema}.nope")))
    assert r.returncode == 1, r.stdout + r.stderr
    parts = lines(r.stdout)
    assert parts["source"][0] == "FAIL"
    assert f"table '{pg_schema}.nope' does not exist in 127.0.0.1:5432/test" in parts["source"][2]
    assert parts["destination"][0] == "ok"


def test_check_postgres_destination_missing_database_fails(cli, tmp_path, pg_admin, pg_schema, events) -> None:
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=bizon_fast_no_such_db"
    r = cli("check", str(pg_pipeline(tmp_path, pg_schema, stream=events, dsn=dsn)))
    assert r.returncode == 1
    mark, _, detail = lines(r.stdout)["destination"]
    assert mark == "FAIL" and 'database "bizon_fast_no_such_db" does not exist' in detail


def test_check_file_destination_probes_without_creating(cli, tmp_path) -> None:
    r = cli("check", str(synthetic_pipeline(tmp_path, "out/deep/events")))
    assert r.returncode == 0, r.stdout + r.stderr
    parts = lines(r.stdout)
    target = tmp_path / "out" / "deep" / "events"
    assert parts["source"] == ("ok", "synthetic", "stream 'events', 4 splits")
    assert parts["destination"] == (
        "ok",
        "file",
        f"{target} (parquet, new, folder to be created under {tmp_path}), writable",
    )
    assert parts["backend"] == ("ok", "sqlite_in_memory", "in memory (kept for the run only)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn.yml"]  # no folder, no probe file left


def test_check_file_destination_under_a_file_fails(cli, tmp_path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    r = cli("check", str(synthetic_pipeline(tmp_path, "blocker/events")))
    assert r.returncode == 1
    mark, _, detail = lines(r.stdout)["destination"]
    assert mark == "FAIL"
    assert detail == f"destination.config.destination_id: cannot create {tmp_path / 'blocker'}: " + (
        f"{tmp_path / 'blocker'} is not a directory"
    )


def test_check_invalid_config_is_one_line_exit_2(cli, tmp_path) -> None:
    (tmp_path / "bad.yml").write_text("name: bad\nsource: {name: synthetic, stream: events}\n")
    r = cli("check", "bad.yml")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("Error: ") and "destination" in r.stderr


def test_check_rabbitmq_queue(cli, tmp_path, rabbitmq) -> None:
    config = tmp_path / "q.yml"
    for port, mark in ((5672, "ok"), (closed_port(), "FAIL")):
        config.write_text(
            "name: check-q\nsource: {name: synthetic, stream: events, rows: 10}\n"
            "destination: {name: noop, config: {}}\nengine:\n  backend: {type: sqlite_in_memory}\n"
            f"  queue: {{type: rabbitmq, config: {{queue: {{host: 127.0.0.1, port: {port}, queue_name: bf_check}}}}}}\n"
        )
        r = cli("check", str(config))
        assert r.returncode == (0 if mark == "ok" else 1), r.stdout + r.stderr
        parts = lines(r.stdout)
        assert parts["destination"] == ("ok", "noop", "discards records: nothing to reach")
        assert parts["queue"][:2] == (mark, "rabbitmq")
        assert f"127.0.0.1:{port}/" in parts["queue"][2]
        assert "guest" not in parts["queue"][2]  # the url's credentials are never printed


def test_check_bigquery_dataset(cli, tmp_path, bq_dataset) -> None:
    config = tmp_path / "bq.yml"
    for dataset, mark in ((bq_dataset, "ok"), ("bf_no_such_dataset", "FAIL")):
        config.write_text(
            "name: check-bq\nsource: {name: synthetic, stream: events, rows: 10}\n"
            f"destination: {{name: bigquery, config: {{project_id: {BQEMU_PROJECT}, dataset_id: {dataset},"
            " destination_id: events}}\nengine:\n  backend: {type: sqlite_in_memory}\n"
        )
        r = cli("check", str(config))
        assert r.returncode == (0 if mark == "ok" else 1), r.stdout + r.stderr
        got, _, detail = lines(r.stdout)["destination"]
        assert got == mark
        if mark == "ok":
            assert detail == f"dataset {BQEMU_PROJECT}.{dataset}, table {BQEMU_PROJECT}.{dataset}.events (new)"
        else:
            assert f"dataset {BQEMU_PROJECT}.bf_no_such_dataset does not exist" in detail


# ---------------------------------------------------------------- run --dry-run


def test_dry_run_synthetic_prints_splits_and_writes_nothing(cli, tmp_path) -> None:
    db = tmp_path / "ckpt" / "bizon"
    config = synthetic_pipeline(tmp_path, "out/events", backend=f"{{type: sqlite, config: {{database: {db}}}}}")
    r = cli("run", str(config), "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "Dry run of pipeline 'check-syn': synthetic/events -> file"
    assert "  delivery: exactly-once (a replay after a crash rewrites the same rows)" in out
    assert "  job:      a new job (nothing checkpointed yet)" in out
    assert "  splits:   4, rows: 1,000" in out
    assert [line.split()[0] for line in out if line.startswith("    ")] == [
        "ids-0000-0250",
        "ids-0250-0500",
        "ids-0500-0750",
        "ids-0750-1000",
    ]
    assert "    ids-0250-0500  start=250 stop=500  250 rows" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn.yml"]  # no output, no checkpoint, no log


def test_dry_run_tells_which_job_it_would_resume(cli, tmp_path) -> None:
    """An unfinished job of the same config is named (and left as it is); nothing else is created."""
    from bizon_fast.checkpoint.sqlite import SqliteBackend
    from bizon_fast.connectors.pipeline import load_config
    from bizon_fast.engine.job import fingerprint

    db = tmp_path / "ckpt" / "bizon"
    config = synthetic_pipeline(tmp_path, "out/events", backend=f"{{type: sqlite, config: {{database: {db}}}}}")
    cfg = load_config(config)
    fp = fingerprint(
        cfg.source.model_dump(mode="json"), "file", cfg.destination.config.model_dump(mode="json", by_alias=True)
    )
    backend = SqliteBackend(str(db))
    backend.open()
    job = backend.create_job(
        name="check-syn", source_name="synthetic", stream_name="events", sync_mode="full_refresh", fingerprint=fp,
        total_rows=1000,
    )  # fmt: skip
    backend.close()
    r = cli("run", str(config), "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"  job:      resumes job {job.id} (running, attempt 2): 0 of 4 splits done, 0 rows committed" in r.stdout
    with sqlite3.connect(f"{db}.sqlite3") as conn:
        assert conn.execute("SELECT id, status, attempt FROM bizon_fast_jobs").fetchall() == [(job.id, "running", 1)]
    assert not (tmp_path / "out").exists()


def test_dry_run_postgres_prints_key_ranges_and_writes_nothing(cli, tmp_path, pg_admin, pg_schema, events) -> None:
    r = cli("run", str(pg_pipeline(tmp_path, pg_schema, stream=events)), "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert out[0] == f"Dry run of pipeline 'check-pg': postgres/{events} -> postgres"
    assert "  job:      a new job" in out
    assert "  splits:   4, rows: 1,000" in out
    splits = [line.split() for line in out if line.startswith("    ")]
    assert [s[0] for s in splits] == ["key000:0:250", "key001:250:500", "key002:500:750", "key003:750:1000"]
    assert splits[1][1:3] == ["after=250", "upto=500"]
    assert relations(pg_admin, pg_schema) == {
        "events",
        "bizon_fast_jobs",
        "bizon_fast_cursors",
        "bizon_fast_watermarks",
    }
    assert pg_admin.execute(f"SELECT count(*) FROM {pg_schema}.bizon_fast_jobs").fetchone()[0] == 0


def test_dry_run_missing_table_fails_like_a_run(cli, tmp_path, pg_admin, pg_schema) -> None:
    r = cli("run", str(pg_pipeline(tmp_path, pg_schema, stream=f"{pg_schema}.nope")), "--dry-run")
    assert r.returncode == 2
    assert f"table '{pg_schema}.nope' does not exist" in r.stderr
    assert r.stdout == ""
