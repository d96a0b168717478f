"""Crashes at exact steps (named fault points), through the CLI with real processes, for file and postgres.

A random SIGKILL mostly lands while a worker waits; these tests kill the process at the step that matters
(see ``bizon_fast/faults.py``), armed by ``BIZON_FAST_FAULT`` in the run's environment, and check the claims
of README's "Delivery contract" at that step:

- a worker point (``consumer.after_write``, ``producer.after_fill``, ``file.mid_part_write``,
  ``postgres.mid_write``): the worker named in the fault line dies, the supervisor logs its death and a
  restart, a replacement works, and the run ends with exit 0 in the same invocation, every row once with
  the values the source generated;
- a supervisor point (``file.publish``, ``postgres.publish``, ``supervisor.after_publish``): every row is
  committed, the supervisor dies (exit -9), and the same command resumes the same job (attempt 2) and
  publishes exactly once: no row twice, the previous content replaced (full refresh) or kept once
  (incremental), no temporary or staging leftovers.

``BIZON_FAST_FAULT_MARK`` makes the kill happen once per test: the replacement and the rerun pass unharmed.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bizon_fast.connectors.sources.synthetic.source import SCHEMA
from native_bench.services import start_run
from tests.faults import (
    assert_synthetic_exact,
    committed_rows,
    expected_synthetic,
    fault_line,
    job_rows,
    read_synthetic_json,
    run_log,
)
from tests.services.postgres import PG_DSN

pytestmark = pytest.mark.slow

ROWS = 200_000
SENTINEL_ID = -1  # a row of the previous content: a full refresh drops it, an incremental run keeps it once


# ---------------------------------------------------------------- reading the output


def _without_sentinel(table: pa.Table, mode: str) -> pa.Table:
    """Check the previous content's row is there once (incremental) or gone (full refresh); return the rest."""
    old = pc.equal(table["id"], SENTINEL_ID)
    expected = 1 if mode == "incremental" else 0
    found = pc.sum(old).as_py() or 0
    assert found == expected, f"{mode}: the previous content's row is there {found} times, expected {expected}"
    return table.filter(pc.invert(old))


def _sentinel_row() -> pa.Table:
    row = expected_synthetic(1)
    return row.set_column(0, "id", pa.array([SENTINEL_ID], pa.int64()))


# ---------------------------------------------------------------- postgres


@pytest.fixture
def schema_for(request) -> str:
    """conftest's fresh ``pg_schema`` for a postgres test; a file test needs none and gets an empty name."""
    return request.getfixturevalue("pg_schema") if "postgres" in request.node.name else ""


def _pg(sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _pg_create_target(schema: str) -> None:
    """The previous content: a table of the synthetic columns holding one sentinel row."""
    _pg(
        f"CREATE TABLE {schema}.dst (id bigint, ts timestamptz, user_id bigint, amount double precision,"
        " quantity integer, category text, payload text)"
    )
    row = _sentinel_row().to_pylist()[0]
    _pg(f"INSERT INTO {schema}.dst VALUES (%s, %s, %s, %s, %s, %s, %s)", tuple(row[n] for n in SCHEMA.names))


def _pg_table(schema: str) -> pa.Table:
    rows = _pg(f"SELECT {', '.join(SCHEMA.names)} FROM {schema}.dst")
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in SCHEMA]
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, SCHEMA, strict=True)], names=SCHEMA.names)


def _pg_leftovers(schema: str) -> list[str]:
    """What a published job must not leave: its stage tables and its destination cursor rows."""
    left = [
        t
        for (t,) in _pg(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s", (schema, "dst_%")
        )
    ]
    if _pg("SELECT to_regclass(%s)", (f"{schema}.bizon_fast_destination_cursors",))[0][0]:
        n = _pg(f"SELECT count(*) FROM {schema}.bizon_fast_destination_cursors")[0][0]
        if n:
            left.append(f"{n} destination cursor rows")
    return left


# ---------------------------------------------------------------- runs


