"""Postgres end to end against the real server: checkpoint backend, source, destination, CLI and faults.

Every test works in a schema of its own (``bf_test_<random>``), dropped afterwards. Without a server
on 127.0.0.1:5432 the tests skip (and fail in CI, see ``need_service``).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from bizon_fast.checkpoint.base import JobStatus
from bizon_fast.config.engine import PostgresBackendDetails
from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.destinations.postgres.config import PostgresDestinationDetails
from bizon_fast.connectors.destinations.postgres.destination import PostgresDestination, stage_name
from bizon_fast.connectors.destinations.postgres.pgbinary import Encoder, PgColumn, ddl_type
from bizon_fast.connectors.registry import destination_class, source_class
from bizon_fast.connectors.sources.postgres.source import PostgresSource
from bizon_fast.cursor import Cursor
from bizon_fast.destination.base import DestinationContext
from bizon_fast.errors import UserError
from bizon_fast.source.records import records_to_batch
from native_bench.services import start_run
from tests.faults import kill_workers_randomly

pytestmark = pytest.mark.service

HOST, PORT, DATABASE, USER = "127.0.0.1", 5432, "test", "postgres"
DSN = f"host={HOST} port={PORT} user={USER} dbname={DATABASE}"


@pytest.fixture
def admin(pg_admin):  # noqa: ANN001, ANN201 - psycopg.Connection
    """The session's Postgres connection (``tests/services/postgres.py``), under this module's name."""
    return pg_admin


@pytest.fixture
def schema(pg_admin, pg_schema: str) -> Iterator[str]:  # noqa: ANN001 - psycopg.Connection
    """A fresh schema (``pg_schema``); the checkpoint backend's ``<schema>_ckpt`` is dropped with it."""
    yield pg_schema
    pg_admin.execute(f"DROP SCHEMA IF EXISTS {pg_schema}_ckpt CASCADE")


def scalar(admin, sql: str, params=None):
    return admin.execute(sql, params).fetchone()[0]


def source(schema: str, stream: str = "src", **kw) -> PostgresSource:
    cls = source_class("postgres", f"{schema}.{stream}")
    return cls(SourceConfig(name="postgres", stream=f"{schema}.{stream}", dsn=DSN, **kw))


def read_all(src: PostgresSource) -> pa.Table:
    batches = [b.batch for split in src.splits() for b in src.read(split, None)]
    return pa.Table.from_batches(batches) if batches else pa.table({})


def dest(schema: str, table: str = "dst", job: str = "job-1", mode: str = "full_refresh", **kw) -> PostgresDestination:
    ctx = DestinationContext(job_id=job, pipeline="p", source_name="postgres", stream="s", sync_mode=mode)
    cls = destination_class("postgres")
    return cls(cls.config_class.model_validate({"dsn": DSN, "destination_id": f"{schema}.{table}", **kw}), ctx)


def make_ids(admin, schema: str, rows: int, table: str = "src", pk: bool = True, step: int = 1) -> None:
    key = "PRIMARY KEY" if pk else ""
    admin.execute(f"CREATE TABLE {schema}.{table} (id bigint {key}, v text, updated_at timestamptz)")
    admin.execute(
        f"INSERT INTO {schema}.{table} SELECT g * {step}, md5(g::text), timestamptz '2024-01-01' + g * interval '1 s'"
        " FROM generate_series(1, %s) g",
        (rows,),
    )
    admin.execute(f"ANALYZE {schema}.{table}")


def ids_of(admin, schema: str, table: str = "dst") -> tuple[int, int, int, int]:
    return admin.execute(f"SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {schema}.{table}").fetchone()


# ---------------------------------------------------------------- checkpoint backend


def backend(schema: str, **kw):
    from bizon_fast.checkpoint.postgres import PostgresBackend

    details = {"host": HOST, "port": PORT, "database": DATABASE, "username": USER, "schema": f"{schema}_ckpt", **kw}
    b = PostgresBackend(PostgresBackendDetails.model_validate(details))
    b.open()
    return b


