"""The file destination's merge (issue 16): Parquet snapshots merged by key, soft deletes, schema evolution.

Through the CLI, from a real Postgres table read incrementally by ``updated_at`` into a Parquet dataset with
``write_disposition: merge``: changed rows merged exactly, soft deletes, a column added and one widened, an
incompatible change that fails publishing nothing, and a supervisor SIGKILLed at each step of the merge's
publish (a rerun: exact).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bizon_fast.connectors.destinations.file.merge import MergeSpec, latest_per_key, unify, widens
from bizon_fast.errors import StepFailed
from tests.direct import run_job

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
ROWS = 50_000


def make_source(admin, schema: str, rows: int = ROWS) -> None:  # noqa: ANN001 - psycopg.Connection
    admin.execute(
        f"CREATE TABLE {schema}.src (id bigint PRIMARY KEY, v text, n integer, deleted boolean NOT NULL DEFAULT false,"
        " updated_at timestamptz)"
    )
    admin.execute(
        f"INSERT INTO {schema}.src SELECT g, md5(g::text), g %% 1000, false,"
        " timestamptz '2024-01-01' + g * interval '1 s' FROM generate_series(1, %s) g",
        (rows,),
    )
    admin.execute(f"ANALYZE {schema}.src")


def write_pipeline(
    tmp_path: Path,
    schema: str,
    extra: str = "",
    *,
    merge: str = "write_disposition: merge, primary_key: [id], deleted_flag: deleted",
    table: str = "src",
) -> str:
    (tmp_path / "pipeline.yml").write_text(
        f"""
name: pg2parquet-merge
source: {{name: postgres, stream: {schema}.{table}, dsn: "{DSN}", splits: 4, chunk_rows: 5000,
          sync_mode: incremental, cursor_field: updated_at}}
destination:
  name: file
  config: {{destination_id: out/src, format: parquet, buffer_size: 1, {merge}{extra}}}
engine:
  runner: {{config: {{max_workers: 2}}}}
