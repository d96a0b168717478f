"""Postgres -> Postgres keeps the table's shape: every column's exact type, NOT NULL and the primary key.

Through the CLI (``python -m bizon_fast run``) over a source table with jsonb, json, numeric(p,s) (within and past
decimal128), unconstrained numeric (NaN, infinities), uuid, int[] / text[] / numeric[] arrays, bytea, date, time,
timetz, interval, timestamptz, timestamp, varchar(n), char(n), inet, an enum, a domain (created as its base type,
as the source tags it), NOT NULL columns and a
primary key, with NULLs in every nullable column. The destination's catalog (``format_type`` and ``attnotnull`` of
each column, the primary key's columns from ``pg_index``) must equal the source's, and every row's text form
(``SELECT t::text ... ORDER BY id``) must be equal. Then ``primary_key: none`` and an explicit list, a merge
(whose table is built by ``CREATE TABLE AS``), and (straight through the destination) the one-line failures of a
key that cannot be created.
Every test works in a schema of its own (``pg_schema``), dropped afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import run_cli
from tests.direct import run_job

pytestmark = pytest.mark.service

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
ROWS = 3_000


@pytest.fixture
def schema(pg_admin, pg_schema: str):  # noqa: ANN001, ANN201 - psycopg.Connection
    yield pg_schema
    pg_admin.execute(f"DROP SCHEMA IF EXISTS {pg_schema}_ckpt CASCADE")


def make_source(admin, schema: str) -> None:  # noqa: ANN001
    admin.execute(f"CREATE TYPE {schema}.mood AS ENUM ('sad', 'ok', 'happy')")
    admin.execute(f"CREATE DOMAIN {schema}.positive AS integer CHECK (VALUE > 0)")
    admin.execute(
        f"""CREATE TABLE {schema}.src (
            id bigint PRIMARY KEY,
            code varchar(20) NOT NULL,
            doc jsonb, meta json,
            amount numeric(12,2) NOT NULL, wide numeric(50,10), free numeric,
            uid uuid, ints integer[] NOT NULL, tags text[], amounts numeric(8,3)[],
            raw bytea, day date, clock time, zclock timetz, span interval,
            ts timestamptz NOT NULL, naive timestamp, flag boolean, small smallint, r real, f double precision,
            c char(3), ip inet, feeling {schema}.mood, qty {schema}.positive
        )"""
    )
    admin.execute(
        f"""INSERT INTO {schema}.src SELECT g, 'code-' || g,
            jsonb_build_object('k', g, 'nested', jsonb_build_array(1, 'x', null), 'u', 'é"\\'),
            json_build_object('a', g), g * 1.25 - 1000, g * 123456789012345678901234.5678901234,
            (g * 3.14159265358979)::numeric, md5(g::text)::uuid, ARRAY[g, -g, NULL]::int[],
            ARRAY['a' || g, NULL, 'b"q\\z,{{}}', '']::text[], ARRAY[g / 7.0, NULL]::numeric(8,3)[],
            decode(md5(g::text), 'hex'), date '2020-01-01' + g, time '01:02:03.456789' + g * interval '1 s',
            timetz '04:05:06+02' + g * interval '1 min',
            make_interval(1, 2, 0, 3, 4, 5, 6.789) * (g - 1500) - interval '10 days',
            timestamptz '2024-01-01 00:00:00+00' + g * interval '1.5 s', timestamp '2024-01-01' + g * interval '1 min',
            g % 2 = 0, (g % 1000)::smallint, g / 3.0, g / 7.0, 'ab', ('10.0.' || (g % 250) || '.0/24')::inet,
            (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::{schema}.mood, g
        FROM generate_series(1, {ROWS}) g"""
    )
    # NULL in every nullable column, and the special values
    admin.execute(f"INSERT INTO {schema}.src (id, code, amount, ints, ts) VALUES (0, 'nulls', -1.5, '{{}}', 'epoch')")
    for i, value in enumerate(["NaN", "Infinity", "-Infinity", "-0.000000000000000000000000000000000001"]):
        admin.execute(
            f"INSERT INTO {schema}.src (id, code, amount, ints, ts, free, span) VALUES"
            f" ({ROWS + 1 + i}, 'special', 0, ARRAY[1], now(), '{value}', '-1 years +3 days -00:00:00.000001')"
        )
    admin.execute(f"ANALYZE {schema}.src")


def write_config(tmp_path: Path, schema: str, dest_extra: str = "", source_extra: str = "") -> str:
    (tmp_path / "types.yml").write_text(
        f"""
name: pg-types
source: {{name: postgres, stream: {schema}.src, dsn: "{DSN}", splits: 3, chunk_rows: 1000{source_extra}}}
destination:
  name: postgres
  config: {{dsn: "{DSN}", destination_id: {schema}.dst{dest_extra}}}
engine:
  backend: {{type: postgres, config: {{dsn: "{DSN}", schema: {schema}_ckpt}}}}
  runner: {{config: {{max_workers: 2}}}}
"""
    )
    return "types.yml"


def run(tmp_path: Path, config: str):  # noqa: ANN201
    return run_cli("run", config, "--quiet", cwd=tmp_path, timeout=120)


def describe(admin, relation: str) -> list[tuple[str, str, bool]]:  # noqa: ANN001
    """``\\d``: each column's name, type as ``format_type`` writes it, and NOT NULL, in column order."""
    return admin.execute(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (relation,),
    ).fetchall()


def primary_key(admin, relation: str) -> list[str]:  # noqa: ANN001
    row = admin.execute(
        "SELECT array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)"
        " FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (relation,),
    ).fetchone()
    return row[0] if row else []


def source_shape(admin, relation: str) -> list[tuple[str, str, bool]]:  # noqa: ANN001
    """The source's ``describe``, its domain column as its base type: the Postgres source tags a domain's column
    with the domain's base type (its documented contract), so that is what the destination creates."""
    return [(n, "integer" if n == "qty" else t, nn) for n, t, nn in describe(admin, relation)]


def rows(admin, relation: str) -> list[str]:  # noqa: ANN001
    return [r[0] for r in admin.execute(f"SELECT rw::text FROM {relation} rw ORDER BY id").fetchall()]


def test_every_type_not_null_and_the_primary_key_survive(pg_admin, schema, tmp_path: Path) -> None:
    make_source(pg_admin, schema)
    done = run(tmp_path, write_config(tmp_path, schema))
    assert done.returncode == 0, done.stderr
    src, dst = f"{schema}.src", f"{schema}.dst"
    assert describe(pg_admin, dst) == source_shape(pg_admin, src)
    assert ("doc", "jsonb", False) in describe(pg_admin, dst) and ("code", "character varying(20)", True) in describe(
        pg_admin, dst
    )
    assert primary_key(pg_admin, dst) == primary_key(pg_admin, src) == ["id"]
    assert pg_admin.execute(f"SELECT conname FROM pg_constraint WHERE conrelid = '{dst}'::regclass").fetchall() == [
        ("dst_pkey",)
    ]
    source_rows = rows(pg_admin, src)
    assert len(source_rows) == ROWS + 5
    assert rows(pg_admin, dst) == source_rows
    special = pg_admin.execute(f"SELECT free::text FROM {dst} WHERE code = 'special' ORDER BY id").fetchall()
    assert [r[0] for r in special] == ["NaN", "Infinity", "-Infinity", "-0.000000000000000000000000000000000001"]


def test_primary_key_none_and_an_explicit_list(pg_admin, schema, tmp_path: Path) -> None:
    make_source(pg_admin, schema)
    src, dst = f"{schema}.src", f"{schema}.dst"
    done = run(tmp_path, write_config(tmp_path, schema, ", primary_key: none"))
    assert done.returncode == 0, done.stderr
    assert describe(pg_admin, dst) == source_shape(pg_admin, src)  # NOT NULL kept without a key
    assert primary_key(pg_admin, dst) == []
    done = run(tmp_path, write_config(tmp_path, schema, ", primary_key: [code, id]"))
    assert done.returncode == 0, done.stderr
    assert primary_key(pg_admin, dst) == ["code", "id"]
    assert rows(pg_admin, dst) == rows(pg_admin, src)
    assert describe(pg_admin, dst) == source_shape(pg_admin, src)


def _run_direct(
    schema: str, job: str, batches: list[pa.RecordBatch], sync_mode: str = "full_refresh", **config: object
) -> None:
    details = {"dsn": DSN, "destination_id": f"{schema}.dst", **config}
    run_job("postgres", details, job=job, sync_mode=sync_mode, batches=batches)


def test_a_key_that_cannot_be_created_fails_in_one_line(pg_admin, schema) -> None:
    """Duplicate keys, or a key column the rows lack, fail the job before anything is published: the last table
    stays. Tagged fields without a source key and ``auto`` create no key, nor does ``auto`` for a new append
    target; an explicit list does."""
    from bizon_fast.errors import UserError

    tag = {b"bizon_fast.pg_type": b"jsonb"}
    fields = [pa.field("id", pa.int64(), nullable=False), pa.field("doc", pa.string(), metadata=tag)]
    meta = {b"bizon_fast.primary_key": b'["id"]'}
    batch = pa.record_batch([pa.array([1, 2, 2]), pa.array(['{"a": 1}', None, "[]"])], schema=pa.schema(fields))
    _run_direct(schema, "j1", [batch])
    assert describe(pg_admin, f"{schema}.dst") == [("id", "bigint", True), ("doc", "jsonb", False)]
    assert primary_key(pg_admin, f"{schema}.dst") == []
    keyed = batch.replace_schema_metadata(meta)
    with pytest.raises(UserError, match=r"primary key \(id\) cannot be created: .*nothing was published"):
        _run_direct(schema, "j2", [keyed])
    with pytest.raises(UserError, match=r"destination.config.primary_key: nope not in the rows' columns"):
        _run_direct(schema, "j3", [keyed], primary_key=["nope"])
    assert pg_admin.execute(f"SELECT count(*) FROM {schema}.dst").fetchone()[0] == 3  # j1's table
    _run_direct(schema, "j4", [keyed.slice(0, 2)])
    assert primary_key(pg_admin, f"{schema}.dst") == ["id"]
    # a new append target: auto creates no key (later runs append new versions of the same keys), a list does
    pg_admin.execute(f"DROP TABLE {schema}.dst")
    _run_direct(schema, "j5", [keyed.slice(0, 2)], "incremental")
    assert primary_key(pg_admin, f"{schema}.dst") == []
    _run_direct(schema, "j6", [keyed.slice(0, 2)], "incremental")
    assert pg_admin.execute(f"SELECT count(*) FROM {schema}.dst").fetchone()[0] == 4
    pg_admin.execute(f"DROP TABLE {schema}.dst")
    _run_direct(schema, "j7", [keyed.slice(0, 2)], "incremental", primary_key=["id"])
    assert primary_key(pg_admin, f"{schema}.dst") == ["id"]


def test_a_merge_creates_the_same_shape(pg_admin, schema, tmp_path: Path) -> None:
    """A merge builds a new table with ``CREATE TABLE AS`` from the stage's last versions: the types, NOT NULL and
    the source's key (its merge key) are the source's too, and a second incremental run merges exactly."""
    make_source(pg_admin, schema)
    src, dst = f"{schema}.src", f"{schema}.dst"
    config = write_config(tmp_path, schema, ", write_disposition: merge", ", sync_mode: incremental, cursor_field: ts")
    done = run(tmp_path, config)
    assert done.returncode == 0, done.stderr
    assert describe(pg_admin, dst) == source_shape(pg_admin, src)
    assert primary_key(pg_admin, dst) == ["id"]
    pg_admin.execute(
        f"UPDATE {src} SET doc = '{{\"changed\": true}}', ts = now() + interval '1 day' WHERE id % 100 = 0"
    )
    done = run(tmp_path, config)
    assert done.returncode == 0, done.stderr
    assert rows(pg_admin, dst) == rows(pg_admin, src)
    assert (
        pg_admin.execute(f"SELECT count(*) FROM {dst} WHERE doc = '{{\"changed\": true}}'").fetchone()[0] == 31
    )  # ids 0, 100 ... 3000


def _tagged_batch(first: int, n: int) -> pa.RecordBatch:
    """Rows as the Postgres source hands them over: jsonb and uuid as text, numeric(12,2) as decimal128, tagged."""
    from decimal import Decimal

    def tag(name: str, kind: pa.DataType, pg: str) -> pa.Field:
        return pa.field(name, kind, metadata={b"bizon_fast.pg_type": pg.encode()})

    ids = list(range(first, first + n))
    schema = pa.schema(
        [
            tag("id", pa.int64(), "bigint"),
            tag("doc", pa.string(), "jsonb"),
            tag("docs", pa.list_(pa.string()), "json[]"),
            tag("uid", pa.string(), "uuid"),
            tag("amount", pa.decimal128(12, 2), "numeric(12,2)"),
            tag("free", pa.string(), "numeric"),
        ]
    )
    return pa.record_batch(
        [
            pa.array(ids, pa.int64()),
            pa.array([f'{{"k": {i}, "s": "x"}}' if i % 5 else None for i in ids]),
            pa.array([[f'{{"i": {i}}}', "[1, 2]"] for i in ids]),
            pa.array([f"00000000-0000-0000-0000-{i:012d}" for i in ids]),
            pa.array([Decimal(i) / 4 for i in ids], pa.decimal128(12, 2)),
            pa.array(["NaN" if i == first else str(i) for i in ids]),
        ],
        schema=schema,
    )


def test_parquet_gets_the_closest_types(tmp_path: Path) -> None:
    """The file destination's Parquet: jsonb / json[] as Parquet's JSON logical type (the same text), numeric(p,s) as
    DECIMAL, uuid and unconstrained numeric as strings (``sourcetypes.py`` says why)."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from bizon_fast.connectors.registry import destination_class
    from bizon_fast.destination.base import DestinationContext

    cls = destination_class("file")
    details = cls.config_class.model_validate({"format": "parquet", "destination_id": str(tmp_path / "out")})
    d = cls(
        details, DestinationContext(job_id="j", pipeline="p", source_name="s", stream="e", sync_mode="full_refresh")
    )
    batches = [_tagged_batch(0, 50), _tagged_batch(50, 50)]
    try:
        d.prepare({})
        d.write("a", 0, 1, batches)
        d.publish()
    finally:
        d.close()
    files = sorted((tmp_path / "out").glob("*.parquet"))
    assert files
    physical = {c.name: c.logical_type.type for c in pq.ParquetFile(files[0]).schema}
    assert physical["doc"] == "JSON" and physical["element"] == "JSON" and physical["uid"] == "STRING"
    assert physical["amount"] == "DECIMAL" and physical["free"] == "STRING"
    table = ds.dataset(tmp_path / "out").to_table().sort_by("id")
    assert table.num_rows == 100
    assert table.column("doc").type == pa.json_() and table.column("docs").type == pa.list_(pa.json_())
    expected = pa.Table.from_batches(batches)
    assert table.column("doc").cast(pa.string()).to_pylist() == expected.column("doc").to_pylist()
    for name in ("id", "uid", "amount", "free"):
        assert table.column(name).to_pylist() == expected.column(name).to_pylist(), name


@pytest.mark.parametrize("name", ["bigquery", "bigquery_streaming_v2"])
def test_bigquery_gets_json_and_numeric(bq_emulator, bq_dataset, name: str) -> None:  # noqa: ANN001 - service fixtures
    """BigQuery (load jobs, the Storage Write API): jsonb -> JSON (and json[] -> REPEATED JSON), numeric(12,2) ->
    NUMERIC, uuid and an unconstrained numeric (it may hold NaN) -> STRING; the documents read back as JSON values.

    The types are checked on the stage the rows are loaded into: the emulator's ``CREATE OR REPLACE TABLE ... AS
    SELECT`` (the full refresh's publish) reports a JSON column as STRING in the new table's schema, though it
    still holds JSON values (BigQuery itself keeps the type)."""
    from bizon_fast.connectors.registry import destination_class
    from bizon_fast.destination.base import DestinationContext
    from native_bench.services import BQEMU_PROJECT

    cls = destination_class(name)
    details = cls.config_class.model_validate(
        {"project_id": BQEMU_PROJECT, "dataset_id": bq_dataset, "destination_id": "typed"}
    )
    d = cls(
        details, DestinationContext(job_id="j", pipeline="p", source_name="s", stream="e", sync_mode="full_refresh")
    )
    client = bq_emulator.client()
    try:
        d.check_connection()
        d.prepare({})
        d.write("a", 0, 0, [_tagged_batch(0, 40)])
        staged = {f.name: (f.field_type, f.mode) for f in client.get_table(d.stage_id).schema}
        d.publish()
        rows = list(client.query(f"SELECT id, doc, TO_JSON_STRING(doc) FROM `{bq_dataset}.typed` ORDER BY id").result())
    finally:
        d.close()
        client.close()
    assert {k: v for k, v in staged.items() if not k.startswith("_")} == {
        "id": ("INT64", "NULLABLE"),
        "doc": ("JSON", "NULLABLE"),
        "docs": ("JSON", "REPEATED"),
        "uid": ("STRING", "NULLABLE"),
        "amount": ("NUMERIC", "NULLABLE"),
        "free": ("STRING", "NULLABLE"),
    }
    assert len(rows) == 40
    assert [tuple(r.values()) for r in rows[:3]] == [
        (0, None, None),
        (1, {"k": 1, "s": "x"}, '{"k":1,"s":"x"}'),  # a JSON value, not the text '{"k": 1, "s": "x"}'
        (2, {"k": 2, "s": "x"}, '{"k":2,"s":"x"}'),
    ]