def new_job(b, name: str = "pipe"):
    return b.create_job(
        name=name, source_name="postgres", stream_name="s", sync_mode="full_refresh", fingerprint="fp", total_rows=10
    )


def test_backend_jobs_cursors_watermarks_in_its_own_schema(admin, schema) -> None:
    b = backend(schema)
    try:
        assert scalar(admin, "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}_ckpt.bizon_fast_jobs",))
        job = new_job(b)
        assert job.status == "running" and job.attempt == 1 and job.total_rows == 10
        assert b.find_unfinished_job("pipe", "postgres", "s").id == job.id
        b.commit_cursors(job.id, [Cursor(split_id="a", seq=3, position=[7, 0], rows=30), Cursor(split_id="b")])
        b.commit_cursors(job.id, [Cursor(split_id="a", seq=4, position=[9, 0], rows=40, done=True)])
        cursors = b.load_cursors(job.id)
        assert cursors["a"] == Cursor(split_id="a", seq=4, position=[9, 0], rows=40, done=True)
        assert cursors["b"].seq == -1
        b.set_job_status(job.id, JobStatus.FAILED, "boom")
        again = b.start_attempt(job.id)
        assert again.status == "running" and again.attempt == 2 and again.error is None
        b.set_job_status(job.id, JobStatus.SUCCEEDED)
        assert b.last_succeeded_job("pipe", "postgres", "s").id == job.id
        assert b.find_unfinished_job("pipe", "postgres", "s") is None
        assert b.get_watermark("pipe", "postgres", "s") is None
        b.set_watermark("pipe", "postgres", "s", b"\x01", job.id)
        b.set_watermark("pipe", "postgres", "s", b"\x02", job.id)
        assert b.get_watermark("pipe", "postgres", "s") == b"\x02"
    finally:
        b.close()


def test_backend_one_live_run_per_job_and_pipeline(schema, monkeypatch) -> None:
    monkeypatch.setattr("bizon_fast.checkpoint.postgres.LOCK_WAIT_S", 0.5)
    first, second = backend(schema), backend(schema)
    try:
        job = new_job(first)
        with pytest.raises(UserError, match="already running"):
            new_job(second)  # a second live run of the same pipeline
        with pytest.raises(UserError, match="another live bizon-fast process"):
            second.start_attempt(job.id)
        first.close()  # the run died: its lock goes with its connection
        resumed = second.start_attempt(job.id)
        assert resumed.id == job.id and resumed.attempt == 2
        other = new_job(second, name="other-pipe")  # other pipelines share the backend freely
        assert other.id != job.id
    finally:
        first.close()
        second.close()


def test_backend_supersedes_a_dead_runs_job(schema) -> None:
    dead = backend(schema)
    old = new_job(dead)
    dead.close()  # killed: the job stays 'running', but its lock is gone
    b = backend(schema)
    try:
        fresh = new_job(b)  # e.g. after a config change
        assert fresh.id != old.id and fresh.status == "running"
        assert b.get_job(old.id).status == "cancelled"
    finally:
        b.close()


def test_backend_reconnects_after_losing_its_connection(admin, schema) -> None:
    b = backend(schema)
    try:
        job = new_job(b)
        admin.execute("SELECT pg_terminate_backend(%s)", (b.conn.info.backend_pid,))
        b.commit_cursors(job.id, [Cursor(split_id="a", seq=1, rows=5)])
        assert b.load_cursors(job.id)["a"].seq == 1
        held = scalar(
            admin,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s AND granted",
            (b.conn.info.backend_pid,),
        )
        assert held == 1, "the job lock is taken again on the new connection"
    finally:
        b.close()


