"""Postgres -> Postgres incremental with ``write_disposition: merge``, deletes and schema evolution, through the CLI.

The source's primary key (the catalog's, attached by the Postgres source to every batch) is the merge key;
the destination upserts the job's staged rows at publish, in the transaction that records the publish.
Every test works in a schema of its own (``pg_schema``), dropped afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import run_cli
from tests.direct import run_job

pytestmark = pytest.mark.service

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
NEW = "timestamptz '2030-01-01'"


@pytest.fixture
def schema(pg_admin, pg_schema: str):  # noqa: ANN001, ANN201 - psycopg.Connection
    yield pg_schema
    pg_admin.execute(f"DROP SCHEMA IF EXISTS {pg_schema}_ckpt CASCADE")


def one(admin, sql: str):  # noqa: ANN001, ANN201
    return admin.execute(sql).fetchone()


def make_source(admin, schema: str, rows: int, *, pk: bool = True) -> None:  # noqa: ANN001
    key = "PRIMARY KEY" if pk else ""
    admin.execute(
        f"CREATE TABLE {schema}.src (id bigint {key}, v text, n integer, amount numeric(8,2), deleted boolean,"
        " updated_at timestamptz NOT NULL)"
    )
    admin.execute(
        f"INSERT INTO {schema}.src SELECT g, md5(g::text), g %% 1000, g %% 10000 / 100.0, false,"
        " timestamptz '2024-01-01' + g * interval '1 ms' FROM generate_series(1, %s) g",
        (rows,),
    )
    admin.execute(f"CREATE INDEX ON {schema}.src (updated_at)")
    admin.execute(f"ANALYZE {schema}.src")


def write_config(
    tmp_path: Path, schema: str, *, dest_extra: str = "", splits: int = 4, chunk_rows: int = 50_000
) -> str:
    (tmp_path / "merge.yml").write_text(
        f"""
name: pg-merge
source: {{name: postgres, stream: {schema}.src, dsn: "{DSN}", splits: {splits}, chunk_rows: {chunk_rows},
          sync_mode: incremental, cursor_field: updated_at}}
destination:
  name: postgres
  config: {{dsn: "{DSN}", destination_id: {schema}.dst, write_disposition: merge{dest_extra}}}
engine:
  backend: {{type: postgres, config: {{dsn: "{DSN}", schema: {schema}_ckpt}}}}
  runner: {{config: {{max_workers: 2, max_restarts: 20}}}}
