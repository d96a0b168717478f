"""bizon's state carried over (issue 14, item 2): a pipeline bizon ran continues under bizon-fast where bizon stopped.

The end-to-end tests run the real bizon 0.6.4 (its own venv, ``native_bench.venvs``: bizon is GPL-3.0 and never a
dependency) on an incremental custom source that logs every id it fetches, then bizon-fast on the same YAML in the
same folder and backend: no id is fetched twice and none is written twice, on the sqlite and the Postgres backend.
An interrupted bizon job (killed with SIGKILL mid-run) resumes from its last destination cursor. The command
``bizon-fast state import`` is tested on bizon tables written here with bizon's schema, so it needs no bizon.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from tests.conftest import run_cli

#: an incremental bizon source, written against bizon's imports: ``events`` are ids 0..rows-1, ``page_size`` a
#: page; every page returns ``next_state = {"last_id": ...}`` and ``get_records_after`` starts after it (bizon
#: >= 0.6 persists that state with a successful job). Every fetched id is appended to ``fetch_log``; a page
#: starting at ``hang_at`` or later sleeps, before fetching anything, while the file ``hang_file`` exists.
SOURCE = """
import os
import time

from bizon.source.config import SourceConfig
from bizon.source.models import SourceIteration, SourceRecord
from bizon.source.source import AbstractSource


class EventsConfig(SourceConfig):
    rows: int = 10
    page_size: int = 4
    fetch_log: str = "fetched.txt"
    hang_at: int = -1
    hang_file: str = ""


class EventsSource(AbstractSource):
    def __init__(self, config: EventsConfig):
        super().__init__(config)
        self.config: EventsConfig = config

    @staticmethod
    def streams():
        return ["events"]

    @staticmethod
    def get_config_class():
        return EventsConfig

    def get_authenticator(self):
        return None

    def check_connection(self):
        return True, None

    def get_total_records_count(self):
        return self.config.rows

    def _page(self, start):
        while 0 <= self.config.hang_at <= start and os.path.exists(self.config.hang_file):
            time.sleep(0.2)
        stop = min(start + self.config.page_size, self.config.rows)
        ids = list(range(start, stop))
        with open(self.config.fetch_log, "a") as log:
            log.write("".join(f"{i}\\n" for i in ids))
        return SourceIteration(
            next_pagination={"offset": stop} if stop < self.config.rows else {},
            records=[SourceRecord(id=i, data={"id": i, "name": f"event-{i}"}) for i in ids],
            next_state={"last_id": stop - 1} if ids else None,
        )

    def get(self, pagination=None):
        return self._page(int((pagination or {}).get("offset", 0)))

    def get_records_after(self, source_state, pagination=None):
        after = int(source_state.state.get("last_id", -1)) + 1
        return self._page(max(after, int((pagination or {}).get("offset", 0))))
