"""BigQuery end to end against ``bqemulator`` (the real client libraries, pointed at the emulator by
``BIZON_FAST_BIGQUERY_ENDPOINT`` / ``BIZON_FAST_BIGQUERY_GRPC``; nothing is mocked).

The emulator is installed once into ``.venv-bqemu`` (see ``native_bench/services.py``); when that fails the tests
skip (and fail in CI, see ``need_service``). Each test uses a dataset of its own.

Emulator shortcomings met here, each noted where it matters:
- upload load jobs are not registered under their job id: no ``409`` for a replayed id and ``get_job`` 404s,
  so a replay always loads again (the publish dedupe is what makes it exact, and it is what is tested);
- loading into a missing table fails (the destination creates its stage first, as it must anyway);
- ``BIGNUMERIC`` columns cannot be created (DuckDB decimals stop at 38 digits);
- committing a pending Storage Write stream fails when the table has a RECORD column;
- insertAll ignores ``insertId`` (no best-effort dedupe).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import google.cloud.bigquery  # noqa: F401 - the [test] extra installs it: a missing package is a failure
import pyarrow as pa
import pytest

from bizon_fast.config.engine import BigQueryBackendDetails
from bizon_fast.connectors.destinations.bigquery.cover import best_cover
from bizon_fast.connectors.destinations.bigquery.staged import BOOKKEEPING
from bizon_fast.connectors.destinations.bigquery.types import bq_schema
from bizon_fast.connectors.registry import destination_class
from bizon_fast.destination.base import DestinationContext
from bizon_fast.source.records import records_to_batch
from native_bench.services import BQEMU_PROJECT as PROJECT
from native_bench.services import Emulator, start_run, workers_of
from tests.faults import kill_workers_randomly

# ---------------------------------------------------------------- no emulator needed


def test_arrow_to_bigquery_types() -> None:
    schema = pa.schema(
        [
            ("b", pa.bool_()),
            ("i", pa.int32()),
            ("f", pa.float32()),
            ("n", pa.decimal128(38, 9)),
            ("bn", pa.decimal256(76, 38)),
            ("ts", pa.timestamp("us", "UTC")),
            ("dt", pa.timestamp("ns")),
            ("d", pa.date32()),
            ("t", pa.time64("us")),
            ("s", pa.large_string()),
            ("y", pa.binary()),
            ("l", pa.list_(pa.int64())),
            ("r", pa.struct([("a", pa.string()), ("b", pa.list_(pa.float64()))])),
            ("ll", pa.list_(pa.list_(pa.int8()))),
            ("dict", pa.dictionary(pa.int32(), pa.string())),
        ]
    )
    got = {f.name: (f.field_type, f.mode) for f in bq_schema(schema)}
    assert got == {
        "b": ("BOOL", "NULLABLE"),
        "i": ("INT64", "NULLABLE"),
        "f": ("FLOAT64", "NULLABLE"),
        "n": ("NUMERIC", "NULLABLE"),
        "bn": ("BIGNUMERIC", "NULLABLE"),
        "ts": ("TIMESTAMP", "NULLABLE"),
        "dt": ("DATETIME", "NULLABLE"),
        "d": ("DATE", "NULLABLE"),
        "t": ("TIME", "NULLABLE"),
        "s": ("STRING", "NULLABLE"),
        "y": ("BYTES", "NULLABLE"),
        "l": ("INT64", "REPEATED"),
        "r": ("RECORD", "NULLABLE"),
        "ll": ("JSON", "NULLABLE"),
        "dict": ("STRING", "NULLABLE"),
    }
    record = next(f for f in bq_schema(schema) if f.name == "r")
    assert [(f.name, f.field_type, f.mode) for f in record.fields] == [
        ("a", "STRING", "NULLABLE"),
        ("b", "FLOAT64", "REPEATED"),
    ]


def test_best_cover_keeps_each_seq_once() -> None:
    # [0,3] loaded by a consumer that died before reporting, replayed as [0,1] and [2,5]; [6,6] twice
    writes = [(0, 3, 1), (0, 1, 2), (2, 5, 3), (6, 6, 4), (6, 6, 5), (8, 9, 6)]
    keep = set(best_cover(writes))
    covered = [s for f, la, w in writes if w in keep for s in range(f, la + 1)]
    assert sorted(covered) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert best_cover([]) == []


# ---------------------------------------------------------------- emulator


@pytest.fixture
def emulator(bq_emulator: Emulator) -> Emulator:
    """The session's emulator (``tests/services/bigquery.py``), under the name these tests and
    ``test_bigquery_faults`` use."""
    return bq_emulator


@pytest.fixture
def dataset(bq_dataset: str) -> str:
    """A dataset of this test's own (``tests/services/bigquery.py``)."""
    return bq_dataset