def test_backend_unreachable_server_is_one_line_naming_the_key() -> None:
    from bizon_fast.checkpoint.factory import create_backend
    from bizon_fast.config.engine import BackendConfig

    cfg = BackendConfig.model_validate(
        {"type": "postgres", "config": {"host": "127.0.0.1", "port": 1, "username": "postgres"}}
    )
    with pytest.raises(UserError) as err:
        create_backend(cfg).open()
    message = str(err.value)
    assert message.startswith("engine.backend: cannot connect to PostgreSQL at 127.0.0.1:1/") and "\n" not in message


# ---------------------------------------------------------------- source

TYPES_DDL = """
CREATE TABLE {s}.types (
    id int PRIMARY KEY, i2 smallint, i4 int, i8 bigint, f4 real, f8 double precision,
    n numeric(10,2), nu numeric, nbig numeric(50,5), t text, vc varchar(20), ch char(5),
    b bool, d date, ts timestamp, tstz timestamptz, tm time, j json, jb jsonb, u uuid, by bytea,
    ai int[], at text[], an numeric(8,3)[], ad date[], atz timestamptz[], af float8[], iv interval
);
INSERT INTO {s}.types VALUES
 (1, -32768, 2147483647, -9223372036854775808, 1.5, 'NaN', -12345678.91, 1.000000000000000000001,
  123456789012345678901234567890.12345, 'héllo "q" ,\n line', '', 'ab', true, '1999-12-31',
  '2024-02-29 12:34:56.789012', '1970-01-01 00:00:00.000001+00', '23:59:59.999999', '{"a": [1, 2]}',
  '{"b": null, "a": 1}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', '{1,NULL,3}',
  '{"x,y","q\\"uote",NULL,""}', '{1.500,-2.250}', '{2024-01-01}', '{"2024-01-01 10:00:00+02"}',
  '{NaN,1.5,-Infinity}', '1 day 02:03:04'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 0, 0, 0, 0, -0.0, 0, 0, 0, 'x', 'y', 'zzzzz', false, '2000-01-01', '2000-01-01', '2000-01-01', '00:00', '1',
  '[]', '00000000-0000-0000-0000-000000000000', '\\x', '{}', '{}', '{}', '{}', '{}', '{}', '0')
"""


def types_table(admin, schema: str) -> None:
    for statement in TYPES_DDL.replace("{s}", schema).split(";\n"):
        admin.execute(statement)


