"""One live run per pipeline, on every backend: a second run is refused at once, naming the holder.

Through the CLI with real processes (sqlite, sqlite_in_memory and Postgres backends): two runs started
together, a second run started while the first writes, and a rerun after the first's supervisor is
SIGKILLed; the published parquet dataset is checked exactly every time. At the backend API: shared
(broker) versus exclusive holders, the Postgres lock after a lost connection, the sqlite lock files'
permissions, and the BigQuery run lease against the emulator (claim, refusal, release, expiry).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from bizon_fast.errors import JobFailed, UserError
from native_bench.services import BQEMU_PROJECT as PROJECT
from native_bench.services import start_run, workers_of
from tests.conftest import REPO
from tests.faults import check_parquet_ids
from tests.services.postgres import PG_DSN

DSN = PG_DSN

PG = pytest.param("postgres", marks=pytest.mark.service)
#: a refused run exits 2 with one line naming the holder's pid
REFUSAL = re.compile(r"^Error: engine\.backend: pipeline '[^']+' \(synthetic/events\) is already running: pid (\d+) ")


@pytest.fixture(autouse=True)
def _slow_file(monkeypatch) -> None:
    """A destination that takes its time: the first run is still writing when the second starts."""
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", "slow_file=tests.fixtures.slow_file:SlowFileDestination")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


# ---------------------------------------------------------------- backends the CLI runs use


class Store:
    """One checkpoint backend of a test: its YAML block and what it holds."""

    def __init__(self, kind: str, tmp_path: Path, admin=None, schema: str | None = None) -> None:  # noqa: ANN001
        self.kind, self.tmp_path, self.admin, self.schema = kind, tmp_path, admin, schema

    def yaml(self, workdir: Path) -> str:
        if self.kind == "sqlite":
            return f"{{type: sqlite, config: {{database: {workdir / 'ckpt' / 'bizon'}}}}}"
        if self.kind == "sqlite_in_memory":
            return "{type: sqlite_in_memory}"
        return f'{{type: postgres, config: {{dsn: "{DSN}", schema: {self.schema}}}}}'

    def jobs(self, workdir: Path, name: str) -> list[tuple[str, int]] | None:
        """(status, attempt) of the pipeline's jobs; None where they die with the run (in memory)."""
        if self.kind == "sqlite":
            with sqlite3.connect(workdir / "ckpt" / "bizon.sqlite3") as conn:
                return conn.execute(
                    "SELECT status, attempt FROM bizon_fast_jobs WHERE name = ? ORDER BY created_at", (name,)
                ).fetchall()
        if self.kind == "postgres":
            return [
                tuple(r)
                for r in self.admin.execute(
                    f"SELECT status, attempt FROM {self.schema}.bizon_fast_jobs WHERE name = %s ORDER BY created_at",
                    (name,),
                ).fetchall()
            ]
        return None


@pytest.fixture
def store(request, tmp_path: Path, monkeypatch) -> Store:
    kind = request.param
    if kind == "postgres":
        admin = request.getfixturevalue("pg_admin")
        return Store(kind, tmp_path, admin, request.getfixturevalue("pg_schema"))
    if kind == "sqlite_in_memory":
        # the user lock dir of these runs, not the real one; short, for the fork server's socket path in it
        tmp = tempfile.mkdtemp(prefix="bfl")
        request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
        monkeypatch.setenv("TMPDIR", tmp)
    return Store(kind, tmp_path)


def write_config(workdir: Path, store: Store, *, rows: int, slow: bool, name: str | None = None) -> tuple[str, str]:
    """A synthetic -> parquet pipeline in ``workdir``: (config file, pipeline name)."""
    name = name or f"lock-{secrets.token_hex(3)}"
    if slow:
        dest = (
            "{name: slow_file, config: {destination_id: out/events, format: parquet, buffer_size: 1,"
            " write_delay_s: 0.1}}"
        )
        splits, batch_rows = 8, 20_000
    else:
        dest = "{name: file, config: {destination_id: out/events, format: parquet, buffer_size: 1}}"
        splits, batch_rows = 4, 10_000
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "pipeline.yml").write_text(
        f"""
name: {name}
source: {{name: synthetic, stream: events, rows: {rows}, splits: {splits}, batch_rows: {batch_rows}}}
destination: {dest}
engine:
  backend: {store.yaml(workdir)}
  queue: {{config: {{batch_size_mb: 1}}}}
  runner: {{config: {{max_workers: 2, max_restarts: 20}}}}
"""
    )
    return "pipeline.yml", name