def query(emulator, sql: str) -> list[tuple]:
    client = emulator.client()
    try:
        return [tuple(r.values()) for r in client.query(sql).result()]
    finally:
        client.close()


def ids_of(emulator, dataset: str, table: str = "events") -> tuple:
    return query(emulator, f"SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM `{dataset}.{table}`")[0]


def pipeline(
    tmp_path: Path,
    dataset: str,
    *,
    destination: str = "bigquery",
    rows: int = 50_000,
    splits: int = 4,
    extra_dest: str = "",
    extra_source: str = "",
    backend: str | None = None,
    name: str = "bq",
    batch_rows: int = 5_000,
) -> str:
    backend = backend or f"{{type: sqlite, config: {{database: {tmp_path / 'ckpt'}}}}}"
    (tmp_path / "pipeline.yml").write_text(
        f"""
name: {name}
source: {{name: synthetic, stream: events, rows: {rows}, splits: {splits}, batch_rows: {batch_rows}{extra_source}}}
destination:
  name: {destination}
  config: {{project_id: {PROJECT}, dataset_id: {dataset}, destination_id: events, buffer_size: 0{extra_dest}}}
engine:
  backend: {backend}
  runner: {{config: {{max_workers: 2, max_restarts: 50}}}}
"""
    )
    return "pipeline.yml"


def column_types(emulator, dataset: str, table: str = "events") -> dict[str, str]:
    client = emulator.client()
    try:
        # legacy and standard names are the same types (a CTAS reports INTEGER, a created table INT64)
        legacy = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
        schema = client.get_table(f"{PROJECT}.{dataset}.{table}").schema
        return {f.name: legacy.get(f.field_type, f.field_type) for f in schema}
    finally:
        client.close()


def tables_of(emulator, dataset: str) -> set[str]:
    client = emulator.client()
    try:
        return {t.table_id for t in client.list_tables(f"{PROJECT}.{dataset}")}
    finally:
        client.close()


TYPED = {
    "id": "INTEGER",
    "ts": "TIMESTAMP",
    "user_id": "INTEGER",
    "amount": "FLOAT",
    "quantity": "INTEGER",
    "category": "STRING",
    "payload": "STRING",
}


def test_cli_bigquery_full_refresh_swaps_and_rerun_replaces(emulator, dataset, cli, tmp_path: Path) -> None:
    config = pipeline(tmp_path, dataset)
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    assert ids_of(emulator, dataset) == (50_000, 50_000, 0, 49_999)
    assert column_types(emulator, dataset) == TYPED
    assert "events_temp" not in tables_of(emulator, dataset)
    done = cli("run", config, "--quiet")  # a second full refresh replaces, never doubles
    assert done.returncode == 0, done.stderr
    assert ids_of(emulator, dataset) == (50_000, 50_000, 0, 49_999)


def test_cli_streaming_v2_full_refresh(emulator, dataset, cli, tmp_path: Path) -> None:
    """Storage Write API, Arrow rows, pending streams (the emulator has them; RECORD columns excepted)."""
    config = pipeline(tmp_path, dataset, destination="bigquery_streaming_v2", rows=30_000)
    for _ in (1, 2):
        done = cli("run", config, "--quiet")
        assert done.returncode == 0, done.stderr
        assert ids_of(emulator, dataset) == (30_000, 30_000, 0, 29_999)
    assert column_types(emulator, dataset) == TYPED


