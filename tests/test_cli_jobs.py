"""``bizon-fast jobs``: past runs read back from the checkpoint backend, through the CLI.

Runs are real (``bizon-fast run`` in its own process) on sqlite and on Postgres: a job that failed
(a source that raises), the same job resumed (attempt 2), a fresh job; ``jobs`` lists them newest first,
in a table and as JSON, and ``jobs show`` lists the splits' committed cursors. Reading takes no run
lock and creates nothing: ``jobs`` answers while a run writes, and a never-run pipeline leaves no
database, table or column behind. A run whose worker is SIGKILLed records its restart with the job.
A jobs table written before the ``restarts``/``started_at`` columns is read as is and migrated by a run.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from bizon_fast.checkpoint.base import JobStatus
from bizon_fast.cli.app import app
from native_bench.services import BQEMU_PROJECT, start_run, workers_of
from tests.conftest import REPO, run_cli
from tests.services.postgres import PG_DSN

FIXTURES = REPO / "tests" / "fixtures"
PG = pytest.param("postgres", marks=pytest.mark.service)
ROWS = 40_000


@pytest.fixture
def backend(request, tmp_path: Path) -> tuple[str, str | None]:
    """(the engine.backend YAML block, the Postgres schema or None) of a test's runs."""
    if request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")
        return f'{{type: postgres, config: {{dsn: "{PG_DSN}", schema: {schema}}}}}', schema
    return f"{{type: sqlite, config: {{database: {tmp_path / 'ckpt' / 'bizon'}}}}}", None


runner = CliRunner()


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch) -> None:
    """Tables as plain text (what a pipe gets), whatever the environment says about terminals."""
    for var in ("TTY_COMPATIBLE", "FORCE_COLOR"):
        monkeypatch.delenv(var, raising=False)


def jobs(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``bizon-fast jobs ...`` in ``cwd``, through typer's runner (a process start per call costs a second
    on a busy machine; the runs themselves are real processes)."""
    res = runner.invoke(app, ["jobs", *(str(cwd / a) if a.endswith(".yml") else a for a in args)])
    return subprocess.CompletedProcess(["jobs", *args], res.exit_code, res.stdout, res.stderr)


def jobs_json(*args: str, cwd: Path) -> list[dict]:
    res = jobs(*args, "--json", cwd=cwd)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def tables_in(kind: str, tmp_path: Path, pg_admin, schema: str | None) -> list[str]:  # noqa: ANN001
    if kind == "sqlite":
        db = tmp_path / "ckpt" / "bizon.sqlite3"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    rows = pg_admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("backend", ["sqlite", PG], indirect=True)
def test_failed_resumed_and_new_jobs_are_listed_newest_first(
    tmp_path: Path, backend: tuple[str, str | None], request
) -> None:
    block, schema = backend
    kind = "postgres" if schema else "sqlite"
    pg_admin = request.getfixturevalue("pg_admin") if schema else None
    (tmp_path / "p.yml").write_text(
        f"""
name: history
source: {{name: flaky, stream: numbers, source_file_path: {FIXTURES / "flaky_source.py"}, rows: {ROWS},
          fail_after_batches: 5}}
destination: {{name: file, config: {{destination_id: out/numbers, format: json, buffer_size: 0}}}}
engine:
  backend: {block}
  queue: {{config: {{batch_size_mb: 0.01}}}}
  runner: {{type: thread, config: {{max_workers: 2}}}}  # the job's bookkeeping is the same; starts faster
