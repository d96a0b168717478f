"""BigQuery ``write_disposition: merge`` (issue 16), through the CLI: a Postgres table loaded incrementally by
``updated_at`` into the BigQuery emulator, merged by key from the job's stage at publish (``MERGE``), soft
deletes, schema evolution between runs, and SIGKILLs during the merge run.

The emulator runs MERGE, ROW_NUMBER, multi-statement transactions and ``ALTER TABLE ADD COLUMN`` / ``ALTER COLUMN
SET DATA TYPE``; its table metadata (``get_table``) misses DDL changes, so the columns are read as a query sees
them (``live_types``), as the destination does itself.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from bizon_fast.connectors.registry import destination_class
from bizon_fast.destination.base import DestinationContext
from native_bench.services import BQEMU_PROJECT as PROJECT
from native_bench.services import start_run
from tests.faults import fault_line, job_rows, run_log
from tests.services.postgres import PG_DSN

pytestmark = pytest.mark.service

ROWS = 10_000
EARLY, LATE, LATER = (datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3))


def query(emu, sql: str) -> list[tuple]:
    client = emu.client()
    try:
        return [tuple(r.values()) for r in client.query(sql).result()]
    finally:
        client.close()


def live_types(emu, dataset: str, table: str = "events") -> dict[str, str]:
    client = emu.client()
    try:
        schema = client.query(f"SELECT * FROM `{dataset}.{table}` WHERE FALSE").result().schema
        return {f.name: f.field_type for f in schema}
    finally:
        client.close()


def state(emu, dataset: str) -> tuple:
    """(rows, distinct ids, rows with v 'new', sum of ids): the target's content in one comparable value."""
    return query(
        emu,
        f"SELECT COUNT(*), COUNT(DISTINCT id), COUNTIF(v = 'new'), SUM(id) FROM `{dataset}.events`",
    )[0]


def source_table(pg, schema: str, rows: int = ROWS) -> None:
    pg.execute(
        f"CREATE TABLE {schema}.src (id bigint PRIMARY KEY, v text, qty int, deleted boolean NOT NULL DEFAULT false,"
        " updated_at timestamptz NOT NULL)"
    )
    pg.execute(
        f"INSERT INTO {schema}.src SELECT g, md5(g::text), g %% 7, false, %s FROM generate_series(1, %s::int) g",
        (EARLY, rows),
    )


def changes(pg, schema: str) -> None:
    """1,000 rows updated, 100 soft-deleted, 500 new: the next run's job reads exactly these 1,600."""
    pg.execute(f"UPDATE {schema}.src SET v = 'new', updated_at = %s WHERE id BETWEEN 1 AND 1000", (LATE,))
    pg.execute(f"UPDATE {schema}.src SET deleted = true, updated_at = %s WHERE id BETWEEN 5001 AND 5100", (LATE,))
    pg.execute(
        f"INSERT INTO {schema}.src SELECT g, md5(g::text), 1, false, %s FROM generate_series(%s::int, %s::int) g",
        (LATE, ROWS + 1, ROWS + 500),
    )


AFTER_CHANGES = ROWS + 500 - 100


def write_config(tmp_path: Path, schema: str, dataset: str, extra: str = ", primary_key: [id]") -> str:
    (tmp_path / "p.yml").write_text(
        f"""
name: bq-merge
source: {{name: postgres, stream: {schema}.src, dsn: "{PG_DSN}", splits: 3, chunk_rows: 1500,
  sync_mode: incremental, cursor_field: updated_at}}
destination:
  name: bigquery
  config: {{project_id: {PROJECT}, dataset_id: {dataset}, destination_id: events, buffer_size: 0,
    write_disposition: merge, deleted_flag: deleted{extra}}}
engine:
  runner: {{config: {{max_workers: 2, max_restarts: 5}}}}
"""
    )
    return "p.yml"


def expected_sum() -> int:
    return sum(range(1, ROWS + 501)) - sum(range(5001, 5101))