"""
    )
    return "pipeline.yml"


def dataset(tmp_path: Path) -> pa.Table:
    return ds.dataset(tmp_path / "out" / "src", format="parquet").to_table().sort_by("id")


def expected(admin, schema: str, columns: str = "id, v, n") -> list[tuple]:  # noqa: ANN001
    return admin.execute(f"SELECT {columns} FROM {schema}.src WHERE NOT deleted ORDER BY id").fetchall()


def rows_of(table: pa.Table, columns: list[str]) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))


def change_rows(admin, schema: str, round_: int) -> None:  # noqa: ANN001
    """1,000 rows updated, 100 soft-deleted, 500 inserted, all with a later updated_at."""
    later = f"timestamptz '2030-01-01' + interval '{round_} day'"
    admin.execute(f"UPDATE {schema}.src SET v = 'new{round_}', updated_at = {later} WHERE id % 50 = {round_}")
    admin.execute(f"UPDATE {schema}.src SET deleted = true, updated_at = {later} WHERE id % 500 = {round_ + 7}")
    start = ROWS + round_ * 1000
    admin.execute(
        f"INSERT INTO {schema}.src (id, v, n, updated_at) SELECT g, 'ins', 1, {later}"
        f" FROM generate_series({start + 1}, {start + 500}) g"
    )


def test_incremental_merge_updates_deletes_and_inserts_exactly(pg_admin, pg_schema, cli, tmp_path: Path) -> None:
    make_source(pg_admin, pg_schema)
    config = write_pipeline(tmp_path, pg_schema)
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    assert dataset(tmp_path).num_rows == ROWS
    change_rows(pg_admin, pg_schema, 1)
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    table = dataset(tmp_path)
    assert table.num_rows == ROWS - 100 + 500
    assert pc.count_distinct(table.column("id")).as_py() == table.num_rows
    assert rows_of(table, ["id", "v", "n"]) == expected(pg_admin, pg_schema)
    assert pc.sum(pc.equal(table.column("v"), "new1")).as_py() == 1000
    assert not pc.any(table.column("deleted")).as_py()
    # a run with nothing new keeps the dataset as it is
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    assert rows_of(dataset(tmp_path), ["id", "v", "n"]) == expected(pg_admin, pg_schema)
    assert not list((tmp_path / "out").glob(".src.bizon-fast/*")), "staging left behind"


def test_column_added_and_widened_then_an_incompatible_change_publishes_nothing(
    pg_admin, pg_schema, cli, tmp_path: Path
) -> None:
    make_source(pg_admin, pg_schema)
    config = write_pipeline(tmp_path, pg_schema)
    assert cli("run", config, "--quiet").returncode == 0
    pg_admin.execute(f"ALTER TABLE {pg_schema}.src ADD COLUMN score double precision, ALTER COLUMN n TYPE bigint")
    pg_admin.execute(
        f"UPDATE {pg_schema}.src SET score = id / 2.0, n = 5000000000 + id,"
        " updated_at = timestamptz '2031-01-01' WHERE id % 100 = 0"
    )
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    table = dataset(tmp_path)
    assert table.schema.field("n").type == pa.int64() and table.schema.field("score").type == pa.float64()
    files = sorted((tmp_path / "out" / "src").glob("*.parquet"))
    assert {str(pq.read_schema(f).field("n").type) for f in files} == {"int64"}, "one unified schema"
    assert rows_of(table, ["id", "n", "score"]) == expected(pg_admin, pg_schema, "id, n, score")
    assert table.column("score").null_count == ROWS - ROWS // 100  # old rows: null
    log = "\n".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log"))
    assert "column 'score' added (double)" in log and "column 'n' widened from int32 to int64" in log

    before = {f.name: f.read_bytes() for f in (tmp_path / "out" / "src").iterdir()}
    pg_admin.execute(f"ALTER TABLE {pg_schema}.src ALTER COLUMN v TYPE integer USING length(v)")
    pg_admin.execute(f"UPDATE {pg_schema}.src SET updated_at = timestamptz '2032-01-01' WHERE id % 100 = 1")
    done = cli("run", config, "--quiet")
    assert done.returncode == 1
    lines = [line for line in (done.stderr + done.stdout).splitlines() if "column 'v'" in line]
    assert lines and "string" in lines[0] and "int32" in lines[0] and "incompatible" in lines[0], done.stderr
    after = {f.name: f.read_bytes() for f in (tmp_path / "out" / "src").iterdir()}
    assert after == before, "an incompatible change published something"


@pytest.mark.parametrize("point", ["file.merge_building", "file.merge_built", "file.publish"])
def test_supervisor_killed_during_the_merge_then_rerun_is_exact(
    pg_admin, pg_schema, cli, tmp_path: Path, point: str
) -> None:
    make_source(pg_admin, pg_schema)
    config = write_pipeline(tmp_path, pg_schema)
    assert cli("run", config, "--quiet").returncode == 0
    change_rows(pg_admin, pg_schema, 2)
    env = {"BIZON_FAST_FAULT": point, "BIZON_FAST_FAULT_MARK": str(tmp_path / "fault.mark")}
    killed = cli("run", config, "--quiet", env=env)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    done = cli("run", config, "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    table = dataset(tmp_path)
    assert table.num_rows == ROWS - 100 + 500
    assert rows_of(table, ["id", "v", "n"]) == expected(pg_admin, pg_schema)
    assert not list((tmp_path / "out").glob(".src.bizon-fast/*")), "staging left behind"


def test_key_from_the_source_catalog_and_a_table_without_one(pg_admin, pg_schema, cli, tmp_path: Path) -> None:
    """No primary_key configured: the Postgres source's primary key (schema metadata) is the key; a table
    without one fails the job in one line, publishing nothing."""
    make_source(pg_admin, pg_schema)
    config = write_pipeline(tmp_path, pg_schema, merge="write_disposition: merge, deleted_flag: deleted")
    assert cli("run", config, "--quiet").returncode == 0
    change_rows(pg_admin, pg_schema, 3)
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    assert rows_of(dataset(tmp_path), ["id", "v", "n"]) == expected(pg_admin, pg_schema)

    pg_admin.execute(f"CREATE TABLE {pg_schema}.nokey AS SELECT * FROM {pg_schema}.src LIMIT 100")
    other = tmp_path / "nokey"
    other.mkdir()
    config = write_pipeline(other, pg_schema, merge="write_disposition: merge", table="nokey")
    done = cli("run", str(other / config), "--quiet")
    assert done.returncode == 1
    assert "destination.config.primary_key: merge needs a key" in done.stderr + done.stdout, done.stderr
    assert not (other / "out" / "src").exists(), "a job without a key published something"


def test_incremental_append_evolves_the_schema_too(pg_admin, pg_schema, cli, tmp_path: Path) -> None:
    """Without merge, a new column still gives the dataset one schema: the old files are cast, old rows null."""
    make_source(pg_admin, pg_schema)
    config = write_pipeline(tmp_path, pg_schema, merge="write_disposition: append")
    assert cli("run", config, "--quiet").returncode == 0
    pg_admin.execute(f"ALTER TABLE {pg_schema}.src ADD COLUMN score real")
    pg_admin.execute(f"UPDATE {pg_schema}.src SET score = 1.5, updated_at = '2031-01-01' WHERE id % 100 = 0")
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    table = dataset(tmp_path)
    assert table.num_rows == ROWS + ROWS // 100  # appended: the changed rows twice
    files = sorted((tmp_path / "out" / "src").glob("*.parquet"))
    assert len({pq.read_schema(f).names.__len__() for f in files}) == 1, "one unified schema"
    assert pc.sum(pc.equal(table.column("score"), 1.5)).as_py() == ROWS // 100


def test_json_merge_is_refused_in_one_line(cli, tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(
        """