def _config(tmp_path: Path, dest: str, mode: str, schema: str, *, producers: int = 2, consumers: int = 2) -> str:
    """Full refresh or incremental of ROWS synthetic rows in ~20 ring slots, each written on its own."""
    if dest == "postgres":
        destination = f'{{name: postgres, config: {{dsn: "{PG_DSN}", destination_id: {schema}.dst, buffer_size: 0}}}}'
    else:
        destination = f"{{name: file, config: {{destination_id: out/events, format: {dest}, buffer_size: 0}}}}"
    incremental = ", sync_mode: incremental, cursor_field: id" if mode == "incremental" else ""
    (tmp_path / "p.yml").write_text(
        f"""
name: fault-points
source: {{name: synthetic, stream: events, rows: {ROWS}, splits: 4, batch_rows: 10000{incremental}}}
destination: {destination}
engine:
  queue: {{config: {{batch_size_mb: 1}}}}
  runner: {{config: {{producers: {producers}, consumers: {consumers}, max_restarts: 5}}}}
"""
    )
    return "p.yml"


def _previous_content(tmp_path: Path, dest: str, schema: str) -> None:
    """A target that already holds a row: the publish must replace it (full refresh) or keep it once."""
    if dest == "postgres":
        _pg_create_target(schema)
    elif dest == "parquet":
        (tmp_path / "out" / "events").mkdir(parents=True)
        pq.write_table(_sentinel_row(), tmp_path / "out" / "events" / "part-previous.parquet")
    else:
        row = _sentinel_row().to_pylist()[0]
        row["ts"] = row["ts"].isoformat(timespec="microseconds")
        line = {"bizon_id": "previous", "source_record_id": str(SENTINEL_ID), "source_data": json.dumps(row)}
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "events.json").write_text(json.dumps(line) + "\n")


def _check_output(tmp_path: Path, dest: str, mode: str, schema: str) -> None:
    """Every row once with the source's values, the previous content as the mode says, nothing left over."""
    if dest == "postgres":
        table = _pg_table(schema)
        assert not _pg_leftovers(schema), f"left after the publish: {_pg_leftovers(schema)}"
    elif dest == "parquet":
        table = ds.dataset(tmp_path / "out" / "events", format="parquet").to_table()
    else:
        table = read_synthetic_json(tmp_path / "out" / "events.json")
    assert_synthetic_exact(_without_sentinel(table, mode), ROWS)
    if dest != "postgres":
        hidden = [str(p.relative_to(tmp_path)) for p in (tmp_path / "out").rglob(".*")]
        assert not hidden, f"temporary or staging files left in the output: {hidden}"


@pytest.fixture
def arm(tmp_path: Path, monkeypatch) -> Iterator:
    def _arm(point: str) -> None:
        monkeypatch.setenv("BIZON_FAST_FAULT", point)
        monkeypatch.setenv("BIZON_FAST_FAULT_MARK", str(tmp_path / "fault.mark"))

    yield _arm


# ---------------------------------------------------------------- worker points


def _marked(cases: list[tuple[str, ...]]) -> list:
    """The Postgres cases take ``pg_schema`` at run time (``schema_for``), where the hook that marks ``service``
    cannot see it: mark them here, so ``-m "not service"`` leaves them out."""
    return [pytest.param(*case, marks=pytest.mark.service) if "postgres" in case else case for case in cases]


WORKER_POINTS = [
    # (point, role of the process that dies, destination, mode)
    ("consumer.after_write@3", "consumer", "parquet", "full_refresh"),
    ("consumer.after_write@3", "consumer", "json", "full_refresh"),
    ("consumer.after_write@3", "consumer", "postgres", "full_refresh"),
    ("consumer.after_write@3", "consumer", "postgres", "incremental"),
    ("producer.after_fill@3", "producer", "parquet", "full_refresh"),
    ("producer.after_fill@3", "producer", "json", "full_refresh"),
    ("producer.after_fill@3", "producer", "postgres", "full_refresh"),
    ("file.mid_part_write@3", "consumer", "parquet", "full_refresh"),
    ("file.mid_part_write@3", "consumer", "json", "full_refresh"),
    ("postgres.mid_write@3", "consumer", "postgres", "full_refresh"),
    ("postgres.mid_write@3", "consumer", "postgres", "incremental"),
]