def test_cli_merge_updates_deletes_and_evolves_the_schema(bq_emulator, bq_dataset, pg_admin, pg_schema, cli, tmp_path):
    emu, dataset = bq_emulator, bq_dataset
    source_table(pg_admin, pg_schema)
    config = write_config(tmp_path, pg_schema, dataset)
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    assert state(emu, dataset) == (ROWS, ROWS, 0, sum(range(1, ROWS + 1)))

    changes(pg_admin, pg_schema)
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    # every changed row once with its new values, the soft-deleted keys gone, the new keys in
    assert state(emu, dataset) == (AFTER_CHANGES, AFTER_CHANGES, 1000, expected_sum())
    assert query(emu, f"SELECT COUNT(*) FROM `{dataset}.events` WHERE id BETWEEN 5001 AND 5100 OR deleted") == [(0,)]
    assert query(emu, f"SELECT v, updated_at FROM `{dataset}.events` WHERE id = 7") == [("new", LATE)]

    # a column added and a column widened (int -> numeric) at the source between two runs
    pg_admin.execute(f"ALTER TABLE {pg_schema}.src ADD COLUMN note text")
    pg_admin.execute(f"ALTER TABLE {pg_schema}.src ALTER COLUMN qty TYPE numeric(20, 2)")
    pg_admin.execute(
        f"UPDATE {pg_schema}.src SET note = 'n' || id, qty = 12345678901.25, updated_at = %s WHERE id <= 10", (LATER,)
    )
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    types = live_types(emu, dataset)
    assert (types["note"], types["qty"]) == ("STRING", "NUMERIC"), types
    assert query(emu, f"SELECT COUNT(note), COUNTIF(note IS NULL) FROM `{dataset}.events`") == [
        (10, AFTER_CHANGES - 10)
    ]
    assert query(emu, f"SELECT qty, note FROM `{dataset}.events` WHERE id = 3") == [(Decimal("12345678901.25"), "n3")]
    assert query(emu, f"SELECT qty FROM `{dataset}.events` WHERE id = 20") == [(Decimal(20 % 7),)]
    assert state(emu, dataset) == (AFTER_CHANGES, AFTER_CHANGES, 1000, expected_sum())
    log = "\n".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "column note added (STRING; existing rows null)" in log
    assert "column qty widened from INT64 to NUMERIC" in log

    # an incompatible change (text -> int): one line naming the column and both types, nothing published
    before = state(emu, dataset)
    pg_admin.execute(f"ALTER TABLE {pg_schema}.src ALTER COLUMN v TYPE int USING 7")
    pg_admin.execute(f"UPDATE {pg_schema}.src SET updated_at = now() WHERE id <= 5")
    done = cli("run", config, "--quiet")
    assert done.returncode != 0
    assert "column 'v' is STRING in the table and INT64 in this job" in done.stderr, done.stderr
    line = next(x for x in done.stderr.splitlines() if "column 'v'" in x)
    assert "nothing was published" in line
    assert state(emu, dataset) == before
    assert live_types(emu, dataset)["v"] == "STRING"


@pytest.mark.parametrize("point", ["bigquery.publish_evolved", "bigquery.publish_unrecorded"])
def test_cli_merge_rerun_after_sigkill_is_exact(
    bq_emulator, bq_dataset, pg_admin, pg_schema, tmp_path, monkeypatch, point
):
    """The supervisor SIGKILLed during the merge run's publish (schema evolved but nothing merged; merged and
    recorded, the stage not dropped); the key is the source's (the Postgres catalog's primary key)."""
    emu, dataset = bq_emulator, bq_dataset
    source_table(pg_admin, pg_schema)
    config = write_config(tmp_path, pg_schema, dataset, extra="")
    first = start_run(tmp_path, config)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    changes(pg_admin, pg_schema)
    pg_admin.execute(f"ALTER TABLE {pg_schema}.src ADD COLUMN note text")
    pg_admin.execute(f"UPDATE {pg_schema}.src SET note = 'x' WHERE id BETWEEN 1 AND 1000")

    monkeypatch.setenv("BIZON_FAST_FAULT", point)
    monkeypatch.setenv("BIZON_FAST_FAULT_MARK", str(tmp_path / "fault.mark"))
    killed = start_run(tmp_path, config)
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, err
    assert fault_line(run_log(tmp_path, killed.pid), point)[0] == "supervisor"
    job_id, status, _, _ = job_rows(tmp_path)[-1]
    assert status == "running"

    rerun = start_run(tmp_path, config)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert job_rows(tmp_path)[-1][:3] == (job_id, "succeeded", 2)
    assert state(emu, dataset) == (AFTER_CHANGES, AFTER_CHANGES, 1000, expected_sum())
    assert query(emu, f"SELECT COUNTIF(note = 'x'), COUNTIF(note IS NULL) FROM `{dataset}.events`") == [
        (1000, AFTER_CHANGES - 1000)
    ]
    published = query(emu, f"SELECT COUNT(*) FROM `{dataset}.bizon_fast_published` WHERE job_id = '{job_id}'")
    assert published == [(1,)]
    tables = {t.table_id for t in emu.client().list_tables(f"{PROJECT}.{dataset}")}
    assert "events_incremental" not in tables


