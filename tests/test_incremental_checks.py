"""Incremental runs are checked before they run: a ``cursor_field`` the source does not have is refused.

A misspelt ``cursor_field`` used to be accepted: every run read and appended the whole stream again and
stored ``watermark=None``. Sources that know their columns (postgres from its catalog, synthetic) refuse
it at start-up (exit 2, one line, the columns listed); bizon-style record sources, whose fields only show
in the data, fail the job on the first batch without it (exit 1, nothing published, watermark kept).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from bizon_fast.source.incremental import CursorFieldMissing, batch_watermark
from bizon_fast.source.records import records_to_batch
from tests.conftest import REPO
from tests.services.postgres import PG_DSN

CUSTOM_SOURCE = str(REPO / "tests" / "fixtures" / "bizon_custom_source.py")
DSN = PG_DSN


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("progress:")]


def _jobs(cwd: Path, name: str) -> list[tuple[str, str]]:
    with sqlite3.connect(cwd / "bizon.sqlite3") as db:
        return db.execute(
            "SELECT status, COALESCE(error, '') FROM bizon_fast_jobs WHERE name=? ORDER BY created_at", (name,)
        ).fetchall()


def _watermark(cwd: Path, stream: str) -> object:
    with sqlite3.connect(cwd / "bizon.sqlite3") as db:
        rows = db.execute("SELECT value FROM bizon_fast_watermarks WHERE stream_name=?", (stream,)).fetchall()
    return [msgspec.msgpack.decode(raw)["max"] for (raw,) in rows]


# ---------------------------------------------------------------- sources that know their columns


def test_synthetic_unknown_cursor_field_is_refused_at_start(tmp_path: Path, cli) -> None:
    (tmp_path / "p.yml").write_text(
        """
name: inc-typo
source: {name: synthetic, stream: events, rows: 50000000, sync_mode: incremental, cursor_field: tss}
destination: {name: file, config: {destination_id: out/events}}
"""
    )
    started = time.monotonic()
    res = cli("run", "p.yml", "--quiet")
    elapsed = time.monotonic() - started
    assert res.returncode == 2, res.stderr
    assert _errors(res.stderr) == [
        "Error: source.cursor_field: 'tss' is not a column of stream 'events'; "
        "columns: id, ts, user_id, amount, quantity, category, payload"
    ]
    assert elapsed < 15, f"refused after {elapsed:.1f}s: the 50M rows must not be read first"
    assert not (tmp_path / "out").exists()


def test_synthetic_known_cursor_field_runs(tmp_path: Path, cli) -> None:
    (tmp_path / "p.yml").write_text(
        """
name: inc-ok
source: {name: synthetic, stream: events, rows: 1000, splits: 2, sync_mode: incremental, cursor_field: id}
destination: {name: file, config: {destination_id: out/events}}
"""
    )
    res = cli("run", "p.yml", "--quiet")
    assert res.returncode == 0, res.stderr
    assert _watermark(tmp_path, "events") == [999]


def test_postgres_unknown_cursor_field_lists_the_table_columns(pg_admin, pg_schema: str, tmp_path: Path, cli) -> None:
    admin, schema = pg_admin, pg_schema
    admin.execute(f"CREATE TABLE {schema}.items (id bigint PRIMARY KEY, name text, updated_at timestamptz)")
    admin.execute(f"INSERT INTO {schema}.items SELECT g, 'n' || g, now() FROM generate_series(1, 1000) g")
    (tmp_path / "p.yml").write_text(
        f"""
name: pg-typo
source: {{name: postgres, stream: {schema}.items, dsn: "{DSN}", sync_mode: incremental, cursor_field: updatedd}}
destination: {{name: file, config: {{destination_id: out/items}}}}
"""
    )
    started = time.monotonic()
    res = cli("run", "p.yml", "--quiet")
    elapsed = time.monotonic() - started
    assert res.returncode == 2, res.stderr
    assert _errors(res.stderr) == [
        f"Error: source.cursor_field: 'updatedd' is not a column of {schema}.items; columns: id, name, updated_at"
    ]
    assert elapsed < 15
    assert not (tmp_path / "out").exists()


def test_postgres_cursor_without_any_value_publishes_nothing(pg_admin, pg_schema: str, tmp_path: Path, cli) -> None:
    """Rows were read but their cursor is NULL throughout: no watermark to store, so the job fails unpublished."""
    admin, schema = pg_admin, pg_schema
    admin.execute(f"CREATE TABLE {schema}.items (id bigint PRIMARY KEY, name text, updated_at timestamptz)")
    admin.execute(f"INSERT INTO {schema}.items SELECT g, 'n' || g, NULL FROM generate_series(1, 500) g")
    (tmp_path / "p.yml").write_text(
        f"""