def test_source_maps_every_type_with_nulls_and_arrays(admin, schema) -> None:
    types_table(admin, schema)
    table = read_all(source(schema, "types")).sort_by("id")
    expected_types = {
        "i2": pa.int16(),
        "i4": pa.int32(),
        "i8": pa.int64(),
        "f4": pa.float32(),
        "f8": pa.float64(),
        "n": pa.decimal128(10, 2),
        "nu": pa.string(),
        "nbig": pa.string(),
        "t": pa.string(),
        "ch": pa.string(),
        "b": pa.bool_(),
        "d": pa.date32(),
        "ts": pa.timestamp("us"),
        "tstz": pa.timestamp("us", tz="UTC"),
        "tm": pa.time64("us"),
        "j": pa.string(),
        "jb": pa.string(),
        "u": pa.string(),
        "by": pa.binary(),
        "ai": pa.list_(pa.int32()),
        "at": pa.list_(pa.string()),
        "an": pa.list_(pa.decimal128(8, 3)),
        "ad": pa.list_(pa.date32()),
        "atz": pa.list_(pa.timestamp("us", tz="UTC")),
        "af": pa.list_(pa.float64()),
        "iv": pa.string(),
    }
    for name, kind in expected_types.items():
        assert table.schema.field(name).type == kind, name
    assert not table.schema.field("id").nullable and table.schema.field("i2").nullable
    first, empty, zero = table.to_pylist()
    assert first["i8"] == -(2**63) and first["i4"] == 2**31 - 1 and first["i2"] == -(2**15)
    assert first["f4"] == 1.5 and first["f8"] != first["f8"]  # NaN
    assert first["n"] == Decimal("-12345678.91") and first["nu"] == "1.000000000000000000001"
    assert first["nbig"] == "123456789012345678901234567890.12345"
    assert first["t"] == 'héllo "q" ,\n line' and first["vc"] == "" and first["ch"] == "ab"
    assert first["b"] is True and first["d"] == date(1999, 12, 31)
    assert first["ts"] == datetime(2024, 2, 29, 12, 34, 56, 789012)
    assert first["tstz"] == datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert str(first["tm"]) == "23:59:59.999999"
    assert first["j"] == '{"a": [1, 2]}' and first["jb"] == '{"a": 1, "b": null}'
    assert first["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" and first["by"] == b"\x00\xff\x10"
    assert first["ai"] == [1, None, 3] and first["at"] == ["x,y", 'q"uote', None, ""]
    assert first["an"] == [Decimal("1.500"), Decimal("-2.250")] and first["ad"] == [date(2024, 1, 1)]
    assert first["atz"] == [datetime(2024, 1, 1, 8, tzinfo=UTC)]
    assert first["af"][1:] == [1.5, float("-inf")] and first["af"][0] != first["af"][0]
    assert first["iv"] == "1 day 02:03:04"
    assert all(v is None for k, v in empty.items() if k != "id")
    assert zero["ai"] == [] and zero["by"] == b"" and zero["b"] is False and zero["jb"] == "[]"


def test_source_key_ranges_read_every_row_once_and_resume(admin, schema) -> None:
    make_ids(admin, schema, 20_000, step=3)  # ids with gaps: 3, 6, ... 60000
    src = source(schema, splits=6, chunk_rows=700)
    splits = src.splits()
    assert len(splits) == 6 and all(s.id.startswith("key") for s in splits)
    ids = read_all(src).column("id").to_pylist()
    assert sorted(ids) == list(range(3, 60_001, 3))
    # resume the third split after its second batch: the rest, and nothing twice
    batches = list(src.read(splits[2], None))
    resumed = [b.batch for b in src.read(splits[2], batches[1].position)]
    rest = [i for b in resumed for i in b.column("id").to_pylist()]
    head = [i for b in batches[:2] for i in b.batch.column("id").to_pylist()]
    assert sorted(head + rest) == sorted(i for b in batches for i in b.batch.column("id").to_pylist())
    assert not set(head) & set(rest)


def test_source_reads_rows_inserted_outside_the_planned_range(admin, schema) -> None:
    make_ids(admin, schema, 1_000)
    src = source(schema, splits=3)
    splits = src.splits()
    admin.execute(f"INSERT INTO {schema}.src VALUES (-5, 'low', now()), (10000, 'high', now())")
    ids = sorted(i for s in splits for b in src.read(s, None) for i in b.batch.column("id").to_pylist())
    assert ids == [-5, *range(1, 1_001), 10_000]


def test_source_block_ranges_for_a_table_without_a_key(admin, schema) -> None:
    make_ids(admin, schema, 30_000, pk=False)
    admin.execute(f"DELETE FROM {schema}.src WHERE id % 7 = 0")
    src = source(schema, splits=4, chunk_rows=1_000)
    assert all(s.id.startswith("blk") for s in src.splits())
    ids = read_all(src).column("id").to_pylist()
    assert sorted(ids) == [i for i in range(1, 30_001) if i % 7]


def test_source_query_with_and_without_a_split_column(admin, schema) -> None:
    make_ids(admin, schema, 5_000)
    query = f"SELECT id, upper(v) AS v FROM {schema}.src WHERE id % 2 = 0"
    keyed = source(schema, query=query, split_column="id", splits=4)
    assert len(keyed.splits()) == 5  # 4 ranges, and the NULL keys (a query column may be NULL)
    assert sorted(read_all(keyed).column("id").to_pylist()) == list(range(2, 5_001, 2))
    # a key with many rows per value, and NULL keys: every row once, and the range walk ends
    grouped = f"SELECT id, nullif(id / 2500, 1) AS grp FROM {schema}.src"
    many = source(schema, query=grouped, split_column="grp", splits=2, chunk_rows=100)
    assert [s.id for s in many.splits()][-1] == "key:null"
    assert sorted(read_all(many).column("id").to_pylist()) == list(range(1, 5_001))
    whole = source(schema, query=query, chunk_rows=1_024)
    assert [s.id for s in whole.splits()] == ["query"]
    table = read_all(whole)
    assert sorted(table.column("id").to_pylist()) == list(range(2, 5_001, 2))
    assert table.column("v")[0].as_py().isupper()


def test_source_incremental_reads_after_the_watermark(admin, schema) -> None:
    make_ids(admin, schema, 1_000)
    src = source(schema, sync_mode="incremental", cursor_field="updated_at", splits=4)
    src.watermark = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=900)
    assert sorted(read_all(src).column("id").to_pylist()) == list(range(901, 1_001))
    text = source(schema, sync_mode="incremental", cursor_field="updated_at")
    text.watermark = "2024-01-01T00:16:30+00:00"  # how a stored watermark may come back: ISO text
    assert sorted(read_all(text).column("id").to_pylist()) == list(range(991, 1_001))