def test_last_version_of_a_key_wins_within_a_job(bq_emulator, bq_dataset) -> None:
    """Within one job: the greatest cursor wins, then the last to arrive (split, seq, row); a replayed write is
    published once; a key deleted by its last version is not inserted."""
    cls = destination_class("bigquery")
    config = cls.config_class.model_validate(
        {
            "project_id": PROJECT,
            "dataset_id": bq_dataset,
            "destination_id": "events",
            "write_disposition": "merge",
            "primary_key": ["id"],
            "deleted_flag": "gone",
        }
    )
    context = DestinationContext(
        job_id="j1", pipeline="p", source_name="s", stream="e", sync_mode="incremental", cursor_field="u"
    )

    def batch(ids: list[int], u: list[int], v: list[str], gone: list[bool] | None = None) -> pa.RecordBatch:
        gone = gone or [False] * len(ids)
        return pa.record_batch({"id": ids, "u": u, "v": v, "gone": gone})

    d = cls(config, context)
    d.prepare({})
    d.write("a", 0, 1, [batch([1, 2, 3], [5, 1, 1], ["a-1", "a-2", "a-3"]), batch([2, 2], [1, 1], ["x", "a-2b"])])
    d.write("a", 0, 1, [batch([1, 2, 3], [5, 1, 1], ["a-1", "a-2", "a-3"]), batch([2, 2], [1, 1], ["x", "a-2b"])])
    d.write("b", 0, 0, [batch([1, 3, 4], [4, 1, 1], ["b-1", "b-3", "b-4"], [False, False, True])])
    d.publish()
    d.close()
    rows = query(bq_emulator, f"SELECT id, v FROM `{bq_dataset}.events` ORDER BY id")
    # 1: cursor 5 beats 4; 2: the same cursor, the last row of split a; 3: split b after a; 4: deleted, never in
    assert rows == [(1, "a-1"), (2, "a-2b"), (3, "b-3")]


def test_evolution_policies_decide_before_anything_runs() -> None:
    """evolve adds and widens, freeze leaves new columns out, fail refuses any change; an incompatible change is
    refused under every policy, naming the column and both types (no emulator needed: a plan, not a run)."""
    from google.cloud.bigquery import SchemaField

    from bizon_fast.connectors.destinations.bigquery.merge import evolve
    from bizon_fast.errors import StepFailed

    live = [SchemaField("id", "INTEGER"), SchemaField("n", "NUMERIC"), SchemaField("s", "STRING")]
    meta = [SchemaField("id", "INT64"), SchemaField("n", "NUMERIC"), SchemaField("s", "STRING", max_length=10)]
    job = [SchemaField("id", "INT64"), SchemaField("n", "BIGNUMERIC"), SchemaField("s", "STRING")]
    job += [SchemaField("new", "TIMESTAMP"), SchemaField("tags", "STRING", mode="REPEATED")]
    plan = evolve("p.d.t", job, live, meta, "evolve")
    assert plan.columns == ["id", "n", "s", "new", "tags"]
    assert plan.ddl == [
        "ALTER TABLE `p.d.t` ADD COLUMN IF NOT EXISTS `new` TIMESTAMP, ADD COLUMN IF NOT EXISTS `tags` ARRAY<STRING>",
        "ALTER TABLE `p.d.t` ALTER COLUMN `n` SET DATA TYPE BIGNUMERIC",
        "ALTER TABLE `p.d.t` ALTER COLUMN `s` SET DATA TYPE STRING",
    ]
    assert "column s widened from STRING(10) to STRING" in plan.changes
    same = [SchemaField("id", "INT64"), SchemaField("n", "INT64"), SchemaField("s", "STRING"), *job[3:]]
    frozen = evolve("p.d.t", same, live, live, "freeze")  # INT64 into NUMERIC: taken as it is
    assert (frozen.columns, frozen.ddl) == (["id", "n", "s"], [])
    with pytest.raises(StepFailed, match="column 'new' .* is new and schema_evolution is fail"):
        evolve("p.d.t", same, live, live, "fail")
    with pytest.raises(StepFailed, match="column 'n' is NUMERIC in the table and BIGNUMERIC in this job .*freeze"):
        evolve("p.d.t", job, live, live, "freeze")
    for policy in ("evolve", "freeze", "fail"):
        with pytest.raises(StepFailed, match="column 'id' is INT64 in the table and STRING in this job"):
            evolve("p.d.t", [SchemaField("id", "STRING")], live, live, policy)