name: j
source: {name: synthetic, stream: events, rows: 10}
destination: {name: file, config: {destination_id: out, format: json, write_disposition: merge, primary_key: [id]}}
"""
    )
    done = cli("config", "validate", "p.yml")
    assert done.returncode == 1
    assert "merge needs format: parquet" in done.stdout + done.stderr


def test_last_version_per_key_by_cursor_then_arrival() -> None:
    staged = pa.table(
        {
            "id": [1, 2, 1, 3, 2, 1],
            "at": [5, 1, 3, 1, 1, None],
            "v": ["a", "b", "c", "d", "e", "f"],
        }
    )
    last = latest_per_key(staged, MergeSpec(keys=["id"], cursor_field="at", deleted_flag=None))
    assert sorted(rows_of(last, ["id", "v"])) == [(1, "a"), (2, "e"), (3, "d")]
    by_arrival = latest_per_key(staged, MergeSpec(keys=["id"], cursor_field=None, deleted_flag=None))
    assert sorted(rows_of(by_arrival, ["id", "v"])) == [(1, "f"), (2, "e"), (3, "d")]


def test_schema_rules() -> None:
    assert widens(pa.int32(), pa.int64()) and widens(pa.float32(), pa.float64())
    assert widens(pa.decimal128(10, 2), pa.decimal128(20, 2)) and not widens(pa.decimal128(10, 2), pa.decimal128(20, 3))
    assert not widens(pa.int64(), pa.int32()) and not widens(pa.string(), pa.int64())
    old = pa.schema([("id", pa.int64()), ("n", pa.int32())])
    new = pa.schema([("id", pa.int32()), ("n", pa.int64()), ("extra", pa.string())])
    plan = unify(old, new, "evolve", Path("t"))
    assert plan.schema == pa.schema([("id", pa.int64()), ("n", pa.int64()), ("extra", pa.string())])
    assert unify(old, pa.schema([("id", pa.int64()), ("extra", pa.string())]), "freeze", Path("t")).schema == old
    with pytest.raises(StepFailed, match="'n' widens from int32 to int64 and schema_evolution is fail"):
        unify(old, new, "fail", Path("t"))
    with pytest.raises(StepFailed, match="'extra'.*new at the source and schema_evolution is fail"):
        unify(old, pa.schema([("extra", pa.string())]), "fail", Path("t"))
    with pytest.raises(StepFailed, match="'n' is int32 in t and string"):
        unify(old, pa.schema([("n", pa.string())]), "evolve", Path("t"))


def _run_direct(base: Path, job: str, sync_mode: str, batches: list[pa.RecordBatch], **config: object) -> None:
    details = {"destination_id": "out/src", "format": "parquet", "base_dir": str(base), **config}
    run_job("file", details, job=job, sync_mode=sync_mode, batches=batches, cursor_field="u")


MERGE = {"write_disposition": "merge", "primary_key": ["id"], "deleted_flag": "gone"}


def test_merge_edge_rules_match_postgres_and_bigquery(tmp_path: Path) -> None:
    """A full refresh with merge rebuilds the dataset from the job's rows (one per key, the deleted dropped); a
    NULL key and a non-boolean deleted_flag fail in one line, nothing published; freeze refuses a widening; an
    explicit append / replace overrides the sync mode."""

    def rows() -> list[tuple]:
        return sorted(rows_of(dataset(tmp_path), ["id", "v"]))

    def b(ids: list, v: list[str], gone: list | None = None, n: pa.Array | None = None) -> pa.RecordBatch:
        n = n if n is not None else pa.array([1] * len(ids), pa.int32())
        gone = gone or [False] * len(ids)
        return pa.record_batch({"id": pa.array(ids, pa.int64()), "u": [1] * len(ids), "v": v, "n": n, "gone": gone})

    _run_direct(tmp_path, "j1", "incremental", [b([1, 2, 3], ["a", "b", "c"])], **MERGE)
    assert rows() == [(1, "a"), (2, "b"), (3, "c")]
    _run_direct(
        tmp_path, "j2", "full_refresh", [b([2, 2, 4, 5], ["x", "y", "d", "e"], [False, False, False, True])], **MERGE
    )
    assert rows() == [(2, "y"), (4, "d")]
    with pytest.raises(StepFailed, match=r"primary_key: 2 rows have a NULL in the merge key \(id\); nothing was"):
        _run_direct(tmp_path, "j3", "incremental", [b([None, 6, None], ["n", "f", "n"])], **MERGE)
    with pytest.raises(StepFailed, match=r"primary_key: 1 rows have a NULL in the merge key \(id\)"):
        _run_direct(tmp_path, "j3f", "full_refresh", [b([None, 6], ["n", "f"])], **MERGE)
    strings = pa.record_batch({"id": [7], "u": [1], "v": ["g"], "n": pa.array([1], pa.int32()), "gone": ["yes"]})
    with pytest.raises(StepFailed, match=r"deleted_flag: column 'gone' is string, a boolean is needed; nothing was"):
        _run_direct(tmp_path, "j4", "incremental", [strings], **MERGE)
    wide = b([2], ["z"], n=pa.array([1 << 40], pa.int64()))
    with pytest.raises(StepFailed, match=r"column 'n' widens from int32 to int64 and schema_evolution is freeze"):
        _run_direct(tmp_path, "j5", "incremental", [wide], **MERGE, schema_evolution="freeze")
    assert rows() == [(2, "y"), (4, "d")]
    _run_direct(tmp_path, "j6", "full_refresh", [b([9], ["i"])], write_disposition="append")
    assert rows() == [(2, "y"), (4, "d"), (9, "i")]
    _run_direct(tmp_path, "j7", "incremental", [b([8], ["h"])], write_disposition="replace")
    assert rows() == [(8, "h")]
