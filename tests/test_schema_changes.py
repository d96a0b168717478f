"""Schema changes are recorded with the job: a Postgres -> Postgres incremental run, then a column added and
one widened at the source; the second run's summary names them, and ``bizon-fast jobs`` / ``jobs show`` hold
them (``schema_changes``), with the sqlite and the Postgres checkpoint backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.service

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
WIDE = {"COLUMNS": "200"}  # the summary's table unfolded


@pytest.fixture
def schema(pg_admin, pg_schema: str):  # noqa: ANN001, ANN201 - psycopg.Connection
    yield pg_schema
    pg_admin.execute(f"DROP SCHEMA IF EXISTS {pg_schema}_ckpt CASCADE")


def write_config(tmp_path: Path, schema: str, backend: str, disposition: str) -> str:
    backends = {
        "sqlite": f"{{type: sqlite, config: {{database: {tmp_path / 'ckpt'}}}}}",
        "postgres": f'{{type: postgres, config: {{dsn: "{DSN}", schema: {schema}_ckpt}}}}',
    }
    (tmp_path / "p.yml").write_text(
        f"""
name: pg-schema-changes
source: {{name: postgres, stream: {schema}.src, dsn: "{DSN}", splits: 2, sync_mode: incremental,
          cursor_field: updated_at}}
destination:
  name: postgres
  config: {{dsn: "{DSN}", destination_id: {schema}.dst, write_disposition: {disposition}}}
engine:
  backend: {backends[backend]}
  runner: {{config: {{max_workers: 2}}}}
"""
    )
    return "p.yml"


def jobs_json(tmp_path: Path, *args: str):  # noqa: ANN201
    res = run_cli("jobs", *args, "--json", cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize(
    ("backend", "disposition"), [("sqlite", "merge"), ("postgres", "append")], ids=["sqlite-merge", "postgres-append"]
)
def test_schema_changes_recorded_with_the_job(pg_admin, schema, tmp_path: Path, backend, disposition) -> None:  # noqa: ANN001
    pg_admin.execute(
        f"CREATE TABLE {schema}.src (id bigint PRIMARY KEY, v text, n integer, updated_at timestamptz NOT NULL)"
    )
    pg_admin.execute(
        f"INSERT INTO {schema}.src SELECT g, md5(g::text), g, timestamptz '2024-01-01' + g * interval '1 s'"
        " FROM generate_series(1, 1000) g"
    )
    config = write_config(tmp_path, schema, backend, disposition)
    first = run_cli("run", config, cwd=tmp_path, env=WIDE)
    assert first.returncode == 0, first.stderr
    assert "column note" not in first.stdout
    [job1] = jobs_json(tmp_path, config)
    assert job1["status"] == "succeeded" and job1["schema_changes"] is None

    pg_admin.execute(f"ALTER TABLE {schema}.src ADD COLUMN note text, ALTER COLUMN n TYPE bigint")
    pg_admin.execute(
        f"UPDATE {schema}.src SET note = 'hello', n = n + 10000000000,"
        " updated_at = timestamptz '2030-01-01' + id * interval '1 s' WHERE id <= 10"
    )
    second = run_cli("run", config, cwd=tmp_path, env=WIDE)
    assert second.returncode == 0, second.stderr
    added, widened = "column note added (text; existing rows null)", "column n widened from integer to bigint"
    summary = second.stdout
    assert "schema" in summary and added in summary and widened in summary, summary

    job2 = jobs_json(tmp_path, config)[0]
    assert job2["id"] != job1["id"]
    assert sorted(job2["schema_changes"]) == sorted([added, widened])
    shown = jobs_json(tmp_path, "show", job2["id"], config)
    assert sorted(shown["schema_changes"]) == sorted([added, widened])
    text = run_cli("jobs", "show", job2["id"], config, cwd=tmp_path, timeout=60)
    assert text.returncode == 0 and added in text.stdout and widened in text.stdout, text.stdout + text.stderr
    # the rows themselves: the new column filled where the source set it, the widened one holding big values
    rows = 1000 if disposition == "merge" else 1010
    assert pg_admin.execute(f"SELECT count(*), count(note), max(n) FROM {schema}.dst").fetchone() == (
        rows,
        10,
        10000000010,
    )

    third = run_cli("run", config, cwd=tmp_path, env=WIDE)  # nothing new: nothing changes, nothing recorded
    assert third.returncode == 0, third.stderr
    assert added not in third.stdout
    assert jobs_json(tmp_path, config)[0]["schema_changes"] is None