def test_v2_splits_large_writes_under_the_request_limit(emulator, dataset) -> None:
    from bizon_fast.connectors.destinations.bigquery_streaming_v2 import destination as storage_write

    d = dest(dataset, "bigquery_streaming_v2")
    d.prepare({})
    big = pa.record_batch({"id": pa.array(range(40_000), pa.int64()), "pad": pa.array(["x" * 500] * 40_000)})
    d.write("s0", 0, 0, [big])  # ~20 MB: at least three requests
    assert d.requests >= 3 and all(b.nbytes <= storage_write.REQUEST_BYTES for b in storage_write.chunks(pa.table(big)))
    d.publish()
    assert ids_of(emulator, dataset) == (40_000, 40_000, 0, 39_999)


def test_cli_legacy_streaming_appends_with_microseconds(emulator, dataset, cli, tmp_path: Path) -> None:
    """insertAll: at-least-once, appends in every mode (as bizon); the emulator ignores insertId."""
    config = pipeline(
        tmp_path, dataset, destination="bigquery_streaming", rows=8_000, extra_dest=", bq_max_rows_per_request: 1000"
    )
    done = cli("run", config, "--quiet")
    assert done.returncode == 0, done.stderr
    assert ids_of(emulator, dataset) == (8_000, 8_000, 0, 7_999)
    assert column_types(emulator, dataset) == TYPED
    d = dest(dataset, "bigquery_streaming", destination_id=f"{PROJECT}.{dataset}.env")
    stamp = datetime(2024, 5, 1, 1, 2, 3, 456789, tzinfo=UTC)
    d.write("s0", 0, 0, [records_to_batch([{"id": "1", "data": {"a": 1}, "timestamp": stamp}])])
    assert column_types(emulator, dataset, "env")["_source_data"] == "JSON"
    assert query(emulator, f"SELECT _source_timestamp FROM `{dataset}.env`") == [(stamp,)]  # bizon kept seconds


def test_cli_bigquery_incremental_appends_and_bigquery_backend(emulator, dataset, cli, tmp_path: Path) -> None:
    """Incremental runs append (the synthetic source has no cursor field: each run reads everything),
    with jobs and cursors in the ``bigquery`` checkpoint backend."""
    backend = f"{{type: bigquery, config: {{database: {PROJECT}, schema: {dataset}}}}}"
    config = pipeline(tmp_path, dataset, rows=20_000, extra_source=", sync_mode: incremental", backend=backend)
    for run in (1, 2):
        done = cli("run", config, "--quiet")
        assert done.returncode == 0, done.stderr
        assert ids_of(emulator, dataset) == (20_000 * run, 20_000, 0, 19_999)
    jobs = query(emulator, f"SELECT status, attempt FROM `{dataset}.bizon_fast_jobs`")
    assert sorted(jobs) == [("succeeded", 1), ("succeeded", 1)]
    assert "events_incremental" not in tables_of(emulator, dataset)


def context(job: str = "job-1", mode: str = "full_refresh") -> DestinationContext:
    return DestinationContext(job_id=job, pipeline="p", source_name="synthetic", stream="events", sync_mode=mode)


def dest(dataset: str, name: str = "bigquery", job: str = "job-1", mode: str = "full_refresh", **kw):
    cls = destination_class(name)
    config = cls.config_class.model_validate(
        {"project_id": PROJECT, "dataset_id": dataset, "destination_id": "events", **kw}
    )
    return cls(config, context(job, mode))


def typed(first: int, n: int, struct: bool = True) -> pa.RecordBatch:
    batch = pa.record_batch(
        {
            "id": pa.array(range(first, first + n), pa.int64()),
            "ts": pa.array([datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)] * n, pa.timestamp("us", "UTC")),
            "n": pa.array([Decimal("1.250000000")] * n, pa.decimal128(38, 9)),
            "tags": pa.array([["a", "b"]] * n, pa.list_(pa.string())),
            "rec": pa.array([{"k": 1}] * n, pa.struct([("k", pa.int64())])),
            "d": pa.array([datetime(2024, 1, 2).date()] * n, pa.date32()),
            "flag": pa.array([True] * n),
            "raw": pa.array([b"\x00\x01"] * n),
        }
    )
    return batch if struct else batch.drop_columns(["rec"])