name: pg-nulls
source: {{name: postgres, stream: {schema}.items, dsn: "{DSN}", sync_mode: incremental, cursor_field: updated_at}}
destination: {{name: file, config: {{destination_id: out/items}}}}
"""
    )
    res = cli("run", "p.yml", "--quiet")
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert len(errors) == 1 and errors[0].startswith("Error: incremental: 500 rows were read"), res.stderr
    assert "'updated_at' had no value" in errors[0]
    assert not (tmp_path / "out" / "items.json").exists()
    assert _watermark(tmp_path, f"{schema}.items") == []
    assert _jobs(tmp_path, "pg-nulls")[-1][0] == "failed"


# ---------------------------------------------------------------- bizon-style record sources


def _flowers(cwd: Path, rows: int, cursor_field: str) -> str:
    (cwd / "flowers.yml").write_text(
        f"""
name: flowers
source: {{name: flowers, stream: flowers, sync_mode: incremental, cursor_field: {cursor_field}, rows: {rows},
          page_size: 4}}
destination: {{name: file, config: {{destination_id: flowers}}}}
"""
    )
    return "flowers.yml"


def test_record_source_batch_without_the_cursor_field_fails_the_job(tmp_path: Path, cli) -> None:
    assert cli("run", _flowers(tmp_path, 10, "updated_at"), "-q", "--custom-source", CUSTOM_SOURCE).returncode == 0
    assert _watermark(tmp_path, "flowers") == [1009]
    before = (tmp_path / "flowers.json").read_bytes()

    res = cli("run", _flowers(tmp_path, 15, "updatedd"), "-q", "--custom-source", CUSTOM_SOURCE)
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert errors[1:] == ["Pipeline finished with status Failure (Producer: source_error, Consumer: source_error)"]
    assert "CursorFieldMissing: source.cursor_field: 'updatedd' is in none of the 4 records" in errors[0]
    assert "fields of its first record: id, name, updated_at" in errors[0]
    assert (tmp_path / "flowers.json").read_bytes() == before, "nothing published"
    assert _watermark(tmp_path, "flowers") == [1009], "watermark unchanged"
    assert _jobs(tmp_path, "flowers")[-1][0] == "failed"


# ---------------------------------------------------------------- the batch check itself


def _records(*datas: dict) -> pa.RecordBatch:
    return records_to_batch([{"id": i, "data": d} for i, d in enumerate(datas)])


def test_batch_watermark_of_records() -> None:
    assert batch_watermark([_records({"u": 3}, {"u": 7}, {"v": 1})], "u").max == 7
    assert batch_watermark([_records({"a": {"b": "x"}}, {"a": {"b": "y"}})], "a.b").max == "y"
    # present but null everywhere: no max, but not an error (the job-level check decides)
    assert batch_watermark([_records({"u": None}, {"u": None})], "u") is None
    with pytest.raises(CursorFieldMissing, match=r"'u' is in none of the 2 records .*first record: v, w"):
        batch_watermark([_records({"v": 1, "w": 2}, {"v": 3})], "u")
    assert batch_watermark([_records({"v": 1})], None) is None


def test_batch_watermark_of_columns() -> None:
    batch = pa.record_batch({"id": [1, 5, 3], "tags": pa.array([{"a": 1}] * 3)})
    assert batch_watermark([batch], "id").max == 5
    with pytest.raises(CursorFieldMissing, match=r"'idd' is not a column .*columns: id, tags"):
        batch_watermark([batch], "idd")
    with pytest.raises(CursorFieldMissing, match="has no order"):
        batch_watermark([batch], "tags")