"""

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.service)]


@pytest.fixture(scope="module")
def bizon_bin() -> Path:
    """The real bizon 0.6.4 CLI (the shared native_bench venv; ~1 min the first time)."""
    from native_bench import venvs

    v = venvs.ensure("bizon", ["bizon==0.6.4"], "import bizon.cli.main")
    if v.python is None:
        pytest.skip(f"no bizon 0.6.4 to compare with: {v.problem}")
    return v.python.parent / "bizon"


@pytest.fixture(scope="module")
def bizon_pg_bin() -> Path:
    """bizon 0.6.4 with its postgres extra (psycopg2), in a venv of its own so the shared one stays as it is."""
    from native_bench import venvs

    v = venvs.ensure("bizon-pg", ["bizon[postgres]==0.6.4"], "import bizon.cli.main, psycopg2")
    if v.python is None:
        pytest.skip(f"no bizon 0.6.4 with psycopg2: {v.problem}")
    return v.python.parent / "bizon"


def _pipeline(tmp_path: Path, name: str, backend: str, rows: int, destination: str = "file", **source: object) -> Path:
    extra = "".join(f", {k}: {json.dumps(v)}" for k, v in source.items())
    dest = "{name: file, config: {destination_id: events_out}}"
    if destination == "logger":
        dest = "{name: logger, config: {dummy: bizon}}"
    elif destination == "logger-unbuffered":  # bizon writes (and records a destination cursor) every page
        dest = "{name: logger, config: {dummy: bizon, buffer_size: 0}}"
    path = tmp_path / "pipeline.yml"
    path.write_text(
        f"name: {name}\n"
        f"source: {{name: events, stream: events, sync_mode: incremental, rows: {rows}, page_size: 4,"
        f" fetch_log: {json.dumps(str(tmp_path / 'fetched.txt'))}{extra}}}\n"
        f"destination: {dest}\n"
        f"engine:\n  backend: {backend}\n  runner: {{type: thread}}\n"
    )
    return path


def _sqlite_backend() -> str:
    return "{type: sqlite, config: {database: bizon, schema: NOT_USED_IN_SQLITE}}"


def _pg_backend(schema: str) -> str:
    return (
        "{type: postgres, config: {host: 127.0.0.1, port: 5432, database: test, schema: "
        f'{schema}, username: postgres, password: ""}}}}'
    )


def _bizon_run(bizon: Path, tmp_path: Path, env: dict[str, str] | None = None) -> None:
    res = subprocess.run(
        [str(bizon), "run", "pipeline.yml", "--custom-source", "events_source.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def _bizon_fast_run(tmp_path: Path) -> subprocess.CompletedProcess:
    res = run_cli("run", "pipeline.yml", "-q", "--custom-source", "events_source.py", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return res


def _fetched(tmp_path: Path) -> list[int]:
    return [int(x) for x in (tmp_path / "fetched.txt").read_text().split()]


def _written(tmp_path: Path) -> list[int]:
    lines = (tmp_path / "events_out.json").read_text().splitlines()
    return [json.loads(json.loads(line)["source_data"])["id"] for line in lines]


def _log_text(tmp_path: Path) -> str:
    return "".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.log")))


@pytest.mark.slow
@pytest.mark.parametrize("kind", BACKENDS)
def test_bizon_runs_twice_then_bizon_fast_continues(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The issue's demonstration: bizon 0.6.4 runs an incremental pipeline twice, then bizon-fast runs it."""
    (tmp_path / "events_source.py").write_text(SOURCE)
    name = f"bizon-state-{uuid.uuid4().hex[:8]}"
    if kind == "postgres":
        schema = request.getfixturevalue("pg_schema")
        bizon, backend = request.getfixturevalue("bizon_pg_bin"), _pg_backend(schema)
        env = {"PGOPTIONS": f"-c search_path={schema}"}  # bizon creates its tables in the default schema
    else:
        bizon, backend, env = request.getfixturevalue("bizon_bin"), _sqlite_backend(), {}
    _pipeline(tmp_path, name, backend, rows=10)
    _bizon_run(bizon, tmp_path, env)
    _pipeline(tmp_path, name, backend, rows=15)
    _bizon_run(bizon, tmp_path, env)
    assert _fetched(tmp_path) == list(range(15)), "bizon's second run read only what was new"

    _pipeline(tmp_path, name, backend, rows=22)
    _bizon_fast_run(tmp_path)
    assert _fetched(tmp_path) == list(range(22)), "bizon-fast fetched only ids 15..21: none twice"
    assert _written(tmp_path) == list(range(22)), "each id once in the destination, in order"
    log = _log_text(tmp_path)
    assert log.count("bizon state carried over") == 1, log
    assert "last successful bizon job" in log and '{"last_id": 14}' in log

    _pipeline(tmp_path, name, backend, rows=25)
    _bizon_fast_run(tmp_path)
    assert _fetched(tmp_path) == list(range(25)) and _written(tmp_path) == list(range(25))
    assert _log_text(tmp_path).count("bizon state carried over") == 1, "imported once, then bizon-fast's own"