def test_source_errors_name_the_key(admin, schema) -> None:
    with pytest.raises(UserError, match=r"source.stream: table .* does not exist"):
        source(schema, "missing").splits()
    bad = PostgresSource(SourceConfig(name="postgres", stream="t", host=HOST, port=1, database="x", username="u"))
    with pytest.raises(UserError, match="source: cannot connect to PostgreSQL at 127.0.0.1:1/x"):
        bad.check_connection()


# ---------------------------------------------------------------- destination


def copy_through(src: PostgresSource, d: PostgresDestination, *, start_seq: int = 0) -> int:
    splits = src.splits()
    d.check_connection()
    d.prepare({s.id: -1 for s in splits})
    rows = 0
    for split in splits:
        for seq, item in enumerate(src.read(split, None), start=start_seq):
            d.write(split.id, seq, seq, [item.batch])
            rows += item.batch.num_rows
    d.publish()
    return rows


def test_destination_round_trips_every_type(admin, schema) -> None:
    types_table(admin, schema)
    copy_through(source(schema, "types"), dest(schema, "types_copy"))
    columns = [
        r[0]
        for r in admin.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (f"{schema}.types",),
        ).fetchall()
    ]
    for col in columns:
        for a, b in (("types", "types_copy"), ("types_copy", "types")):
            diff = admin.execute(
                f'SELECT id, "{col}"::text FROM {schema}.{a} EXCEPT SELECT id, "{col}"::text FROM {schema}.{b}'
            ).fetchall()
            assert not diff, (col, diff)
    kinds = dict(
        admin.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attnum > 0 AND NOT attisdropped",
            (f"{schema}.types_copy",),
        ).fetchall()
    )
    assert kinds["n"] == "numeric(10,2)" and kinds["tstz"] == "timestamp with time zone"
    assert kinds["an"] == "numeric(8,3)[]" and kinds["af"] == "double precision[]" and kinds["by"] == "bytea"
    assert "_bizon_fast_write" not in kinds