@pytest.mark.parametrize("name", ["bigquery", "bigquery_streaming_v2"])
def test_typed_columns_keep_their_types_and_values(emulator, dataset, name: str) -> None:
    """Arrow types become BigQuery's, values intact, and no bookkeeping column reaches the published table
    (replays, ``prepare`` and the publish are the contract suite's: tests/contracts)."""
    # the emulator's commit of a pending stream fails on RECORD columns ("a STRUCT with no fields")
    batches = [typed(i * 100, 100, struct=name == "bigquery") for i in range(12)]
    d = dest(dataset, name)
    d.check_connection()
    d.prepare({})
    d.write("s0", 0, 11, batches)
    d.publish()
    d.close()
    assert ids_of(emulator, dataset) == (1200, 1200, 0, 1199)
    types = column_types(emulator, dataset)
    expected = {"id": "INTEGER", "ts": "TIMESTAMP", "n": "NUMERIC", "tags": "STRING", "rec": "RECORD"}
    expected |= {"d": "DATE", "flag": "BOOLEAN", "raw": "BYTES"}
    if name != "bigquery":
        del expected["rec"]
    assert types == expected
    assert not set(BOOKKEEPING) & set(types)
    ts, n, tags = query(emulator, f"SELECT ts, n, tags FROM `{dataset}.events` LIMIT 1")[0]
    assert ts == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)  # microseconds kept
    assert n == Decimal("1.25") and list(tags) == ["a", "b"]
    if name == "bigquery":
        assert query(emulator, f"SELECT rec.k FROM `{dataset}.events` LIMIT 1") == [(1,)]


def test_stale_temp_of_a_dead_job_is_dropped_but_not_the_resumed_one(emulator, dataset) -> None:
    dead = dest(dataset, job="dead-job")
    dead.prepare({})
    dead.write("s0", 0, 0, [typed(0, 10)])
    dead.close()
    assert "events_temp" in tables_of(emulator, dataset)
    resumed = dest(dataset, job="dead-job")
    resumed.prepare({"s0": 0})  # the same job resumes: its stage is kept
    assert query(emulator, f"SELECT COUNT(*) FROM `{dataset}.events_temp`") == [(10,)]
    fresh = dest(dataset, job="new-job")
    fresh.prepare({})  # another job: the dead job's stage is dropped
    assert "events_temp" not in tables_of(emulator, dataset)
    fresh.write("s0", 0, 0, [typed(100, 5)])
    fresh.publish()
    assert ids_of(emulator, dataset) == (5, 5, 100, 104)


def test_bizon_envelope_columns(emulator, dataset) -> None:
    records = [
        {"id": str(i), "data": {"n": i}, "timestamp": datetime(2024, 5, 1, 1, 2, 3, 456789, tzinfo=UTC)}
        for i in range(7)
    ]
    d = dest(dataset)
    d.prepare({})
    d.write("s0", 0, 0, [records_to_batch(records)])
    d.publish()
    assert column_types(emulator, dataset) == {
        "_source_record_id": "STRING",
        "_source_timestamp": "TIMESTAMP",
        "_source_data": "STRING",
        "_bizon_extracted_at": "TIMESTAMP",
        "_bizon_loaded_at": "TIMESTAMP",
        "_bizon_id": "STRING",
    }
    rows = query(emulator, f"SELECT _source_record_id, _source_timestamp, _source_data FROM `{dataset}.events`")
    assert len(rows) == 7 and {r[0] for r in rows} == {str(i) for i in range(7)}
    assert rows[0][1] == datetime(2024, 5, 1, 1, 2, 3, 456789, tzinfo=UTC)