@pytest.mark.slow
def test_interrupted_bizon_job_resumes_from_its_cursor(tmp_path: Path, bizon_bin: Path) -> None:
    """bizon killed mid-job (SIGKILL) after writing two pages: bizon-fast resumes after them, reading each id once."""
    (tmp_path / "events_source.py").write_text(SOURCE)
    name = f"bizon-resume-{uuid.uuid4().hex[:8]}"
    _pipeline(tmp_path, name, _sqlite_backend(), rows=8, destination="logger")
    _bizon_run(bizon_bin, tmp_path)  # ids 0..7, state {"last_id": 7}
    hang = tmp_path / "hang"
    hang.touch()
    _pipeline(
        tmp_path, name, _sqlite_backend(), rows=20, destination="logger-unbuffered", hang_at=16, hang_file=str(hang)
    )
    proc = subprocess.Popen(
        [str(bizon_bin), "run", "pipeline.yml", "--custom-source", "events_source.py"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        written = 0
        while time.monotonic() < deadline and written < 2:  # pages 8..11 and 12..15 written, 16.. hangs
            time.sleep(0.2)
            with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
                written = db.execute(
                    "SELECT count(*) FROM destination_cursors c JOIN stream_jobs j ON j.id = c.job_id"
                    " WHERE j.status = 'running' AND c.success = 1"
                ).fetchone()[0]
        assert written >= 2, "bizon did not write its pages in time"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
        assert [r[0] for r in db.execute("SELECT status FROM stream_jobs ORDER BY created_at")] == [
            "succeeded",
            "running",
        ]
    hang.unlink()
    assert _fetched(tmp_path) == list(range(16))

    _bizon_fast_run(tmp_path)
    assert _fetched(tmp_path) == list(range(20)), "bizon-fast read 16..19 only: resumed at bizon's pagination"
    log = _log_text(tmp_path)
    assert "interrupted bizon job" in log and 'pagination {"offset": 16}' in log, log
    assert "resuming job" in log


# ---------------------------------------------------------------- `state import`, on bizon tables written here

BIZON_DDL = """
CREATE TABLE stream_jobs (id VARCHAR(100) PRIMARY KEY, name VARCHAR(100) NOT NULL, source_name VARCHAR(100) NOT NULL,
    stream_name VARCHAR(100) NOT NULL, sync_mode VARCHAR(100) NOT NULL, attempt INTEGER, total_records_to_fetch INTEGER,
    created_at DATETIME NOT NULL, updated_at DATETIME, incremental_state VARCHAR, status VARCHAR(100),
    error_message VARCHAR(255));
CREATE TABLE destination_cursors (id VARCHAR(100) PRIMARY KEY, job_id VARCHAR(100) REFERENCES stream_jobs (id),
    name VARCHAR(100) NOT NULL, source_name VARCHAR(100) NOT NULL, stream_name VARCHAR(100) NOT NULL,
    destination_name VARCHAR(100) NOT NULL, from_source_iteration INTEGER, to_source_iteration INTEGER,
    rows_written INTEGER, success BOOLEAN NOT NULL, attempt INTEGER, error_message VARCHAR(500), created_at DATETIME,
    updated_at DATETIME, pagination VARCHAR);
"""


def _bizon_tables(tmp_path: Path, name: str, destination: str) -> None:
    """bizon's sqlite tables as 0.6.4 leaves them: a succeeded job, then one interrupted after two pages."""
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
        db.executescript(BIZON_DDL)
        jobs = [
            ("j1", "succeeded", "2026-12-01 10:00:00.000000", '{"last_id": 41}'),
            ("j2", "running", "2026-12-02 10:00:00.000000", None),
        ]
        for id_, status, created, state in jobs:
            db.execute(
                "INSERT INTO stream_jobs VALUES (?, ?, 'events', 'events', 'incremental', 0, 60, ?, NULL, ?, ?, NULL)",
                (id_, name, created, state, status),
            )
        for i, pagination in enumerate(['{"offset": 46}', '{"offset": 50}']):
            db.execute(
                "INSERT INTO destination_cursors VALUES (?, 'j2', ?, 'events', 'events', ?, ?, ?, 4, 1, 0, NULL,"
                " NULL, NULL, ?)",
                (f"c{i}", name, destination, i, i, pagination),
            )


def test_state_import_prints_what_it_imported_and_refuses_twice(tmp_path: Path) -> None:
    name = "imported"
    (tmp_path / "events_source.py").write_text(SOURCE)
    yml = _pipeline(tmp_path, name, _sqlite_backend(), rows=60, destination="logger")
    res = run_cli("state", "import", "pipeline.yml", "--custom-source", "events_source.py", cwd=tmp_path)
    assert res.returncode == 2 and "holds no bizon tables (stream_jobs, destination_cursors)" in res.stderr
    _bizon_tables(tmp_path, name, "logger")

    res = run_cli("state", "import", str(yml), "--custom-source", "events_source.py", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"Imported bizon's state of pipeline '{name}' (events/events) from ")
    assert "last successful bizon job j1 (started 2026-12-01T10:00:00+00:00)" in lines[1]
    assert '{"last_id": 41}' in lines[1]
    assert "interrupted bizon job j2: resumed as job " in lines[2]
    assert 'after iteration 1 (pagination {"offset": 50}, 8 rows already written by bizon)' in lines[2]

    from bizon_fast.engine.incremental import StoredWatermark

    with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
        ((raw, job_id),) = db.execute("SELECT value, job_id FROM bizon_fast_watermarks").fetchall()
        ((status, error),) = db.execute("SELECT status, error FROM bizon_fast_jobs").fetchall()
    stored = msgspec.msgpack.decode(raw, type=StoredWatermark)  # the run reads what the import wrote
    assert job_id == "bizon:j1" and stored.state == {"last_id": 41} and stored.max is None
    assert stored.last_run.isoformat() == "2026-12-01T10:00:00+00:00"
    assert status == "cancelled" and "bizon: its job j2 was interrupted after iteration 1" in error

    again = run_cli("state", "import", "pipeline.yml", "--custom-source", "events_source.py", cwd=tmp_path)
    assert again.returncode == 2 and "bizon-fast already has history" in again.stderr and "--force" in again.stderr
    forced = run_cli("state", "import", "pipeline.yml", "--custom-source", "events_source.py", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
        errors = [r[0] for r in db.execute("SELECT error FROM bizon_fast_jobs")]
    assert len(errors) == 2 and "replaced by bizon's state (state import --force)" in errors

    run = _bizon_fast_run(tmp_path)  # resumes the imported job: ids 50..59, the state of j1 handed to the source
    assert _fetched(tmp_path) == list(range(50, 60)), run.stderr
    assert "bizon state carried over" not in _log_text(tmp_path), "the command imported it already"


def test_interrupted_job_staged_by_bizon_is_read_again(tmp_path: Path) -> None:
    """bizon's file destination publishes an incremental job only at its end: its pages were never delivered, so
    the run reads them again from the last success instead of resuming after them (nothing lost)."""
    name = "staged"
    (tmp_path / "events_source.py").write_text(SOURCE)
    _pipeline(tmp_path, name, _sqlite_backend(), rows=50)
    _bizon_tables(tmp_path, name, "file")
    _bizon_fast_run(tmp_path)
    assert _fetched(tmp_path) == list(range(42, 50)), "read after j1's state (last_id 41), j2's pages again"
    assert _written(tmp_path) == list(range(42, 50))
    log = _log_text(tmp_path)
    assert "interrupted bizon job j2: not resumed, bizon's file destination staged its 8 rows" in log, log