def test_destination_publish_leaves_no_stage_and_no_write_cursors(admin, schema) -> None:
    """Postgres bookkeeping (the contract itself is tests/contracts): ``prepare`` trims the job's stage table to
    the committed seqs; the publish drops the stage and the write cursors it kept in the target's schema."""
    make_ids(admin, schema, 600)
    batch = read_all(source(schema, splits=1)).combine_chunks().to_batches()[0]
    part = [batch.slice(i * 100, 100) for i in range(6)]
    d = dest(schema)
    d.check_connection()
    d.prepare({"s": -1})
    d.write("s", 0, 2, part[0:3])
    d.write("s", 3, 4, part[3:5])  # not committed when the run dies
    stage = f'{schema}."{stage_name("dst", "job-1")}"'
    d.prepare({"s": 2})
    assert scalar(admin, f"SELECT count(*) FROM {stage}") == 300
    d.write("s", 3, 5, part[3:6])
    d.publish()
    assert ids_of(admin, schema) == (600, 600, 1, 600)
    assert scalar(admin, "SELECT to_regclass(%s) IS NULL", (stage,))
    assert scalar(admin, f"SELECT count(*) FROM {schema}.bizon_fast_destination_cursors") == 0
    d.close()


def test_destination_appends_into_an_existing_table_with_its_types(admin, schema) -> None:
    """An incremental run into a table the user made follows its types (uuid and an enum from text)."""
    admin.execute(f"CREATE TYPE {schema}.mood AS ENUM ('sad', 'ok')")
    admin.execute(f"CREATE TABLE {schema}.typed (id serial, u uuid, m {schema}.mood, n numeric(6,1))")
    d = dest(schema, "typed", job="d", mode="incremental")
    batch = pa.record_batch(
        {
            "u": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", None],
            "m": ["ok", "sad"],
            "n": pa.array([1.25, None], pa.float64()),
        }
    )
    d.check_connection()
    d.prepare({"x": -1})
    d.write("x", 0, 0, [batch])
    d.publish()
    assert admin.execute(f"SELECT id, u::text, m::text, n FROM {schema}.typed ORDER BY id").fetchall() == [
        (1, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "ok", Decimal("1.3")),
        (2, None, "sad", None),
    ]


def test_destination_unnest_and_envelope(admin, schema) -> None:
    records = [
        {"id": "1", "data": {"name": "ant", "legs": 6, "seen": "2024-01-02T03:04:05Z"}},
        {"id": "2", "data": {"name": "bee", "legs": None, "seen": "2024-01-02T03:04:06Z"}},
    ]
    batch = records_to_batch(records)
    schemas = [
        {
            "destination_id": f"{schema}.creatures",
            "record_schema": [
                {"name": "name", "type": "STRING"},
                {"name": "legs", "type": "INTEGER"},
                {"name": "seen", "type": "TIMESTAMP"},
            ],
        }
    ]
    d = dest(schema, "creatures", unnest=True, record_schemas=schemas)
    d.check_connection()
    d.prepare({"p": -1})
    d.write("p", 0, 0, [batch])
    d.publish()
    rows = admin.execute(f"SELECT name, legs, seen FROM {schema}.creatures ORDER BY name").fetchall()
    assert rows == [("ant", 6, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)), ("bee", None, rows[1][2])]
    assert (
        scalar(
            admin,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attname = 'legs'",
            (f"{schema}.creatures",),
        )
        == "bigint"
    )
    e = dest(schema, "envelope", job="e")
    e.check_connection()
    e.prepare({"p": -1})
    e.write("p", 0, 0, [batch])
    e.publish()
    got = admin.execute(f"SELECT source_record_id, source_data::jsonb->>'name' FROM {schema}.envelope ORDER BY 1")
    assert got.fetchall() == [("1", "ant"), ("2", "bee")]


def test_encoder_numeric_and_ddl_edge_cases(admin, schema) -> None:
    values = [Decimal("-99999999999999999999999999999999.999999"), Decimal("0.000001"), Decimal("0"), None]
    batch = pa.record_batch({"n": pa.array(values, pa.decimal128(38, 6))})
    assert ddl_type(batch.schema.field("n").type) == "numeric(38,6)"
    admin.execute(f"CREATE TABLE {schema}.nums (n numeric(38,6), w bigint)")
    body = Encoder([PgColumn("n", 1700, -1)]).encode(batch, 7)
    from bizon_fast.connectors.destinations.postgres.pgbinary import SIGNATURE, TRAILER

    with admin.cursor().copy(f"COPY {schema}.nums (n, w) FROM STDIN (FORMAT binary)") as copy:
        copy.write(SIGNATURE + bytes(body) + TRAILER)
    got = [r[0] for r in admin.execute(f"SELECT n FROM {schema}.nums").fetchall()]
    assert got == values