"""
    )
    # never run: nothing to list, and looking created nothing (no database file, no table)
    res = jobs("p.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "no jobs recorded for pipeline 'history' in " in res.stdout, res.stdout
    assert tables_in(kind, tmp_path, pg_admin, schema) == []
    assert not (tmp_path / "ckpt").exists() or kind == "postgres"

    (tmp_path / "fail.flag").touch()  # the source raises after 5 batches of split s0
    res = run_cli("run", "p.yml", "--quiet", cwd=tmp_path)
    assert res.returncode == 1 and "source exploded" in res.stderr, res.stderr
    [failed] = jobs_json("p.yml", cwd=tmp_path)
    assert failed["status"] == "failed" and failed["attempt"] == 1 and failed["restarts"] == 0
    assert "source exploded" in failed["error"]
    assert 0 < failed["rows"] < ROWS, "rows committed before the failure"
    assert failed["planned_rows"] == ROWS and failed["pipeline"] == "history"
    assert (failed["source"], failed["stream"]) == ("flaky", "numbers")
    table = jobs("p.yml", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:4] == ["job", "pipeline", "source/stream", "status"]
    assert row.startswith(failed["id"]) and " failed " in row and "source exploded" in row

    (tmp_path / "fail.flag").unlink()
    time.sleep(1.1)  # the start times are kept to the second: the resumed attempt's must be a later one
    res = run_cli("run", "p.yml", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    [resumed] = jobs_json("p.yml", cwd=tmp_path)
    assert resumed["id"] == failed["id"], "the rerun resumed the failed job"
    assert (resumed["status"], resumed["attempt"], resumed["rows"], resumed["error"]) == ("succeeded", 2, ROWS, None)
    assert resumed["created_at"] == failed["created_at"] and resumed["started_at"] > failed["started_at"]
    assert resumed["restarts"] == 0 and resumed["duration_s"] >= 0

    res = run_cli("run", "p.yml", "--quiet", cwd=tmp_path)  # a full refresh again: a new job
    assert res.returncode == 0, res.stderr
    newest, older = jobs_json("p.yml", cwd=tmp_path)
    assert older["id"] == failed["id"] and newest["id"] != failed["id"], "newest first"
    assert (newest["status"], newest["attempt"], newest["rows"]) == ("succeeded", 1, ROWS)
    assert [j["id"] for j in jobs_json("p.yml", "--limit", "1", cwd=tmp_path)] == [newest["id"]]
    assert set(newest) == set(older), "every object has the same keys"

    shown = jobs_json("show", failed["id"], "p.yml", cwd=tmp_path)
    assert shown["id"] == failed["id"] and shown["attempt"] == 2 and shown["rows"] == ROWS
    splits = shown["splits"]
    assert [s["split_id"] for s in splits] == ["s0", "s1", "s2", "s3"]
    assert all(s["done"] for s in splits) and sum(s["rows"] for s in splits) == ROWS
    assert splits[3]["position"][0] == ROWS, "the last split's committed source position is its end"
    text = jobs("show", failed["id"], "p.yml", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "status        succeeded" in text.stdout and "attempt       2" in text.stdout
    split_lines = [line.split() for line in text.stdout.splitlines() if line[:2] in ("s0", "s1", "s2", "s3")]
    assert [cells[0] for cells in split_lines] == ["s0", "s1", "s2", "s3"]
    assert all(cells[3] == "yes" for cells in split_lines), "every split is done"


@pytest.mark.parametrize("backend", ["sqlite", PG], indirect=True)
def test_jobs_answers_during_a_run_and_the_run_records_its_restart(
    tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    """``jobs`` takes no run lock: it answers while a run holds it; a killed producer is counted."""
    block, _ = backend
    (tmp_path / "p.yml").write_text(
        f"""
name: live
source: {{name: slow, stream: trickle, source_file_path: {FIXTURES / "slow_source.py"}, batches: 12, pause_s: 0.25}}
destination: {{name: file, config: {{destination_id: out/t, format: parquet, buffer_size: 0}}}}
engine:
  backend: {block}
  runner: {{config: {{max_workers: 1, max_restarts: 5}}}}
"""
    )
    run = start_run(tmp_path, "p.yml")
    try:
        deadline = time.monotonic() + 60
        listed: list[dict] = []
        while not listed and time.monotonic() < deadline:
            assert run.poll() is None, f"the run ended before jobs could look: {run.communicate()}"
            started = time.monotonic()
            res = run_cli("jobs", "p.yml", "--json", cwd=tmp_path, timeout=60)  # another process, as a user would
            took = time.monotonic() - started
            assert res.returncode == 0, res.stderr
            listed = json.loads(res.stdout)
        [live] = listed
        assert live["status"] == "running" and live["restarts"] == 0
        assert took < 20, f"jobs took {took:.1f}s during the run"
        producers = []
        while not producers and time.monotonic() < deadline:
            producers = [w for w in workers_of(run.pid) if w.name().startswith("bf-producer")]
        producers[0].send_signal(signal.SIGKILL)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            psutil.Process(run.pid).kill()
    assert run.returncode == 0, err
    [done] = jobs_json("p.yml", cwd=tmp_path)
    assert (done["id"], done["status"], done["rows"]) == (live["id"], "succeeded", 12)
    assert done["restarts"] == 1, "the killed producer's restart is recorded with the job"


# ---------------------------------------------------------------- arguments and old tables

OLD_SQLITE_JOBS = """
CREATE TABLE bizon_fast_jobs (id TEXT PRIMARY KEY, name TEXT NOT NULL, source_name TEXT NOT NULL,
    stream_name TEXT NOT NULL, sync_mode TEXT NOT NULL, status TEXT NOT NULL, fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, total_rows INTEGER, error TEXT,
    attempt INTEGER NOT NULL DEFAULT 1);
CREATE TABLE bizon_fast_cursors (job_id TEXT NOT NULL, split_id TEXT NOT NULL, seq INTEGER NOT NULL,
    rows INTEGER NOT NULL, done INTEGER NOT NULL, cursor BLOB NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (job_id, split_id));