@pytest.mark.parametrize(("point", "role", "dest", "mode"), _marked(WORKER_POINTS), ids=lambda v: str(v))
def test_worker_dies_at_the_point_and_the_run_recovers_exactly(
    tmp_path: Path, arm, schema_for: str, point: str, role: str, dest: str, mode: str
) -> None:
    # One worker of the dying role: only its replacement can take over the dead one's split or batches, so
    # "working again" proves the replacement ran, whatever the machine's speed (with two, the other one may
    # finish the run before the replacement is up).
    counts = {"producers": 1} if role == "producer" else {"consumers": 1}
    config = _config(tmp_path, dest, mode, schema_for, **counts)
    _previous_content(tmp_path, dest, schema_for)
    arm(point)
    proc = start_run(tmp_path, config)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    log = run_log(tmp_path, proc.pid)
    who, pid = fault_line(log, point.partition("@")[0])
    assert who.startswith(f"{role}-") and pid != proc.pid, f"the fault killed {who} (pid {pid}), not a {role}"
    # the supervisor saw that very worker die, restarted it, and the replacement did work
    assert re.search(rf"supervisor bizon_fast\.supervisor: {who} died \(killed by SIGKILL\); restart 1 of 5", log), log
    assert f"{who} working again" in log, "the replacement did no work: the kill was not mid-run"
    assert log.count(" died (") == 1, "one death was injected, one must be seen"
    if point.startswith("consumer.after_write") and dest == "postgres":
        # the write was committed but not reported: its replay must find it, not add it again
        assert "is already written: skipped" in log or "overlaps earlier writes" in log, "the replay was not seen"
    [(_, status, attempt, _)] = job_rows(tmp_path)
    assert (status, attempt) == ("succeeded", 1)
    _check_output(tmp_path, dest, mode, schema_for)


# ---------------------------------------------------------------- supervisor points (publish)

SUPERVISOR_POINTS = [
    ("file.publish", "parquet", "full_refresh"),  # between moving the old dataset aside and the new one in
    ("file.publish", "parquet", "incremental"),  # after the first of the parts moved into the dataset
    ("file.publish", "json", "full_refresh"),  # parts removed, the ready file not swapped in yet
    ("file.publish", "json", "incremental"),
    ("postgres.publish", "postgres", "full_refresh"),  # table swapped, transaction not committed
    ("postgres.publish", "postgres", "incremental"),  # rows appended, transaction not committed
    ("supervisor.after_publish", "parquet", "full_refresh"),  # published, job not marked succeeded
    ("supervisor.after_publish", "json", "full_refresh"),
    ("supervisor.after_publish", "json", "incremental"),
    ("supervisor.after_publish", "postgres", "full_refresh"),
    ("supervisor.after_publish", "postgres", "incremental"),
]


@pytest.mark.parametrize(("point", "dest", "mode"), _marked(SUPERVISOR_POINTS), ids=lambda v: str(v))
def test_supervisor_dies_publishing_and_the_rerun_publishes_once(
    tmp_path: Path, arm, schema_for: str, point: str, dest: str, mode: str
) -> None:
    config = _config(tmp_path, dest, mode, schema_for)
    _previous_content(tmp_path, dest, schema_for)
    arm(point)
    proc = start_run(tmp_path, config)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL, err
    who, pid = fault_line(run_log(tmp_path, proc.pid), point)
    assert (who, pid) == ("supervisor", proc.pid), f"the fault killed {who} (pid {pid}), not the supervisor"
    [(job_id, status, attempt, _)] = job_rows(tmp_path)
    assert (status, attempt) == ("running", 1), "the job must be left unfinished by the kill"
    assert committed_rows(tmp_path) == ROWS, "a publish point comes after every row is committed"

    rerun = start_run(tmp_path, config)
    _, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    log = run_log(tmp_path, rerun.pid)
    assert f"resuming job {job_id} (attempt 2): 0 of 4 splits left, {ROWS} rows already committed" in log, log
    assert "fault point" not in log, "the rerun must pass the point unharmed"
    assert job_rows(tmp_path) == [(job_id, "succeeded", 2, None)], "the rerun must resume the job, not start a new one"
    _check_output(tmp_path, dest, mode, schema_for)
    if dest == "postgres":
        published = _pg(f"SELECT job_id FROM {schema_for}.bizon_fast_destination_published")
        assert published == [(job_id,)], f"the job must be published once: {published}"