def test_unnest_uses_declared_types(emulator, dataset) -> None:
    records = [
        {"id": str(i), "data": {"id": i, "name": f"n{i}", "at": "2024-01-01T00:00:00.5+00:00"}} for i in range(5)
    ]
    schema = [
        {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
        {"name": "name", "type": "STRING", "mode": "NULLABLE"},
        {"name": "at", "type": "TIMESTAMP", "mode": "NULLABLE"},
    ]
    d = dest(dataset, unnest=True, record_schemas=[{"destination_id": "events", "record_schema": schema}])
    d.prepare({})
    d.write("s0", 0, 0, [records_to_batch(records)])
    d.publish()
    assert column_types(emulator, dataset) == {"id": "INTEGER", "name": "STRING", "at": "TIMESTAMP"}
    assert ids_of(emulator, dataset) == (5, 5, 0, 4)


# ---------------------------------------------------------------- checkpoint backend


def test_bigquery_backend_contract(emulator, dataset) -> None:
    from bizon_fast.checkpoint.base import JobStatus
    from bizon_fast.checkpoint.factory import create_backend
    from bizon_fast.config.engine import BackendConfig
    from bizon_fast.cursor import Cursor

    cfg = BackendConfig.model_validate({"type": "bigquery", "config": {"database": PROJECT, "schema": dataset}})
    assert isinstance(cfg.config, BigQueryBackendDetails)
    b = create_backend(cfg)
    b.open()
    try:
        kw = {"name": "pipe", "source_name": "src", "stream_name": "s"}
        assert b.find_unfinished_job(**kw) is None and b.last_succeeded_job(**kw) is None
        job = b.create_job(**kw, sync_mode="incremental", fingerprint="fp", total_rows=10)
        assert job.status == "running" and job.attempt == 1 and job.total_rows == 10
        assert b.find_unfinished_job(**kw).id == job.id
        assert b.load_cursors(job.id) == {}
        b.commit_cursors(job.id, [Cursor(split_id="a", seq=0, rows=5), Cursor(split_id="b", seq=1, rows=7)])
        b.commit_cursors(job.id, [Cursor(split_id="a", seq=3, rows=9, position={"k": [1, "x"]}, done=True)])
        cursors = b.load_cursors(job.id)
        assert cursors["a"] == Cursor(split_id="a", seq=3, rows=9, position={"k": [1, "x"]}, done=True)
        assert cursors["b"].seq == 1
        b.set_job_status(job.id, JobStatus.FAILED, "boom")
        assert b.find_unfinished_job(**kw).status == "failed"
        again = b.start_attempt(job.id)
        assert again.status == "running" and again.attempt == 2 and again.error is None
        assert b.load_cursors(job.id)["a"].seq == 3  # superseded versions compacted, newest kept
        assert b.get_watermark(**kw) is None
        b.set_watermark(**kw, value=b"\x81\xa1k\x01", job_id=job.id)
        b.set_watermark(**kw, value=b"\x81\xa1k\x02", job_id=job.id)
        assert b.get_watermark(**kw) == b"\x81\xa1k\x02"
        b.set_job_status(job.id, JobStatus.SUCCEEDED)
        assert b.last_succeeded_job(**kw).id == job.id and b.find_unfinished_job(**kw) is None
    finally:
        b.close()


# ---------------------------------------------------------------- faults and errors

SLOW_REPORT = """
import time

from bizon_fast.connectors.destinations.bigquery.destination import BigQueryDestination


class SlowReport(BigQueryDestination):
    name = "bq_slow_report"

    def write(self, split_id, first_seq, last_seq, batches):
        super().write(split_id, first_seq, last_seq, batches)
        time.sleep(0.15)  # loaded but not reported yet: a kill now leaves a write that gets replayed
"""


@pytest.mark.slow
def test_sigkill_random_workers_during_bigquery_loads(emulator, dataset, tmp_path: Path, monkeypatch) -> None:
    """Exact counts, no duplicates, after SIGKILLs of random producers and consumers mid-load."""
    rows = 200_000
    (tmp_path / "slow_report.py").write_text(SLOW_REPORT)
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", "bq_slow_report=slow_report:SlowReport")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    config = pipeline(tmp_path, dataset, destination="bq_slow_report", rows=rows, splits=8, batch_rows=2_000)
    proc = start_run(tmp_path, config)
    killed = kill_workers_randomly(proc, kills=6, rng=random.Random("bq-workers"))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(killed) >= 3, f"the run ended before enough kills: {killed}"
    assert ids_of(emulator, dataset) == (rows, rows, 0, rows - 1)


def test_sigkill_supervisor_during_loads_then_rerun_holds_each_row_once(
    emulator, dataset, tmp_path: Path, monkeypatch
) -> None:
    """The whole run dies mid-load (supervisor and workers); the same command resumes the job, trims the
    writes past the committed cursors and publishes each row once."""
    import psutil

    rows = 200_000
    (tmp_path / "slow_report.py").write_text(SLOW_REPORT)
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", "bq_slow_report=slow_report:SlowReport")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    config = pipeline(tmp_path, dataset, destination="bq_slow_report", rows=rows, splits=8, batch_rows=2_000)
    proc = start_run(tmp_path, config)
    deadline = time.monotonic() + 90
    # killed on observed progress: once some writes are committed (the slow report keeps others in flight)
    while time.monotonic() < deadline and proc.poll() is None and _committed_rows(tmp_path) == 0:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    workers = workers_of(proc.pid)
    psutil.Process(proc.pid).kill()
    proc.wait(10)
    psutil.wait_procs(workers, timeout=5)
    assert "events" not in tables_of(emulator, dataset), "a killed full refresh must not publish"
    committed = _committed_rows(tmp_path)
    assert 0 < committed < rows, f"the kill must land mid-run: {committed} of {rows} rows committed"
    [(job_id, status, attempt)] = _ckpt(tmp_path, "SELECT id, status, attempt FROM bizon_fast_jobs")
    assert (status, attempt) == ("running", 1)
    rerun = start_run(tmp_path, config)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    [log_path] = (tmp_path / "logs").glob(f"*-{rerun.pid}.log")
    log = log_path.read_text()
    assert f"resuming job {job_id} (attempt 2)" in log, "the rerun must resume the job, not start from zero"
    assert f"{committed} rows already committed" in log, log
    assert _ckpt(tmp_path, "SELECT id, status, attempt FROM bizon_fast_jobs") == [(job_id, "succeeded", 2)]
    assert ids_of(emulator, dataset) == (rows, rows, 0, rows - 1)


def _ckpt(tmp_path: Path, sql: str) -> list[tuple]:
    """Rows of the run's sqlite checkpoint backend (``pipeline``'s ``ckpt.sqlite3``); [] before it exists."""
    import sqlite3

    path = tmp_path / "ckpt.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # the run has not created its tables yet
            return []


def _committed_rows(tmp_path: Path) -> int:
    rows = _ckpt(tmp_path, "SELECT COALESCE(SUM(rows), 0) FROM bizon_fast_cursors")
    return rows[0][0] if rows else 0


def test_bad_config_is_one_line_exit_2(emulator, cli, tmp_path: Path) -> None:
    config = pipeline(tmp_path, "no_such_dataset")
    done = cli("run", config, "--quiet")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "destination.config.dataset_id" in lines[0] and "no_such_dataset" in lines[0]
    bad_key = pipeline(tmp_path, "d", extra_dest=", authentication: {service_account_key: /nope/key.json}")
    env = {"BIZON_FAST_BIGQUERY_ENDPOINT": "", "BIZON_FAST_BIGQUERY_GRPC": ""}
    done = cli("run", bad_key, "--quiet", env=env)
    assert done.returncode == 2, done.stderr
    assert "destination.config.authentication.service_account_key" in done.stderr.strip().splitlines()[-1]


def test_example_config_validates() -> None:
    from bizon_fast.connectors.pipeline import load_config

    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "synthetic_to_bigquery.yml"))
    assert cfg.destination.name == "bigquery"