def test_stage_names_fit_postgres_identifiers() -> None:
    long = "x" * 80
    name = stage_name(long, "0123456789abcdef0123456789abcdef")
    assert len(name.encode()) <= 63 and name.endswith("__bizon_fast_stage_0123456789abcdef")
    assert stage_name("orders", "abc") == "orders__bizon_fast_stage_abc"


# ---------------------------------------------------------------- through the CLI


def pipeline_yaml(
    tmp_path: Path, schema: str, *, name: str = "pg2pg", extra_source: str = "", chunk_rows: int = 3000
) -> str:
    (tmp_path / "pipeline.yml").write_text(
        f"""
name: {name}
source: {{name: postgres, stream: {schema}.src, dsn: "{DSN}", splits: 12, chunk_rows: {chunk_rows}{extra_source}}}
destination: {{name: postgres, config: {{dsn: "{DSN}", destination_id: {schema}.dst, buffer_size: 1}}}}
engine:
  backend: {{type: postgres, config: {{dsn: "{DSN}", schema: {schema}_ckpt}}}}
  queue: {{config: {{batch_size_mb: 1}}}}
  runner: {{config: {{max_workers: 2, max_restarts: 50}}}}
"""
    )
    return "pipeline.yml"


def test_cli_full_refresh_then_incremental(admin, schema, cli, tmp_path: Path) -> None:
    make_ids(admin, schema, 20_000)
    config = pipeline_yaml(tmp_path, schema)
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    assert ids_of(admin, schema) == (20_000, 20_000, 1, 20_000)
    done = cli("run", config, "--quiet")  # a second full refresh replaces, never doubles
    assert done.returncode == 0, done.stderr
    assert ids_of(admin, schema) == (20_000, 20_000, 1, 20_000)
    assert scalar(admin, f"SELECT count(*) FROM {schema}_ckpt.bizon_fast_jobs WHERE status = 'succeeded'") == 2

    incremental = pipeline_yaml(
        tmp_path, schema, name="pg2pg-inc", extra_source=", sync_mode: incremental, cursor_field: updated_at"
    )
    admin.execute(f"DROP TABLE {schema}.dst")
    assert cli("run", incremental, "--quiet").returncode == 0
    admin.execute(
        f"INSERT INTO {schema}.src SELECT g, 'new', timestamptz '2030-01-01' + g * interval '1 s'"
        " FROM generate_series(20001, 20500) g"
    )
    done = cli("run", incremental, "--quiet")
    assert done.returncode == 0, done.stderr
    assert ids_of(admin, schema) == (20_500, 20_500, 1, 20_500)


