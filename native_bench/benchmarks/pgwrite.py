"""Postgres write path (issue 13): the destination's binary COPY encoder (``pgbinary.py`` + psycopg) vs ADBC's bulk
ingest (``adbc_driver_postgresql``, ``cursor.adbc_ingest``) on the same Arrow batches; the faster one is the
destination's (target: the encoder >= 1.0x ADBC's rows/s into the same table).

Method, in this process (the write step alone, no pipeline around it): ``rows`` rows of bigint, text, int,
timestamptz and a JSON document as text, cut in 128k-row batches, built once. Each contender first writes one
batch untimed (imports, connections); then each round runs every contender, the first one rotated, into a fresh
logged table, one transaction each (as the destination's consumer writes one transaction per buffer).
``pgbinary -> jsonb`` is the destination's path (the document kept as jsonb: the encoder writes jsonb's binary
form); ``pgbinary -> text`` and ``adbc_ingest -> text`` are the like-for-like pair (ADBC writes by Arrow type: a
string into jsonb, uuid or interval fails, so it cannot keep those types); ``adbc_ingest + INSERT ... SELECT
::jsonb`` is what keeping jsonb through ADBC would cost (a text stage, then a cast). After each run (outside the
timing) the table's count(*) and sum(id) are checked. Reported: the median wall seconds, rows/s and client CPU
seconds (this process; the server's share is not in it) of each, and the ratio of the encoder to ADBC.
``--quick``: 200k rows, one round.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from native_bench.benchmarks.external import skip_or_fail
from native_bench.context import Context
from native_bench.result import BenchResult, Target, fmt, median, ratio, table

NAME = "pgwrite"
TITLE = "Postgres write: the binary COPY encoder vs ADBC bulk ingest (same batches)"
ROWS, QUICK_ROWS = 1_000_000, 200_000
BATCH_ROWS = 131_072
DSN = os.environ.get("BIZON_FAST_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
URI = os.environ.get("BIZON_FAST_BENCH_PG_URI", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = f"native_bench_pgwrite_{os.getpid()}"
ENCODER_JSONB, ENCODER_TEXT = "pgbinary -> jsonb (the destination)", "pgbinary -> text"
ADBC_TEXT, ADBC_CAST = "adbc_ingest -> text", "adbc_ingest -> text stage + INSERT SELECT ::jsonb"
CONTENDERS = [ENCODER_JSONB, ENCODER_TEXT, ADBC_TEXT, ADBC_CAST]
COLUMNS = "id bigint, name text, age integer, ts timestamptz, doc {doc}, w bigint"


def _batches(rows: int) -> list[Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = pa.array(np.arange(rows, dtype=np.int64))
    text = pc.cast(ids, pa.string())
    batch = pa.record_batch(
        {
            "id": ids,
            "name": pc.binary_join_element_wise("name-", text, ""),
            "age": pa.array((np.arange(rows) % 90).astype(np.int32)),
            "ts": pa.array(
                np.arange(rows, dtype=np.int64) * 1_000_000 + 1_700_000_000_000_000, pa.timestamp("us", "UTC")
            ),
            "doc": pc.binary_join_element_wise('{"k": ', text, ', "tags": ["a", "b"], "ok": true}', ""),
            "w": pa.array(np.full(rows, 7, np.int64)),
        }
    )
    return [batch.slice(start, BATCH_ROWS) for start in range(0, rows, BATCH_ROWS)]


def _encoder(conn: Any, batches: list[Any], table_name: str, doc_oid: int) -> None:
    from bizon_fast.connectors.destinations.postgres.pgbinary import SIGNATURE, TRAILER, Encoder, PgColumn

    encoder = Encoder(
        [PgColumn("id", 20), PgColumn("name", 25), PgColumn("age", 23), PgColumn("ts", 1184)]
        + [PgColumn("doc", doc_oid)]
    )
    chunk = 8 << 20
    with conn.cursor() as cur, cur.copy(f"COPY {table_name} FROM STDIN (FORMAT binary)") as copy:
        copy.write(SIGNATURE)
        for batch in batches:
            body = memoryview(encoder.encode(batch.drop_columns(["w"]), 7))
            for start in range(0, len(body), chunk):
                copy.write(body[start : start + chunk])
        copy.write(TRAILER)
    conn.commit()


def _adbc(conn: Any, batches: list[Any], table_name: str, cast_into: str | None) -> None:
    import pyarrow as pa

    schema, name = table_name.split(".")
    with conn.cursor() as cur:
        reader = pa.RecordBatchReader.from_batches(batches[0].schema, batches)
        cur.adbc_ingest(name, reader, mode="append", db_schema_name=schema)
        if cast_into is not None:
            cur.execute(f"INSERT INTO {cast_into} SELECT id, name, age, ts, doc::jsonb, w FROM {table_name}")
    conn.commit()


def run(ctx: Context) -> BenchResult:
    try:
        import adbc_driver_postgresql.dbapi
        import psycopg

        admin = psycopg.connect(DSN, autocommit=True)
    except Exception as exc:  # a driver or the server missing: nothing to measure here
        return skip_or_fail(NAME, TITLE, f"no PostgreSQL or ADBC driver ({DSN}): {type(exc).__name__}: {exc}")
    rows = ctx.size(ROWS, QUICK_ROWS)
    batches = _batches(rows)
    expected = (rows, rows * (rows - 1) // 2)
    result = BenchResult(name=NAME, title=TITLE, description="")
    walls: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    cpus: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    try:
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        admin.execute(f"CREATE SCHEMA {SCHEMA}")
        writer = psycopg.connect(DSN)
        ingester = adbc_driver_postgresql.dbapi.connect(URI, autocommit=False)

        def fresh(name: str, doc: str) -> str:
            admin.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{name}")
            admin.execute(f"CREATE TABLE {SCHEMA}.{name} ({COLUMNS.format(doc=doc)})")
            return f"{SCHEMA}.{name}"

        def contender(name: str, batches: list[Any] = batches) -> tuple[Callable[[], None], str]:
            if name == ENCODER_JSONB:
                target = fresh("enc_jsonb", "jsonb")
                return (lambda: _encoder(writer, batches, target, 3802)), target
            if name == ENCODER_TEXT:
                target = fresh("enc_text", "text")
                return (lambda: _encoder(writer, batches, target, 25)), target
            if name == ADBC_TEXT:
                target = fresh("adbc_text", "text")
                return (lambda: _adbc(ingester, batches, target, None)), target
            stage, target = fresh("adbc_stage", "text"), fresh("adbc_jsonb", "jsonb")
            return (lambda: _adbc(ingester, batches, stage, target)), target

        for name in CONTENDERS:  # untimed: imports, connections, the server's caches
            contender(name, batches[:1])[0]()
        for r in range(ctx.rounds):
            order = CONTENDERS[r % len(CONTENDERS) :] + CONTENDERS[: r % len(CONTENDERS)]
            for name in order:
                fn, target = contender(name)
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                got = admin.execute(f"SELECT count(*), coalesce(sum(id), 0) FROM {target}").fetchone()
                if tuple(got) != expected:
                    raise RuntimeError(f"{name}: wrote (rows, sum(id)) {tuple(got)}, expected {expected}")
                walls[name].append(wall)
                cpus[name].append(cpu)
        writer.close()
        ingester.close()
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        admin.close()
    for name in CONTENDERS:
        wall = median(walls[name])
        result.rows.append(
            {
                "contender": name,
                "rows": rows,
                "wall_s": wall,
                "wall_s_rounds": walls[name],
                "rows_per_s": ratio(rows, wall),
                "client_cpu_s": median(cpus[name]),
            }
        )
    speedup = ratio(median(walls[ADBC_TEXT]), median(walls[ENCODER_TEXT]))
    result.metrics = {
        "encoder_text_wall_s": median(walls[ENCODER_TEXT]),
        "adbc_text_wall_s": median(walls[ADBC_TEXT]),
        "encoder_over_adbc": speedup,
        "encoder_jsonb_wall_s": median(walls[ENCODER_JSONB]),
        "adbc_cast_jsonb_wall_s": median(walls[ADBC_CAST]),
    }
    result.targets = [Target("pgbinary rows/s / ADBC rows/s (same table, doc as text)", speedup, 1.0)]
    result.notes.append(f"{rows:,} rows in {len(batches)} batches; {ctx.rounds} round(s), first contender rotated")
    result.markdown = table(
        ["contender", "rows", "wall s (median)", "all walls s", "rows/s", "client CPU s", "vs adbc_ingest -> text"],
        [
            [
                r["contender"],
                fmt(r["rows"]),
                fmt(r["wall_s"], 2),
                ", ".join(f"{w:.2f}" for w in r["wall_s_rounds"]),
                fmt(r["rows_per_s"]),
                fmt(r["client_cpu_s"], 2),
                fmt(ratio(median(walls[ADBC_TEXT]), r["wall_s"]), 2, "x"),
            ]
            for r in result.rows
        ],
    )
    return result