def _direct(dataset: str, job: str, sync_mode: str, **config: object):
    cls = destination_class("bigquery")
    details = cls.config_class.model_validate(
        {"project_id": PROJECT, "dataset_id": dataset, "destination_id": "events", **config}
    )
    context = DestinationContext(
        job_id=job, pipeline="p", source_name="s", stream="e", sync_mode=sync_mode, cursor_field="u"
    )
    d = cls(details, context)
    d.prepare({})
    return d


def _run(dataset: str, job: str, sync_mode: str, batches: list[pa.RecordBatch], **config: object) -> None:
    d = _direct(dataset, job, sync_mode, **config)
    try:
        d.write("a", 0, 0, batches)
        d.publish()
    finally:
        d.close()


MERGE = {"write_disposition": "merge", "primary_key": ["id"], "deleted_flag": "gone"}


def test_merge_edge_rules_match_postgres_and_file(bq_emulator, bq_dataset) -> None:
    """A full refresh with merge rebuilds the table from the job's rows (one per key, the deleted dropped); a NULL
    key and a non-boolean deleted_flag fail the job in one line with nothing published; an explicit append /
    replace overrides the sync mode."""
    from bizon_fast.errors import StepFailed

    def rows() -> list[tuple]:
        return query(bq_emulator, f"SELECT id, v FROM `{bq_dataset}.events` ORDER BY id, v")

    def b(ids: list, v: list[str], gone: list | None = None, u: list[int] | None = None) -> pa.RecordBatch:
        return pa.record_batch(
            {"id": pa.array(ids, pa.int64()), "u": u or [1] * len(ids), "v": v, "gone": gone or [False] * len(ids)}
        )

    _run(bq_dataset, "j1", "incremental", [b([1, 2, 3], ["a", "b", "c"])], **MERGE)
    assert rows() == [(1, "a"), (2, "b"), (3, "c")]
    # full refresh (or reset) + merge: the job's rows alone, the last version of each key, deleted keys dropped
    _run(
        bq_dataset, "j2", "full_refresh", [b([2, 2, 4, 5], ["x", "y", "d", "e"], [False, False, False, True])], **MERGE
    )
    assert rows() == [(2, "y"), (4, "d")]
    # a NULL in the key: one line naming the key and the count, nothing published
    with pytest.raises(StepFailed, match=r"primary_key: 2 rows have a NULL in the merge key \(id\); nothing was"):
        _run(bq_dataset, "j3", "incremental", [b([None, 6, None], ["n", "f", "n"])], **MERGE)
    with pytest.raises(StepFailed, match=r"primary_key: 1 rows have a NULL in the merge key \(id\)"):
        _run(bq_dataset, "j3f", "full_refresh", [b([None, 6], ["n", "f"])], **MERGE)
    # a deleted_flag that is not a boolean column
    strings = pa.record_batch({"id": [7], "u": [1], "v": ["g"], "gone": ["yes"]})
    with pytest.raises(StepFailed, match=r"deleted_flag: column 'gone' is STRING, a boolean is needed; nothing was"):
        _run(bq_dataset, "j4", "incremental", [strings], **MERGE)
    assert rows() == [(2, "y"), (4, "d")]
    # explicit dispositions override the sync mode
    _run(bq_dataset, "j5", "full_refresh", [b([9], ["i"])], write_disposition="append")
    assert rows() == [(2, "y"), (4, "d"), (9, "i")]
    _run(bq_dataset, "j6", "incremental", [b([8], ["h"])], write_disposition="replace")
    assert rows() == [(8, "h")]