def test_cli_unreachable_backend_is_a_one_line_error(cli, tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(
        """
name: nope
source: {name: synthetic, stream: events, rows: 10}
destination: {name: noop}
engine: {backend: {type: postgres, config: {host: 127.0.0.1, port: 1, username: postgres}}}
"""
    )
    done = cli("run", "p.yml", "--quiet")
    assert done.returncode == 2
    assert "engine.backend: cannot connect to PostgreSQL at 127.0.0.1:1/" in done.stderr + done.stdout


SLOW_REPORT = """
import time

from bizon_fast.connectors.destinations.postgres.destination import PostgresDestination


class SlowReport(PostgresDestination):
    name = "pg_slow_report"

    def write(self, split_id, first_seq, last_seq, batches):
        super().write(split_id, first_seq, last_seq, batches)
        time.sleep(0.15)  # committed but not reported yet: a kill now leaves a write that gets replayed
"""


@pytest.mark.slow
def test_sigkill_random_workers_during_a_postgres_copy(admin, schema, tmp_path: Path, monkeypatch) -> None:
    """Exact counts, no duplicates. The destination sleeps between its commit and its report, so that
    killed consumers leave committed writes behind which the supervisor replays, regrouped."""
    rows = 400_000
    make_ids(admin, schema, rows)
    (tmp_path / "slow_report.py").write_text(SLOW_REPORT)
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", "pg_slow_report=slow_report:SlowReport")
    config = pipeline_yaml(tmp_path, schema)
    text = (tmp_path / config).read_text().replace("{name: postgres, config:", "{name: pg_slow_report, config:")
    (tmp_path / config).write_text(text)
    rng = random.Random("pg-workers")
    proc = start_run(tmp_path, config)
    killed = kill_workers_randomly(proc, kills=6, rng=rng)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert len(killed) >= 3, f"the run ended before enough kills: {killed}"
    assert ids_of(admin, schema) == (rows, rows, 1, rows)
    assert scalar(admin, f"SELECT count(*) FROM {schema}.bizon_fast_destination_cursors") == 0


def _staged_rows(admin, schema: str) -> int:
    """Rows the run has written so far: a full refresh stages into its own table until it publishes."""
    names = admin.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s", (schema, "dst%")
    ).fetchall()
    return sum(admin.execute(f'SELECT count(*) FROM {schema}."{n}"').fetchone()[0] for (n,) in names)


@pytest.mark.slow
def test_sigkill_supervisor_then_rerun_resumes_exactly(admin, schema, tmp_path: Path, monkeypatch) -> None:
    """The kill lands once the destination holds some rows, not after a fixed delay: a fast machine
    finished the whole copy inside a timed sleep. The slow destination keeps the run long enough."""
    import psutil

    rows = 300_000
    make_ids(admin, schema, rows)
    (tmp_path / "slow_report.py").write_text(SLOW_REPORT)
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", "pg_slow_report=slow_report:SlowReport")
    config = pipeline_yaml(tmp_path, schema, chunk_rows=500)
    text = (tmp_path / config).read_text().replace("{name: postgres, config:", "{name: pg_slow_report, config:")
    (tmp_path / config).write_text(text)
    proc = start_run(tmp_path, config)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if _staged_rows(admin, schema) > 0:
            break
        time.sleep(0.02)
    time.sleep(random.Random("pg-supervisor").uniform(0.1, 0.4))
    assert proc.poll() is None, "the run ended before it could be interrupted"
    assert _staged_rows(admin, schema) < rows, "the copy finished before the kill"
    psutil.Process(proc.pid).kill()
    proc.wait(10)
    rerun = start_run(tmp_path, config)
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    assert ids_of(admin, schema) == (rows, rows, 1, rows)
    jobs = admin.execute(f"SELECT status, attempt, error FROM {schema}_ckpt.bizon_fast_jobs").fetchall()
    assert jobs == [("succeeded", 2, None)], f"the rerun should resume the interrupted job: {jobs}"


def test_example_config_validates() -> None:
    from bizon_fast.connectors.pipeline import load_config

    config = Path(__file__).resolve().parents[1] / "configs" / "postgres_to_postgres.yml"
    env = {"PG_PASSWORD": "secret"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        cfg = load_config(str(config))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert cfg.source.name == "postgres" and cfg.destination.name == "postgres"
    assert isinstance(cfg.destination.config, PostgresDestinationDetails)
    assert cfg.engine.backend.type == "postgres"


def test_native_bench_pipeline_validates() -> None:
    from bizon_fast.connectors.pipeline import parse_config
    from native_bench import pg

    cfg = parse_config(pg.bizon_fast_config(1_000, 2))
    assert cfg.source.name == "postgres" and cfg.destination.config.destination_id.endswith(pg.BF_TABLE)
