"""The postgres source on ADBC against the real server: the Arrow schema of every type, exact values, the
errors for values Arrow cannot hold, a lost connection in the middle of a split, and literals in the SQL.

Every test works in a schema of its own (``pg_schema``). Without a server on 127.0.0.1:5432 the tests skip.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pyarrow as pa
import pytest

from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.registry import source_class
from bizon_fast.connectors.sources.postgres.chunks import PG_TYPE_META
from bizon_fast.connectors.sources.postgres.source import PRIMARY_KEY_META, PostgresSource
from bizon_fast.errors import UserError
from tests.services.postgres import PG_DSN

pytestmark = pytest.mark.service


def source(schema: str, stream: str, **kw) -> PostgresSource:
    cls = source_class("postgres", f"{schema}.{stream}")
    return cls(SourceConfig(name="postgres", stream=f"{schema}.{stream}", dsn=PG_DSN, **kw))


def batches(src: PostgresSource) -> list[pa.RecordBatch]:
    return [b.batch for split in src.splits() for b in src.read(split, None)]


ALL_TYPES = """
CREATE DOMAIN {s}.money2 AS numeric(6,2);
CREATE TABLE {s}.every (
    id bigint PRIMARY KEY,
    doc jsonb NOT NULL, amount numeric(12,2) NOT NULL, seen timestamptz NOT NULL, key uuid NOT NULL,
    jb jsonb, js json, n numeric(38,10), nu numeric, nbig numeric(50,5), u uuid, by bytea, d date, tm time,
    iv interval, tstz timestamptz, ts timestamp, ch char(4), vc varchar(10), ip inet, m {s}.money2,
    ai int[], at text[], an numeric(8,3)[], au uuid[], ab bool[], af real[], ad date[], atz timestamptz[],
    aiv interval[]
);
INSERT INTO {s}.every VALUES
 (1, '{"b": [1, 2.5], "a": "x"}', 1234567890.12, '2024-03-01 12:00:00.000001+02',
  'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
  '{"k": null}', '{"a" : 1}', -12345678901234567890.0123456789, 'NaN', 123456789012345678901234567890123456789012.5,
  '00000000-0000-0000-0000-000000000001', '\\x00ff10', '0001-01-01', '23:59:59.999999',
  '1 year 2 mons -3 days 04:05:06.5', '1970-01-01 00:00:00+00', '2262-04-11 23:47:16.854775', 'ab', 'é', '10.1.2.3/24',
  9999.99, '{1,NULL,-3}', '{"x,y",NULL,""}', '{1.500,-2.250,NULL}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}',
  '{t,f,NULL}', '{1.5,NaN,-Infinity}', '{2024-02-29}', '{"2024-01-01 10:00:00+02"}', '{"1 day","-00:00:01"}'),
 (2, '[]', 0, '2000-01-01 00:00:00+00', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL),
 (3, '{}', -0.01, '1999-12-31 23:59:59+00', '12345678-1234-1234-1234-123456789abc',
  '"s"', '[]', 0, '-1.5e-3', 0, NULL, '\\x', '2000-01-01', '00:00', '0', '2000-01-01 00:00:00+00',
  '2000-01-01', '', '', '::1', -0.5, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')
"""

#: name -> (Arrow type, nullable, the pg_type metadata)
EXPECTED = {
    "id": (pa.int64(), False, "bigint"),
    "doc": (pa.string(), False, "jsonb"),
    "amount": (pa.decimal128(12, 2), False, "numeric(12,2)"),
    "seen": (pa.timestamp("us", tz="UTC"), False, "timestamp with time zone"),
    "key": (pa.string(), False, "uuid"),
    "jb": (pa.string(), True, "jsonb"),
    "js": (pa.string(), True, "json"),
    "n": (pa.decimal128(38, 10), True, "numeric(38,10)"),
    "nu": (pa.string(), True, "numeric"),
    "nbig": (pa.string(), True, "numeric(50,5)"),
    "u": (pa.string(), True, "uuid"),
    "by": (pa.binary(), True, "bytea"),
    "d": (pa.date32(), True, "date"),
    "tm": (pa.time64("us"), True, "time without time zone"),
    "iv": (pa.string(), True, "interval"),
    "tstz": (pa.timestamp("us", tz="UTC"), True, "timestamp with time zone"),
    "ts": (pa.timestamp("us"), True, "timestamp without time zone"),
    "ch": (pa.string(), True, "character(4)"),
    "vc": (pa.string(), True, "character varying(10)"),
    "ip": (pa.string(), True, "inet"),
    "m": (pa.decimal128(6, 2), True, "numeric(6,2)"),  # a domain: its base type
    "ai": (pa.list_(pa.int32()), True, "integer[]"),
    "at": (pa.list_(pa.string()), True, "text[]"),
    "an": (pa.list_(pa.decimal128(8, 3)), True, "numeric(8,3)[]"),
    "au": (pa.list_(pa.string()), True, "uuid[]"),
    "ab": (pa.list_(pa.bool_()), True, "boolean[]"),
    "af": (pa.list_(pa.float32()), True, "real[]"),
    "ad": (pa.list_(pa.date32()), True, "date[]"),
    "atz": (pa.list_(pa.timestamp("us", tz="UTC")), True, "timestamp with time zone[]"),
    "aiv": (pa.list_(pa.string()), True, "interval[]"),
}


def test_every_type_keeps_its_arrow_type_nullability_pg_type_and_values(pg_admin, pg_schema: str) -> None:
    for statement in ALL_TYPES.replace("{s}", pg_schema).split(";\n"):
        pg_admin.execute(statement)
    got = batches(source(pg_schema, "every", splits=1))
    assert len(got) == 1
    batch = got[0]
    assert json.loads(batch.schema.metadata[PRIMARY_KEY_META]) == ["id"]
    assert batch.schema.names == list(EXPECTED)
    for field in batch.schema:
        kind, nullable, pg_type = EXPECTED[field.name]
        assert (field.type, field.nullable, field.metadata) == (kind, nullable, {PG_TYPE_META: pg_type.encode()}), (
            field.name
        )
    first, empty, edge = sorted(batch.to_pylist(), key=lambda r: r["id"])
    assert first == {
        "id": 1,
        "doc": '{"a": "x", "b": [1, 2.5]}',  # jsonb's text form: keys sorted by length, then bytes
        "amount": Decimal("1234567890.12"),
        "seen": datetime(2024, 3, 1, 10, 0, 0, 1, tzinfo=UTC),
        "key": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "jb": '{"k": null}',
        "js": '{"a" : 1}',  # json keeps its text as written
        "n": Decimal("-12345678901234567890.0123456789"),
        "nu": "NaN",
        "nbig": "123456789012345678901234567890123456789012.50000",
        "u": "00000000-0000-0000-0000-000000000001",
        "by": b"\x00\xff\x10",
        "d": date(1, 1, 1),
        "tm": time(23, 59, 59, 999999),
        "iv": "1 year 2 mons -3 days +04:05:06.5",
        "tstz": datetime(1970, 1, 1, tzinfo=UTC),
        "ts": datetime(2262, 4, 11, 23, 47, 16, 854775),
        "ch": "ab",  # char(n) as text: trailing blanks dropped
        "vc": "é",
        "ip": "10.1.2.3/24",
        "m": Decimal("9999.99"),
        "ai": [1, None, -3],
        "at": ["x,y", None, ""],
        "an": [Decimal("1.500"), Decimal("-2.250"), None],
        "au": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
        "ab": [True, False, None],
        "af": first["af"],  # NaN != NaN: checked below
        "ad": [date(2024, 2, 29)],
        "atz": [datetime(2024, 1, 1, 8, tzinfo=UTC)],
        "aiv": ["1 day", "-00:00:01"],
    }
    assert first["af"][0] == 1.5 and first["af"][1] != first["af"][1] and first["af"][2] == float("-inf")
    assert empty["key"] == "ffffffff-ffff-ffff-ffff-ffffffffffff" and empty["doc"] == "[]"
    assert all(v is None for k, v in empty.items() if EXPECTED[k][1])
    assert edge == {
        "id": 3,
        "doc": "{}",
        "amount": Decimal("-0.01"),
        "seen": datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
        "key": "12345678-1234-1234-1234-123456789abc",
        "jb": '"s"',
        "js": "[]",
        "n": Decimal("0E-10"),
        "nu": "-0.0015",
        "nbig": "0.00000",
        "u": None,
        "by": b"",
        "d": date(2000, 1, 1),
        "tm": time(0, 0),
        "iv": "00:00:00",
        "tstz": datetime(2000, 1, 1, tzinfo=UTC),
        "ts": datetime(2000, 1, 1),
        "ch": "",
        "vc": "",
        "ip": "::1/128",  # inet's cast to text writes the netmask, its output function leaves /128 out
        "m": Decimal("-0.50"),
        **{name: [] for name in ("ai", "at", "an", "au", "ab", "af", "ad", "atz", "aiv")},
    }


@pytest.mark.parametrize(
    ("ddl", "value", "message"),
    [
        ("timestamptz", "'infinity'", "column 'v' holds 'infinity'"),
        ("date", "'-infinity'", "column 'v' holds 'infinity'"),
        ("timestamp[]", "'{2024-01-01,infinity}'", "column 'v' holds 'infinity'"),
        ("numeric(10,2)", "'NaN'", "column 'v' cannot be read as decimal128"),
        ("int[]", "'{{1,2},{3,4}}'", "multi-dimensional array"),
    ],
)
def test_values_arrow_cannot_hold_fail_naming_the_column(pg_admin, pg_schema: str, ddl, value, message) -> None:
    pg_admin.execute(f"CREATE TABLE {pg_schema}.bad (id int PRIMARY KEY, v {ddl})")
    pg_admin.execute(f"INSERT INTO {pg_schema}.bad VALUES (1, NULL), (2, {value})")
    with pytest.raises(UserError, match=message):
        batches(source(pg_schema, "bad"))


def test_a_split_survives_losing_its_connection(pg_admin, pg_schema: str) -> None:
    pg_admin.execute(f"CREATE TABLE {pg_schema}.src (id bigint PRIMARY KEY, v text)")
    pg_admin.execute(f"INSERT INTO {pg_schema}.src SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    pg_admin.execute(f"ANALYZE {pg_schema}.src")
    src = source(pg_schema, "src", splits=1, chunk_rows=2_000)
    [split] = src.splits()
    reader = src.read(split, None)
    ids = next(reader).batch.column("id").to_pylist()
    killed = pg_admin.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE %s",
        (f"%{pg_schema}%",),
    ).fetchone()[0]
    assert killed == 1  # the split reader's ADBC session, idle after (or busy with) its last chunk
    ids += [i for b in reader for i in b.batch.column("id").to_pylist()]
    assert sorted(ids) == list(range(1, 20_001))


def test_a_session_killed_while_its_rows_stream_is_read_again(pg_admin) -> None:
    """Killed in the middle of a result, ADBC's reader raises a plain OSError with libpq's text (no SQLSTATE):
    it is a lost session like any other, so the statement is read again on a new one."""
    import threading
    import time as clock

    from bizon_fast.clients.postgres import ArrowSession, is_transient, with_retries

    name = f"bf-kill-{threading.get_ident()}"
    session = ArrowSession.open(PG_DSN, key="source", application_name=name)
    sql = "SELECT g, md5(g::text) AS v FROM generate_series(1, 3000000) g"
    errors: list[BaseException] = []

    def kill_once() -> None:
        clock.sleep(0.3)
        pg_admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,))

    def reconnect() -> None:
        nonlocal session
        session = ArrowSession.open(PG_DSN, key="source", application_name=f"{name}-again")

    def attempt():  # noqa: ANN202 - a pyarrow Table
        try:
            return session.table(sql)
        except Exception as exc:
            errors.append(exc)
            raise

    threading.Thread(target=kill_once, daemon=True).start()
    table = with_retries(attempt, reconnect=reconnect, what="reading", conn=lambda: None)
    assert table.num_rows == 3_000_000
    assert len(errors) == 1 and type(errors[0]) is OSError and "FATAL" in str(errors[0])
    assert is_transient(errors[0])
    assert not is_transient(OSError("[libpq] Execution error [PGRES_FATAL_ERROR]: ERROR:  division by zero"))
    session.close()


def test_literals_in_the_sql_are_quoted_and_percent_signs_kept(pg_admin, pg_schema: str) -> None:
    pg_admin.execute(f"CREATE TABLE {pg_schema}.src (id bigint PRIMARY KEY, tag text)")
    pg_admin.execute(f"INSERT INTO {pg_schema}.src VALUES (1, 'a%'), (2, 'it''s'), (3, 'it''t'), (-7, 'z\\\\')")
    inc = source(pg_schema, "src", sync_mode="incremental", cursor_field="tag")
    inc.watermark = "it's"  # a quote in the watermark: a literal, never SQL
    assert sorted(i for b in batches(inc) for i in b.column("id").to_pylist()) == [-7, 3]
    query = f"SELECT id, tag FROM {pg_schema}.src WHERE tag LIKE 'a%' OR id < 0"
    keyed = source(pg_schema, "q", query=query, split_column="id", splits=2)
    assert sorted(i for b in batches(keyed) for i in b.column("id").to_pylist()) == [-7, 1]
    whole = source(pg_schema, "q", query=query)
    assert sorted(i for b in batches(whole) for i in b.column("id").to_pylist()) == [-7, 1]