INSERT INTO bizon_fast_jobs VALUES ('j1', 'old', 'synthetic', 'events', 'full_refresh', 'failed', 'fp',
    '2026-01-02T03:04:05+00:00', '2026-01-02T03:05:05+00:00', 100,
    'RuntimeError: boom [bold]x' || char(10) || 'second line', 1);
"""


def test_a_table_from_before_restarts_is_read_as_is_and_migrated_by_a_run(tmp_path: Path, monkeypatch) -> None:
    from bizon_fast.checkpoint.sqlite import SqliteBackend
    from bizon_fast.cursor import Cursor, encode_cursor

    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_SQLITE_JOBS)
        conn.execute(
            "INSERT INTO bizon_fast_cursors VALUES ('j1', 'a', 2, 30, 0, ?, '2026-01-02T03:05:00+00:00')",
            (encode_cursor(Cursor(split_id="a", seq=2, rows=30, position=[{"page": "tok"}, 5])),),
        )
    res = runner.invoke(app, ["jobs", "--backend-db", str(db)])
    assert res.exit_code == 0, res.output
    header, row = res.output.splitlines()
    expected = "j1  old  synthetic/events  failed  2026-01-02 03:04:05  1m00s  30  1  -  RuntimeError: boom [bold]x"
    assert " ".join(row.split()) == " ".join(expected.split()), "the error's first line only"
    assert header.index("rows") + len("rows") == row.index("30") + 2, "numbers are right-aligned under their header"
    [job] = json.loads(runner.invoke(app, ["jobs", "--backend-db", str(db), "--json"]).output)
    assert job["restarts"] is None and job["error"] == "RuntimeError: boom [bold]x\nsecond line" and job["rows"] == 30
    shown = runner.invoke(app, ["jobs", "show", "j1", "--backend-db", str(db)])
    assert shown.exit_code == 0, shown.output
    [split] = [line for line in shown.output.splitlines() if line.startswith("a ")]
    assert split.split() == ["a", "2", "30", "no", "2026-01-02", "03:05:00", '{"page":"tok"}', "+", "skip", "5", "rows"]
    assert "error         RuntimeError: boom [bold]x\n              second line" in shown.output
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # a terminal: the rich table, the error as text (not markup)
    boxed = runner.invoke(app, ["jobs", "--backend-db", str(db)], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert boxed.exit_code == 0 and "┃" in boxed.output and "RuntimeError: boom [bold]x" in boxed.output, boxed.output
    monkeypatch.delenv("TTY_COMPATIBLE")
    with sqlite3.connect(db) as conn:  # reading changed nothing
        assert "restarts" not in [r[1] for r in conn.execute("PRAGMA table_info(bizon_fast_jobs)")]

    backend = SqliteBackend(str(db))
    backend.open()  # what a run does first: the missing columns are added, old rows keep NULL
    try:
        assert backend.get_job("j1").restarts is None
        job = backend.create_job(
            name="old",
            source_name="synthetic",
            stream_name="events",
            sync_mode="full_refresh",
            fingerprint="f2",
            total_rows=None,
        )
        backend.set_job_status(job.id, JobStatus.SUCCEEDED, restarts=3)
        assert [(j.id, j.restarts) for j in backend.list_jobs("old", 10)] == [(job.id, 3), ("j1", None)]
    finally:
        backend.close()


def test_arguments_and_one_line_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["jobs"])  # the default backend, ./bizon.sqlite3, absent: nothing to list
    assert res.exit_code == 0 and res.output.startswith("no jobs recorded in "), res.output
    assert not (tmp_path / "bizon.sqlite3").exists(), "looking must not create the database"
    res = runner.invoke(app, ["jobs", "--pipeline", "nope", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == [], res.output
    (tmp_path / "mem.yml").write_text(
        "name: m\nsource: {name: synthetic, stream: events, rows: 10}\n"
        "destination: {name: noop, config: {}}\nengine: {backend: {type: sqlite_in_memory}}\n"
    )
    res = runner.invoke(app, ["jobs", "mem.yml"])
    assert res.exit_code == 2 and "sqlite_in_memory" in res.output and len(res.output.splitlines()) == 1, res.output
    res = runner.invoke(app, ["jobs", "mem.yml", "--backend-db", "x"])
    assert res.exit_code == 2 and "not both" in res.output, res.output
    res = runner.invoke(app, ["jobs", "missing.yml"])
    assert res.exit_code == 2 and res.output.startswith("Error: "), res.output
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as conn:
        conn.executescript(OLD_SQLITE_JOBS)
    res = runner.invoke(app, ["jobs", "show", "nope"])
    assert res.exit_code == 2 and "job nope is not recorded in " in res.output, res.output
    res = runner.invoke(app, ["jobs", "--limit", "0"])
    assert res.exit_code == 2, res.output
    res = runner.invoke(app, ["jobs", "--help"])
    assert res.exit_code == 0 and "show" in res.output and "list" in res.output, res.output


#: the two tables ``bizon-fast jobs`` reads, as the BigQuery backend created them before restarts/started_at
OLD_BQ_TABLES = {
    "bizon_fast_jobs": "id STRING,name STRING,source_name STRING,stream_name STRING,sync_mode STRING,status STRING,"
    "fingerprint STRING,created_at TIMESTAMP,updated_at TIMESTAMP,total_rows INT64,error STRING,attempt INT64",
    "bizon_fast_cursors": "job_id STRING,split_id STRING,version INT64,seq INT64,rows INT64,done BOOL,cursor STRING,"
    "updated_at TIMESTAMP",
}


@pytest.mark.service
def test_bigquery_lists_jobs_and_cursors_and_reads_without_creating(bq_emulator, bq_dataset: str) -> None:
    """The BigQuery backend against the emulator: nothing created by a read, newest first, newest cursors."""
    from google.cloud import bigquery

    from bizon_fast.checkpoint.factory import create_backend
    from bizon_fast.config.engine import BackendConfig
    from bizon_fast.cursor import Cursor

    cfg = BackendConfig.model_validate(
        {"type": "bigquery", "config": {"database": BQEMU_PROJECT, "schema": bq_dataset}}
    )
    reader = create_backend(cfg)
    try:
        assert reader.open_for_reading() is False
    finally:
        reader.close()
    client = bq_emulator.client()
    assert list(client.list_tables(f"{BQEMU_PROJECT}.{bq_dataset}")) == [], "a read created tables"
    # the tables as an older bizon-fast created them: no restarts / started_at columns
    for table, columns in OLD_BQ_TABLES.items():
        schema = [bigquery.SchemaField(*c.split()) for c in columns.split(",")]
        client.create_table(bigquery.Table(f"{BQEMU_PROJECT}.{bq_dataset}.{table}", schema=schema))
    client.query(
        f"INSERT INTO `{BQEMU_PROJECT}.{bq_dataset}.bizon_fast_jobs` (id, name, source_name, stream_name, sync_mode,"
        " status, fingerprint, created_at, updated_at, attempt) VALUES ('old', 'pipe', 'src', 's', 'full_refresh',"
        " 'succeeded', 'fp', TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-01 00:00:09', 1)"
    ).result()
    reader = create_backend(cfg)
    try:
        assert reader.open_for_reading() is True
        [old_job] = reader.list_jobs("pipe", 10)
        assert (old_job.id, old_job.restarts, old_job.started_at, old_job.committed_rows) == ("old", None, None, None)
    finally:
        reader.close()

    def job_columns() -> set[str]:  # as a query sees them: the emulator's metadata ignores an ALTER TABLE
        query = client.query(f"SELECT * FROM `{BQEMU_PROJECT}.{bq_dataset}.bizon_fast_jobs` LIMIT 0")
        return {f.name for f in query.result().schema}

    assert "restarts" not in job_columns(), "a read altered the table"
    b = create_backend(cfg)
    b.open()  # a run's first step: the missing columns are added
    assert {"restarts", "started_at"} <= job_columns()
    try:
        kw = {"name": "pipe", "source_name": "src", "stream_name": "s"}
        first = b.create_job(**kw, sync_mode="full_refresh", fingerprint="fp", total_rows=10)
        b.commit_cursors(first.id, [Cursor(split_id="a", seq=0, rows=5), Cursor(split_id="b", seq=0, rows=4)])
        b.commit_cursors(first.id, [Cursor(split_id="a", seq=1, rows=6, position=[7, 0], done=True)])
        b.set_job_status(first.id, JobStatus.FAILED, "boom", restarts=2)
        time.sleep(0.01)
        second = b.create_job(**kw, sync_mode="full_refresh", fingerprint="fp", total_rows=10)
        b.set_job_status(second.id, JobStatus.SUCCEEDED, restarts=0)
    finally:
        b.close()
    reader = create_backend(cfg)
    try:
        assert reader.open_for_reading() is True
        listed = reader.list_jobs("pipe", 10)
        assert [(j.id, j.status, j.restarts, j.committed_rows) for j in listed] == [
            (second.id, "succeeded", 0, None),
            (first.id, "failed", 2, 10),
            ("old", "succeeded", None, None),
        ]
        assert reader.list_jobs("other", 10) == [] and len(reader.list_jobs(None, 1)) == 1
        cursors = reader.job_cursors(first.id)
        assert [(c.cursor.split_id, c.cursor.seq, c.cursor.position) for c in cursors] == [
            ("a", 1, [7, 0]),
            ("b", 0, None),
        ]
    finally:
        reader.close()