"""
    )
    return "merge.yml"


def run(tmp_path: Path, config: str, env: dict[str, str] | None = None):  # noqa: ANN201
    return run_cli("run", config, "--quiet", cwd=tmp_path, env=env)


def update(admin, schema: str, where: str, sets: str = "v = 'changed-' || id") -> None:  # noqa: ANN001
    admin.execute(f"UPDATE {schema}.src SET {sets}, updated_at = {NEW} + id * interval '1 ms' WHERE {where}")


def counts(admin, schema: str) -> tuple[int, int, int]:  # noqa: ANN001
    """(rows, distinct ids, rows carrying a changed value) of the destination."""
    return one(
        admin, f"SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE v LIKE 'changed-%') FROM {schema}.dst"
    )


def matches_source(admin, schema: str) -> bool:  # noqa: ANN001
    cols = "id, v, n, amount, deleted, updated_at"
    diff = one(
        admin,
        f"SELECT count(*) FROM ((SELECT {cols} FROM {schema}.src EXCEPT SELECT {cols} FROM {schema}.dst)"
        f" UNION ALL (SELECT {cols} FROM {schema}.dst EXCEPT SELECT {cols} FROM {schema}.src)) d",
    )[0]
    return diff == 0


def test_one_million_rows_then_1000_updated_merge_exactly(pg_admin, schema, tmp_path: Path) -> None:
    """The issue's scenario: 1M rows loaded incrementally by updated_at, 1,000 updated at the source, the
    second run leaves exactly 1,000,000 rows, the 1,000 with their new values (not 1,001,000)."""
    rows = 1_000_000
    make_source(pg_admin, schema, rows)
    config = write_config(tmp_path, schema)
    started = time.monotonic()
    first = run(tmp_path, config)
    first_s = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert counts(pg_admin, schema) == (rows, rows, 0)
    assert one(pg_admin, f"SELECT count(*) FROM pg_index WHERE indrelid = '{schema}.dst'::regclass AND indisprimary")[0]
    update(pg_admin, schema, "id % 1000 = 7")
    started = time.monotonic()
    second = run(tmp_path, config)
    second_s = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert counts(pg_admin, schema) == (rows, rows, 1_000)
    assert matches_source(pg_admin, schema)
    print(f"1M rows: first run (create) {first_s:.1f}s, merge of 1,000 changed rows {second_s:.1f}s")


@pytest.mark.parametrize(
    "fault",
    [
        "postgres.publish",  # the supervisor, inside the merge's transaction
        "consumer.after_write",  # a consumer, its write committed but not reported: replayed
        pytest.param("supervisor.after_publish", marks=pytest.mark.slow),  # merged and committed, job not closed
        pytest.param("postgres.mid_write", marks=pytest.mark.slow),  # a consumer, its write not committed
    ],
)
def test_sigkill_during_the_merge_run_then_rerun_is_exact(pg_admin, schema, tmp_path: Path, fault: str) -> None:
    """A worker or the supervisor SIGKILLed during the merge run (mid-merge, after it, mid-write, after a
    write before its report): the run or its rerun leaves the same table as an uninterrupted merge."""
    rows = 60_000
    make_source(pg_admin, schema, rows)
    config = write_config(tmp_path, schema, chunk_rows=2_000)
    assert run(tmp_path, config).returncode == 0
    update(pg_admin, schema, "id % 20 = 3")  # 3,000 rows, read in several chunks and splits
    pg_admin.execute(
        f"INSERT INTO {schema}.src SELECT g, 'changed-' || g, 1, 1, false, {NEW} + g * interval '1 ms'"
        f" FROM generate_series({rows + 1}, {rows + 5}) g"
    )
    point = fault + ("@2" if fault.endswith("write") else "")
    env = {"BIZON_FAST_FAULT": point, "BIZON_FAST_FAULT_MARK": str(tmp_path / "fault.mark")}
    killed = run(tmp_path, config, env)
    assert (tmp_path / "fault.mark").exists(), f"{fault} was never reached: {killed.stderr}"
    if killed.returncode != 0:  # the supervisor died: the rerun resumes the job
        rerun = run(tmp_path, config)
        assert rerun.returncode == 0, rerun.stderr
    assert counts(pg_admin, schema) == (rows + 5, rows + 5, 3_005)
    assert matches_source(pg_admin, schema)
    assert one(pg_admin, f"SELECT count(*) FROM {schema}.bizon_fast_destination_cursors")[0] == 0
    stages = one(pg_admin, f"SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' AND tablename LIKE 'dst__%'")
    assert stages[0] == 0


def dst_types(admin, schema: str) -> dict[str, str]:  # noqa: ANN001
    return dict(
        admin.execute(
            "SELECT column_name, data_type || coalesce('(' || numeric_precision || ',' || numeric_scale || ')', '')"
            " FROM information_schema.columns WHERE table_schema = %s AND table_name = 'dst'",
            (schema,),
        ).fetchall()
    )


def test_soft_deletes_then_a_column_added_and_widened_then_an_incompatible_change(
    pg_admin, schema, tmp_path: Path
) -> None:
    """Three runs on one table: soft deletes remove their keys (and new ones are merged); a column added and
    two widened at the source are added / widened in the destination, old rows NULL; then a text column that
    became an integer fails the run with one line, and the table is left as it was."""
    make_source(pg_admin, schema, 20_000)
    config = write_config(tmp_path, schema, dest_extra=", deleted_flag: deleted")
    assert run(tmp_path, config).returncode == 0
    update(pg_admin, schema, "id <= 300", "deleted = true")
    update(pg_admin, schema, "id BETWEEN 301 AND 310")
    pg_admin.execute(f"ALTER TABLE {schema}.src ADD COLUMN extra text")
    pg_admin.execute(f"ALTER TABLE {schema}.src ALTER COLUMN n TYPE bigint, ALTER COLUMN amount TYPE numeric(14,4)")
    update(pg_admin, schema, "id BETWEEN 400 AND 499", "extra = 'x' || id, n = 5000000000 + id, amount = 123456.7891")
    done = run(tmp_path, config)
    assert done.returncode == 0, done.stderr
    assert counts(pg_admin, schema) == (19_700, 19_700, 10)
    assert one(pg_admin, f"SELECT count(*) FROM {schema}.dst WHERE id <= 300")[0] == 0
    types = dst_types(pg_admin, schema)
    assert types["extra"] == "text" and types["n"].startswith("bigint") and types["amount"] == "numeric(14,4)"
    assert one(pg_admin, f"SELECT count(extra), max(n) FROM {schema}.dst") == (100, 5_000_000_499)
    assert one(pg_admin, f"SELECT count(*) FROM {schema}.dst WHERE extra IS NULL")[0] == 19_600
    pg_admin.execute(f"DELETE FROM {schema}.src WHERE deleted")
    assert matches_source(pg_admin, schema)
    log = "\n".join(p.read_text() for p in (tmp_path / "logs").rglob("*") if p.is_file())
    assert "added column extra text (old rows NULL)" in log
    assert "widened column n from integer to bigint" in log
    assert "widened column amount from numeric(8,2) to numeric(14,4)" in log

    before = one(pg_admin, f"SELECT count(*), sum(hashtext(v)), max(updated_at) FROM {schema}.dst")
    pg_admin.execute(f"ALTER TABLE {schema}.src ALTER COLUMN v TYPE integer USING length(v)")
    update(pg_admin, schema, "id BETWEEN 1000 AND 1049", "v = 7")
    done = run(tmp_path, config)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "changed type incompatibly" in line]
    assert len(lines) == 1, done.stderr
    assert "column 'v'" in lines[0] and "the table has text" in lines[0] and "int32" in lines[0], lines[0]
    assert one(pg_admin, f"SELECT count(*), sum(hashtext(v)), max(updated_at) FROM {schema}.dst") == before
    assert dst_types(pg_admin, schema)["v"] == "text"


def test_freeze_drops_new_columns_and_fail_refuses_a_change(pg_admin, schema, tmp_path: Path) -> None:
    make_source(pg_admin, schema, 3_000)
    config = write_config(tmp_path, schema, splits=1, dest_extra=", schema_evolution: freeze")
    assert run(tmp_path, config).returncode == 0
    pg_admin.execute(f"ALTER TABLE {schema}.src ADD COLUMN extra text")
    update(pg_admin, schema, "id <= 10", "extra = 'x', v = 'changed-' || id")
    done = run(tmp_path, config)
    assert done.returncode == 0, done.stderr
    assert "extra" not in dst_types(pg_admin, schema) and counts(pg_admin, schema) == (3_000, 3_000, 10)
    config = write_config(tmp_path, schema, splits=1, dest_extra=", schema_evolution: fail")
    update(pg_admin, schema, "id <= 20", "extra = 'y', v = 'changed-' || id")
    done = run(tmp_path, config)
    assert done.returncode != 0
    assert "column 'extra' (text) is new (schema_evolution: fail); nothing was published" in done.stderr
    assert counts(pg_admin, schema) == (3_000, 3_000, 10)


def test_merge_without_a_key_fails_before_publishing(pg_admin, schema, tmp_path: Path) -> None:
    make_source(pg_admin, schema, 2_000, pk=False)
    # two versions of keys 1..100 in one job: the later updated_at wins, wherever it lies in the table
    pg_admin.execute(
        f"INSERT INTO {schema}.src SELECT id, 'old', n, amount, deleted, updated_at - interval '1 day'"
        f" FROM {schema}.src WHERE id <= 100"
    )
    update(pg_admin, schema, "id <= 100 AND v <> 'old'")
    pg_admin.execute(f"VACUUM ANALYZE {schema}.src")
    done = run(tmp_path, write_config(tmp_path, schema, splits=1))
    assert done.returncode != 0
    assert "destination.config.primary_key: merge needs a key" in done.stderr
    assert one(pg_admin, f"SELECT to_regclass('{schema}.dst')")[0] is None
    # configured, the key works without the source's
    done = run(tmp_path, write_config(tmp_path, schema, splits=1, dest_extra=", primary_key: [id]"))
    assert done.returncode == 0, done.stderr
    assert counts(pg_admin, schema) == (2_000, 2_000, 100)


def test_an_existing_table_without_a_unique_key_is_refused(pg_admin, schema, tmp_path: Path) -> None:
    make_source(pg_admin, schema, 1_000)
    pg_admin.execute(f"CREATE TABLE {schema}.dst AS SELECT * FROM {schema}.src")
    done = run(tmp_path, write_config(tmp_path, schema))
    assert done.returncode != 0
    assert "merge needs a primary key or unique index on (id)" in done.stderr, done.stderr
    assert one(pg_admin, f"SELECT count(*) FROM {schema}.dst")[0] == 1_000


@pytest.mark.parametrize(
    ("target", "arrow", "verdict", "stage_type"),
    [
        ((23, -1, "integer"), pa.int64(), "widen", "bigint"),
        ((20, -1, "bigint"), pa.int32(), "keep", "bigint"),
        ((700, -1, "real"), pa.float64(), "widen", "double precision"),
        ((1700, (8 << 16) + 2 + 4, "numeric(8,2)"), pa.decimal128(14, 4), "widen", "numeric(14,4)"),
        ((1700, (8 << 16) + 2 + 4, "numeric(8,2)"), pa.decimal128(5, 2), "keep", "numeric(8,2)"),
        ((1043, 20 + 4, "character varying(20)"), pa.string(), "keep", "text"),
        ((25, -1, "text"), pa.int32(), "incompatible", "text"),
        ((23, -1, "integer"), pa.string(), "incompatible", "integer"),
        ((23, -1, "integer"), pa.float64(), "incompatible", "integer"),
        ((3802, -1, "jsonb"), pa.struct([("a", pa.int8())]), "keep", "jsonb"),
        ((25, -1, "text"), pa.null(), "keep", "text"),
    ],
)
def test_evolution_rules(target, arrow, verdict: str, stage_type: str) -> None:  # noqa: ANN001
    from bizon_fast.connectors.destinations.postgres.evolution import decide, widens

    oid, typmod, sqltype = target
    decision = decide(oid, typmod, sqltype, 0, arrow)
    assert (decision.verdict, decision.stage_type) == (verdict, stage_type)
    assert widens((23, -1), (20, -1)) and not widens((20, -1), (23, -1)) and not widens((25, -1), (23, -1))


def _run_direct(schema: str, job: str, sync_mode: str, batches: list[pa.RecordBatch], **config: object) -> None:
    details = {"dsn": DSN, "destination_id": f"{schema}.dst", **config}
    run_job("postgres", details, job=job, sync_mode=sync_mode, batches=batches, cursor_field="u")


MERGE = {"write_disposition": "merge", "primary_key": ["id"], "deleted_flag": "gone"}


def test_merge_edge_rules_match_bigquery_and_file(pg_admin, schema) -> None:
    """A full refresh with merge rebuilds the table from the job's rows (one per key, the deleted dropped); a NULL
    key and a non-boolean deleted_flag fail in one line, nothing published; freeze refuses a widening; an explicit
    append / replace overrides the sync mode."""
    from bizon_fast.errors import UserError

    def rows() -> list[tuple]:
        return pg_admin.execute(f"SELECT id, v FROM {schema}.dst ORDER BY id, v").fetchall()

    def b(ids: list, v: list[str], gone: list | None = None, n: pa.Array | None = None) -> pa.RecordBatch:
        n = n if n is not None else pa.array([1] * len(ids), pa.int32())
        gone = gone or [False] * len(ids)
        return pa.record_batch({"id": pa.array(ids, pa.int64()), "u": [1] * len(ids), "v": v, "n": n, "gone": gone})

    _run_direct(schema, "j1", "incremental", [b([1, 2, 3], ["a", "b", "c"])], **MERGE)
    assert rows() == [(1, "a"), (2, "b"), (3, "c")]
    _run_direct(
        schema, "j2", "full_refresh", [b([2, 2, 4, 5], ["x", "y", "d", "e"], [False, False, False, True])], **MERGE
    )
    assert rows() == [(2, "y"), (4, "d")]
    with pytest.raises(UserError, match=r"primary_key: 2 rows have a NULL in the merge key \(id\); nothing was"):
        _run_direct(schema, "j3", "incremental", [b([None, 6, None], ["n", "f", "n"])], **MERGE)
    strings = pa.record_batch({"id": [7], "u": [1], "v": ["g"], "n": pa.array([1], pa.int32()), "gone": ["yes"]})
    with pytest.raises(UserError, match=r"deleted_flag: column 'gone' is string, a boolean is needed; nothing was"):
        _run_direct(schema, "j4", "incremental", [strings], **MERGE)
    # freeze keeps the table's types: a widening (integer -> bigint) fails; evolve applies it
    wide = b([2], ["z"], n=pa.array([1 << 40], pa.int64()))
    with pytest.raises(UserError, match=r"column 'n' changed type: integer -> bigint .*freeze\); nothing was"):
        _run_direct(schema, "j5", "incremental", [wide], **MERGE, schema_evolution="freeze")
    assert rows() == [(2, "y"), (4, "d")]
    _run_direct(schema, "j6", "full_refresh", [b([9], ["i"])], write_disposition="append")
    assert rows() == [(2, "y"), (4, "d"), (9, "i")]
    _run_direct(schema, "j7", "incremental", [b([8], ["h"])], write_disposition="replace")
    assert rows() == [(8, "h")]