def assert_refused_by(err: str, holder_pid: int) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"the refusal should be one line: {err!r}"
    match = REFUSAL.match(lines[0])
    assert match, f"not a refusal naming a pid: {lines[0]!r}"
    assert int(match.group(1)) == holder_pid, f"names pid {match.group(1)}, the holder is {holder_pid}: {lines[0]}"
    assert " on host " in lines[0] and ", started " in lines[0], lines[0]


def wait_for_parts(workdir: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the run has written a part: it holds the lock and its job is live."""
    deadline = time.monotonic() + timeout
    while not list(workdir.glob("out/.*bizon-fast/*/part-*")) and time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        time.sleep(0.02)


# ---------------------------------------------------------------- through the CLI

TRIES = 10
TOGETHER_ROWS = 100_000


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", PG], indirect=True)
def test_runs_started_together_one_is_refused_and_the_data_is_exact(tmp_path: Path, store: Store) -> None:
    """Either the second is refused naming the first, or it started after the first ended: never both live."""
    refused = 0
    for i in range(TRIES):
        workdir = tmp_path / f"try{i}"
        config, name = write_config(workdir, store, rows=TOGETHER_ROWS, slow=False)
        a, b = start_run(workdir, config), start_run(workdir, config)
        (_, err_a), (_, err_b) = a.communicate(timeout=120), b.communicate(timeout=120)
        codes = sorted([a.returncode, b.returncode])
        assert codes in ([0, 0], [0, 2]), f"try {i}: exit codes {a.returncode}, {b.returncode}: {err_a} {err_b}"
        succeeded = 2
        if codes == [0, 2]:
            refused += 1
            succeeded = 1
            loser_err, winner = (err_a, b) if a.returncode == 2 else (err_b, a)
            assert_refused_by(loser_err, winner.pid)
        check_parquet_ids(workdir / "out" / "events", TOGETHER_ROWS)
        jobs = store.jobs(workdir, name)
        assert jobs == [("succeeded", 1)] * succeeded, f"try {i}: one job per run that was not refused: {jobs}"
    print(f"{refused} of {TRIES} tries refused the second run; the others ran one after the other")


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "sqlite_in_memory", PG], indirect=True)
def test_second_run_while_the_first_writes_is_refused_at_once(tmp_path: Path, store: Store) -> None:
    rows = 1_000_000
    config, name = write_config(tmp_path, store, rows=rows, slow=True)
    first = start_run(tmp_path, config)
    wait_for_parts(tmp_path, first)
    jobs_before = store.jobs(tmp_path, name)
    started = time.monotonic()
    second = start_run(tmp_path, config)
    _, err = second.communicate(timeout=60)
    took = time.monotonic() - started
    assert second.returncode == 2, err
    assert first.poll() is None, "the first run ended before the second was refused: make it slower"
    assert_refused_by(err, first.pid)
    assert store.jobs(tmp_path, name) == jobs_before, "the refused run touched the jobs"
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    check_parquet_ids(tmp_path / "out" / "events", rows)
    assert store.jobs(tmp_path, name) in (None, [("succeeded", 1)])
    print(f"refused in {took:.2f}s (process start to exit, on a busy machine)")


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", PG], indirect=True)
def test_after_sigkill_of_the_holder_the_next_run_resumes(tmp_path: Path, store: Store) -> None:
    rows = 1_000_000
    config, name = write_config(tmp_path, store, rows=rows, slow=True)
    first = start_run(tmp_path, config)
    wait_for_parts(tmp_path, first)
    workers = workers_of(first.pid)
    psutil.Process(first.pid).kill()
    first.wait(10)
    if store.kind == "sqlite":
        # the kernel dropped the lock with the supervisor: its orphaned workers never held it
        from bizon_fast.checkpoint.sqlite import SqliteBackend

        probe = SqliteBackend(str(tmp_path / "ckpt" / "bizon"))
        probe.hold_run(name, "synthetic", "events")
        probe.close()
    psutil.wait_procs(workers, timeout=10)  # the orphans follow their supervisor; then resume cleanly
    rerun = start_run(tmp_path, config)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    check_parquet_ids(tmp_path / "out" / "events", rows)
    assert store.jobs(tmp_path, name) == [("succeeded", 2)]
    logs = [p for p in (tmp_path / "logs").glob("*.log") if f"-{rerun.pid}.log" in p.name]
    assert logs and "resuming job" in logs[0].read_text()


@pytest.mark.slow
@pytest.mark.service
def test_broker_roles_share_the_run_and_a_plain_run_is_refused(
    tmp_path: Path, rabbitmq: str, pg_admin, pg_schema
) -> None:
    """Broker roles hold the run lock shared (they join one job); a plain run of the pipeline takes it
    exclusive, so it is refused while the roles live (the reverse is tested at the backend API)."""
    from bizon_fast.clients import postgres as pgconn

    rows, name = 200_000, f"lock-{secrets.token_hex(3)}"
    backend = f'{{type: postgres, config: {{dsn: "{DSN}", schema: {pg_schema}}}}}'
    tag = secrets.token_hex(3)
    common = f"""
name: {name}
source: {{name: synthetic, stream: events, rows: {rows}, splits: 8, batch_rows: 5000}}
destination: {{name: slow_file, config: {{destination_id: out/events, format: parquet, buffer_size: 1,
               write_delay_s: 0.2}}}}
"""
    (tmp_path / "broker.yml").write_text(
        common
        + f"""engine:
  backend: {backend}
  queue: {{type: rabbitmq, config: {{batch_size_mb: 0.25, queue: {{host: 127.0.0.1, queue_name: bf_{tag},
           partitions: 2, prefetch: 8}}}}}}
  runner: {{config: {{max_workers: 2, max_restarts: 50, lease_seconds: 5}}}}
"""
    )
    (tmp_path / "plain.yml").write_text(common + f"engine: {{backend: {backend}}}\n")
    key = pgconn.lock_key("bizon_fast_run", name, "synthetic", "events")
    consumer = start_run(tmp_path, "broker.yml", "--role", "consumer")
    deadline = time.monotonic() + 60
    while consumer.poll() is None and time.monotonic() < deadline:
        held = pg_admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock'"
            " AND classid::bigint = %s AND objid::bigint = %s",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchone()[0]
        if held:
            break
        time.sleep(0.05)
    producer = start_run(tmp_path, "broker.yml", "--role", "producer")  # joins: shared
    plain = start_run(tmp_path, "plain.yml")
    _, err = plain.communicate(timeout=60)
    assert plain.returncode == 2, err
    assert consumer.poll() is None, "the broker run ended before the plain run was refused"
    assert_refused_by(err, consumer.pid)
    for proc in (producer, consumer):
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    check_parquet_ids(tmp_path / "out" / "events", rows)


# ---------------------------------------------------------------- sqlite at the API


def test_sqlite_lock_files_are_private_and_name_the_holder(tmp_path: Path) -> None:
    from bizon_fast.checkpoint.runlock import lock_file_name
    from bizon_fast.checkpoint.sqlite import SqliteBackend

    first = SqliteBackend(str(tmp_path / "db" / "bizon"))
    first.open()
    first.hold_run("p/ä b", "src", "s")
    try:
        locks = tmp_path / "db" / "bizon.sqlite3.locks"
        assert stat.S_IMODE(locks.stat().st_mode) == 0o700
        (lock,) = [path for path in locks.iterdir() if path.name != "open.lock"]  # open.lock: set-up turns
        assert lock.name == lock_file_name("p/ä b", "src", "s") and lock.name.startswith("p_b-")
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert f'"pid":{os.getpid()}' in lock.read_text()
        second = SqliteBackend(str(tmp_path / "db" / "bizon"))
        second.open()
        started = time.monotonic()
        with pytest.raises(UserError, match=rf"already running: pid {os.getpid()} on host .*lock file {lock}"):
            second.hold_run("p/ä b", "src", "s")
        assert time.monotonic() - started < 1.0, "a live holder is refused at once"
        second.hold_run("p/ä b", "src", "other-stream")  # another pipeline key: free
        second.close()
    finally:
        first.close()
    assert lock.read_text() == "", "a released lock keeps no stale holder"
    again = SqliteBackend(str(tmp_path / "db" / "bizon"))
    again.hold_run("p/ä b", "src", "s")
    again.close()


def test_sqlite_in_memory_locks_in_a_private_user_dir(tmp_path: Path, monkeypatch) -> None:
    from bizon_fast.checkpoint.sqlite import SqliteBackend

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    a, b = SqliteBackend(None), SqliteBackend(None)
    a.hold_run("p", "src", "s")
    try:
        base = tmp_path / f"bizon-fast-{os.getuid()}"
        assert stat.S_IMODE(base.stat().st_mode) == 0o700
        assert stat.S_IMODE((base / "locks").stat().st_mode) == 0o700
        with pytest.raises(UserError, match="already running"):
            b.hold_run("p", "src", "s")
    finally:
        a.close()
        b.close()
    os.chmod(base, 0o777)  # someone opened it to others: refused, not used
    with pytest.raises(UserError, match="not a private directory"):
        SqliteBackend(None).hold_run("p", "src", "s")


def test_sqlite_shared_holders_exclude_an_exclusive_one(tmp_path: Path) -> None:
    from bizon_fast.checkpoint.sqlite import SqliteBackend

    db = str(tmp_path / "bizon")
    roles = [SqliteBackend(db), SqliteBackend(db)]
    plain = SqliteBackend(db)
    try:
        for r in roles:
            r.hold_run("p", "src", "s", shared=True)
        with pytest.raises(UserError, match="already running"):
            plain.hold_run("p", "src", "s")
        for r in roles:
            r.close()
        plain.hold_run("p", "src", "s")
        with pytest.raises(UserError, match=f"already running: pid {os.getpid()}"):
            SqliteBackend(db).hold_run("p", "src", "s", shared=True)
    finally:
        plain.close()


# ---------------------------------------------------------------- Postgres at the API


def pg_backend(schema: str):
    from bizon_fast.checkpoint.postgres import PostgresBackend
    from bizon_fast.config.engine import PostgresBackendDetails

    b = PostgresBackend(PostgresBackendDetails.model_validate({"dsn": DSN, "schema": schema}))
    b.open()
    return b


@pytest.mark.service
def test_postgres_run_lock_refuses_at_once_naming_the_holder(pg_admin, pg_schema) -> None:
    first, second = pg_backend(pg_schema), pg_backend(pg_schema)
    try:
        first.hold_run("p", "src", "s")
        started = time.monotonic()
        with pytest.raises(UserError) as err:
            second.hold_run("p", "src", "s")
        assert time.monotonic() - started < 1.0, "a live holder is refused at once"
        message = str(err.value)
        assert "\n" not in message
        assert f"already running: pid {os.getpid()} on host " in message
        assert f"PostgreSQL session {first.conn.info.backend_pid}" in message
        second.hold_run("p", "src", "other")  # another pipeline: free
        first.close()  # the run ended: its session lock goes with its connection
        second.hold_run("p", "src", "s")
    finally:
        first.close()
        second.close()


@pytest.mark.service
def test_postgres_broker_roles_share_the_lock_and_exclude_a_plain_run(pg_admin, pg_schema) -> None:
    roles = [pg_backend(pg_schema), pg_backend(pg_schema)]
    plain = pg_backend(pg_schema)
    try:
        for r in roles:
            r.hold_run("p", "src", "s", shared=True)
        with pytest.raises(UserError, match="already running.*and 1 more sessions"):
            plain.hold_run("p", "src", "s")
        for r in roles:
            r.close()
        plain.hold_run("p", "src", "s")
        late_role = pg_backend(pg_schema)
        roles.append(late_role)
        with pytest.raises(UserError, match="already running"):
            late_role.hold_run("p", "src", "s", shared=True)
    finally:
        for b in [*roles, plain]:
            b.close()


@pytest.mark.service
def test_postgres_run_lock_is_taken_again_after_a_lost_connection(pg_admin, pg_schema) -> None:
    from bizon_fast.cursor import Cursor

    first = pg_backend(pg_schema)
    try:
        first.hold_run("p", "src", "s")
        job = first.create_job(
            name="p", source_name="src", stream_name="s", sync_mode="full_refresh", fingerprint="fp", total_rows=1
        )
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (first.conn.info.backend_pid,))
        first.commit_cursors(job.id, [Cursor(split_id="a", seq=1, rows=5)])  # reconnects, locks again
        other = pg_backend(pg_schema)
        with pytest.raises(UserError, match=f"PostgreSQL session {first.conn.info.backend_pid}"):
            other.hold_run("p", "src", "s")
        # lost again, and this time another run takes the pipeline meanwhile: the first must stop writing
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (first.conn.info.backend_pid,))
        time.sleep(0.2)
        other.hold_run("p", "src", "s")
        with pytest.raises(JobFailed, match="lost the connection .* run lock of pipeline 'p'"):
            first.commit_cursors(job.id, [Cursor(split_id="a", seq=2, rows=6)])
        other.close()
    finally:
        first.close()


# ---------------------------------------------------------------- BigQuery run leases (emulator)


def bq_backend(dataset: str):
    from bizon_fast.checkpoint.factory import create_backend
    from bizon_fast.config.engine import BackendConfig

    b = create_backend(
        BackendConfig.model_validate({"type": "bigquery", "config": {"database": PROJECT, "schema": dataset}})
    )
    b.open()
    return b


@pytest.mark.service
def test_bigquery_lease_claim_refuse_release(bq_dataset, monkeypatch) -> None:
    import bizon_fast.checkpoint.bigquery as bqmod

    monkeypatch.setattr(bqmod, "HEARTBEAT_S", 0.5)
    monkeypatch.setattr(bqmod, "LEASE_TTL_S", 3)
    first, second = bq_backend(bq_dataset), bq_backend(bq_dataset)
    try:
        first.hold_run("p", "src", "s")
        time.sleep(4)  # past the TTL: only the renewals keep it
        with pytest.raises(UserError) as err:
            second.hold_run("p", "src", "s")
        message = str(err.value)
        assert f"already running: pid {os.getpid()} on host " in message and "expires at" in message, message
        rows = first._q(f"SELECT token FROM {first._leases()}")
        assert rows == [(first.lease.token,)], "the refused claim removed its row"
        second.hold_run("p", "src", "other")  # another pipeline: free
        shared = bq_backend(bq_dataset)
        with pytest.raises(UserError, match="already running"):
            shared.hold_run("p", "src", "s", shared=True)  # an exclusive holder excludes broker roles too
        shared.close()
        first.close()  # releases: the next run claims at once
        second.hold_run("p", "src", "s")
    finally:
        first.close()
        second.close()


@pytest.mark.service
def test_bigquery_expired_lease_is_taken_over_and_its_holder_stops(bq_dataset, monkeypatch) -> None:
    import bizon_fast.checkpoint.bigquery as bqmod
    from bizon_fast.cursor import Cursor

    monkeypatch.setattr(bqmod, "HEARTBEAT_S", 0.5)
    monkeypatch.setattr(bqmod, "LEASE_TTL_S", 3)
    stale, taker = bq_backend(bq_dataset), bq_backend(bq_dataset)
    try:
        stale.hold_run("p", "src", "s")
        job = stale.create_job(
            name="p", source_name="src", stream_name="s", sync_mode="full_refresh", fingerprint="fp", total_rows=1
        )
        # its renewals stop (a frozen or partitioned run), and its lease runs out
        stale.lease.stop.set()
        stale.lease.thread.join(10)
        with pytest.raises(UserError, match="expires at"):
            taker.hold_run("p", "src", "s")
        time.sleep(3.5)
        taker.hold_run("p", "src", "s")  # the dead holder's lease expired: taken over
        # the stale holder wakes up: its renewal finds the lease gone, and it writes nothing more
        stale.lease.stop.clear()
        thread = threading.Thread(target=stale._renew_lease, args=(stale.lease,), daemon=True)
        thread.start()
        thread.join(10)
        assert stale.lease.lost, "the renewal should see that its lease expired"
        with pytest.raises(JobFailed, match="lease on its pipeline is lost"):
            stale.commit_cursors(job.id, [Cursor(split_id="a", seq=1, rows=1)])
    finally:
        stale.close()
        taker.close()


@pytest.mark.service
def test_bigquery_claims_at_once_have_one_winner(bq_dataset) -> None:
    backends = [bq_backend(bq_dataset) for _ in range(3)]
    try:
        for attempt in range(3):
            outcome: list[str] = []

            def claim(b, attempt=attempt, outcome=outcome) -> None:  # noqa: ANN001
                try:
                    b.hold_run("p", "src", f"s{attempt}")
                    outcome.append("won")
                except UserError:
                    outcome.append("refused")

            threads = [threading.Thread(target=claim, args=(b,)) for b in backends]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert sorted(outcome) == ["refused", "refused", "won"], outcome
            for b in backends:
                if b.lease is not None:  # the winner lets go: the next attempt starts even
                    b.close()
                    b.open()
    finally:
        for b in backends:
            b.close()
