"""Broker mode against real brokers: Tansu (Kafka protocol) and the machine's RabbitMQ.

Two supervisors on loopback play two machines (``--role producer`` and ``--role consumer``) sharing
a job through the Postgres checkpoint backend. Rows are synthetic ids 0..n-1 written to parquet (an
effectively-once destination), so "exactly once" is: n rows, n distinct ids.
"""

from __future__ import annotations

import random
import secrets
import time
from pathlib import Path

import psutil
import psycopg  # the [test] extra installs it: a missing package is a failure
import pytest

from native_bench.services import start_run, workers_of
from tests.conftest import REPO
from tests.faults import check_parquet_ids, kill_workers_randomly
from tests.services.kafka import KAFKA_TEST_CLIENT

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
SLOW_FILE = "slow_file=tests.fixtures.slow_file:SlowFileDestination"


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", SLOW_FILE)
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def kafka_queue(
    bootstrap: str, tag: str, batch_size_mb: float = 0.25, assignment: str = "group", **extra: object
) -> str:
    """``assignment: static`` where a test SIGKILLs consumers: Tansu 0.6's group coordinator keeps a
    SIGKILLed member (it never left the group) and may elect it leader of the next generation; the live
    members then get "rebalance in progress" from SyncGroup forever (seen here: a restarted consumer
    machine hung for minutes, with max.poll.interval.ms at 10 s). Kafka evicts such a member after the
    rebalance timeout. Group assignment is tested where no consumer dies."""
    settings = ", ".join(f"{k}: {v}" for k, v in extra.items())
    return (
        f"{{type: kafka, config: {{batch_size_mb: {batch_size_mb}, queue: {{bootstrap_server: '{bootstrap}',"
        f" topic: t_{tag}, partitions: 4{', ' + settings if settings else ''}}},"
        f" consumer: {{group_id: g_{tag}, assignment: {assignment},"
        f" session_timeout_ms: {KAFKA_TEST_CLIENT['session.timeout.ms']},"
        f" consumer_config: {{max.poll.interval.ms: {KAFKA_TEST_CLIENT['max.poll.interval.ms']}}}}}}}}}"
    )


def rabbit_queue(tag: str) -> str:
    return (
        "{type: rabbitmq, config: {batch_size_mb: 0.25, queue: {host: 127.0.0.1, queue_name: "
        f"bf_{tag}, partitions: 2, prefetch: 8}}}}}}"
    )


def pipeline(
    tmp_path: Path,
    queue: str,
    *,
    rows: int,
    backend: str = "",
    delay: float = 0.0,
    workers: int = 2,
) -> str:
    destination = (
        f"{{name: slow_file, config: {{destination_id: out/events, format: parquet, buffer_size: 1,"
        f" write_delay_s: {delay}}}}}"
    )
    (tmp_path / "p.yml").write_text(
        f"""
name: dist
source: {{name: synthetic, stream: events, rows: {rows}, splits: 8, batch_rows: 5000}}
destination: {destination}
engine:
  queue: {queue}
  runner: {{config: {{max_workers: {workers}, max_restarts: 50, lease_seconds: 5}}}}
{backend}
"""
    )
    return "p.yml"


def pg_backend(schema: str) -> str:
    return f'  backend: {{type: postgres, config: {{dsn: "{DSN}", schema: {schema}}}}}'


def finish(proc, timeout: float = 180) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{err}"


def staged_parts(tmp_path: Path) -> int:
    return len(list(tmp_path.glob("out/.events.bizon-fast/*/part-*")))


# ---------------------------------------------------------------- Kafka


def test_kafka_one_machine_exactly_once_with_batches_in_parts(kafka_bootstrap: str, tmp_path: Path) -> None:
    """``--role all`` with the embedded backend; a 64 KiB message limit forces batches into parts."""
    tag = secrets.token_hex(3)
    config = pipeline(
        tmp_path, kafka_queue(kafka_bootstrap, tag, batch_size_mb=4, max_message_bytes=65536), rows=200_000
    )
    finish(start_run(tmp_path, config))
    check_parquet_ids(tmp_path / "out" / "events", 200_000)

    from confluent_kafka import Consumer

    from bizon_fast.transport.broker import decode_frame

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"check-{tag}",
            "auto.offset.reset": "earliest",
            **KAFKA_TEST_CLIENT,
        }
    )
    consumer.subscribe([f"t_{tag}"])
    frames = []
    deadline = time.monotonic() + 20
    while sum(1 for f in frames if f.kind == "end") < 8 and time.monotonic() < deadline:
        msgs = consumer.consume(200, 1.0)
        frames += [decode_frame(dict(m.headers())["bf"]) for m in msgs if not m.error()]
    consumer.close()
    assert any(f.parts > 1 for f in frames), "no batch was sent in parts under a 64 KiB message limit"
    assert sum(1 for f in frames if f.kind == "end") == 8


def test_kafka_sigkill_random_workers(kafka_bootstrap: str, tmp_path: Path) -> None:
    queue = kafka_queue(kafka_bootstrap, secrets.token_hex(3), assignment="static")
    config = pipeline(tmp_path, queue, rows=300_000, delay=0.1)
    proc = start_run(tmp_path, config)
    killed = kill_workers_randomly(proc, kills=4, rng=random.Random("kafka-workers"))
    finish(proc)
    assert len(killed) >= 2, f"the run ended before enough kills: {killed}"
    check_parquet_ids(tmp_path / "out" / "events", 300_000)


def test_kafka_two_roles_and_a_killed_consumer_machine(kafka_bootstrap: str, pg_schema: str, tmp_path: Path) -> None:
    """A producer machine and a consumer machine; the consumer machine's supervisor is SIGKILLed mid-run
    and started again: both roles exit 0 and the parquet holds every row once."""
    rows = 300_000
    config = pipeline(
        tmp_path,
        kafka_queue(kafka_bootstrap, secrets.token_hex(3), assignment="static"),
        rows=rows,
        backend=pg_backend(pg_schema),
        delay=0.3,
    )
    producer = start_run(tmp_path, config, "--role", "producer")
    consumer = start_run(tmp_path, config, "--role", "consumer")
    deadline = time.monotonic() + 90
    while staged_parts(tmp_path) < 3 and time.monotonic() < deadline and consumer.poll() is None:
        time.sleep(0.05)
    assert consumer.poll() is None, "the consumer machine finished before it could be killed"
    orphans = workers_of(consumer.pid)
    psutil.Process(consumer.pid).kill()
    consumer.wait(10)
    psutil.wait_procs(orphans, timeout=5)
    again = start_run(tmp_path, config, "--role", "consumer")
    finish(again)
    finish(producer)
    check_parquet_ids(tmp_path / "out" / "events", rows)
    with psycopg.connect(DSN) as conn:
        jobs = conn.execute(f"SELECT status FROM {pg_schema}.bizon_fast_jobs").fetchall()
        leases = conn.execute(f"SELECT count(*) FILTER (WHERE produced) FROM {pg_schema}.bizon_fast_split_leases")
        assert jobs == [("succeeded",)]
        assert leases.fetchone()[0] == 8


def test_two_producer_machines_share_splits_through_leases(
    kafka_bootstrap: str, pg_schema: str, tmp_path: Path
) -> None:
    """Two producer machines and one consumer machine; one producer machine is SIGKILLed: its leased
    splits expire and the other machine reads them from their committed cursors."""
    rows = 240_000
    config = pipeline(
        tmp_path,
        kafka_queue(kafka_bootstrap, secrets.token_hex(3)),
        rows=rows,
        backend=pg_backend(pg_schema),
        delay=0.1,
        workers=1,
    )
    first = start_run(tmp_path, config, "--role", "producer")
    second = start_run(tmp_path, config, "--role", "producer")
    consumer = start_run(tmp_path, config, "--role", "consumer")
    deadline = time.monotonic() + 60
    while staged_parts(tmp_path) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    psutil.Process(first.pid).kill()
    first.wait(10)
    finish(second)
    finish(consumer)
    check_parquet_ids(tmp_path / "out" / "events", rows)


def test_two_consumer_machines_share_the_group_and_publish_once(
    kafka_bootstrap: str, pg_schema: str, tmp_path: Path
) -> None:
    """One producer machine, two consumer machines in one consumer group: the first consumer machine
    prepares the destination, one of them publishes it, both exit 0, every row lands once."""
    rows = 240_000
    config = pipeline(
        tmp_path,
        kafka_queue(kafka_bootstrap, secrets.token_hex(3)),
        rows=rows,
        backend=pg_backend(pg_schema),
        delay=0.05,
        workers=1,
    )
    consumers = [start_run(tmp_path, config, "--role", "consumer") for _ in range(2)]
    producer = start_run(tmp_path, config, "--role", "producer")
    finish(producer)
    for proc in consumers:
        finish(proc)
    check_parquet_ids(tmp_path / "out" / "events", rows)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert logs.count("published") == 1, "the destination must be published exactly once"


def test_role_needs_a_broker_and_a_shared_backend(kafka_bootstrap: str, cli, tmp_path: Path) -> None:
    config = pipeline(tmp_path, "{type: shm}", rows=10)
    done = cli("run", config, "--role", "producer", "--quiet")
    assert done.returncode == 2
    assert "--role producer" in done.stderr and "engine.queue.type: kafka or rabbitmq" in done.stderr
    config = pipeline(tmp_path, kafka_queue(kafka_bootstrap, "x"), rows=10)
    done = cli("run", config, "--role", "consumer", "--quiet")
    assert done.returncode == 2
    assert "engine.backend.type: postgres" in done.stderr
    done = cli("run", config, "--role", "everything", "--quiet")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: Invalid value for '--role': 'everything' is not one of 'all', 'producer', 'consumer'. "
        "(see: bizon-fast run --help)"
    ]


def test_unreachable_kafka_is_a_clear_error(cli, tmp_path: Path) -> None:
    config = pipeline(tmp_path, kafka_queue("127.0.0.1:1", "x"), rows=10)
    done = cli("run", config, "--quiet", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "engine.queue.config.queue.bootstrap_server: cannot reach Kafka at 127.0.0.1:1" in done.stderr


# ---------------------------------------------------------------- RabbitMQ


def test_rabbitmq_one_machine_exactly_once(rabbitmq: str, tmp_path: Path) -> None:
    config = pipeline(tmp_path, rabbit_queue(secrets.token_hex(3)), rows=200_000)
    finish(start_run(tmp_path, config))
    check_parquet_ids(tmp_path / "out" / "events", 200_000)


def test_rabbitmq_two_roles_and_a_killed_consumer_machine(rabbitmq: str, pg_schema: str, tmp_path: Path) -> None:
    rows = 200_000
    config = pipeline(tmp_path, rabbit_queue(secrets.token_hex(3)), rows=rows, backend=pg_backend(pg_schema), delay=0.3)
    producer = start_run(tmp_path, config, "--role", "producer")
    consumer = start_run(tmp_path, config, "--role", "consumer")
    deadline = time.monotonic() + 90
    while staged_parts(tmp_path) < 3 and time.monotonic() < deadline and consumer.poll() is None:
        time.sleep(0.05)
    assert consumer.poll() is None, "the consumer machine finished before it could be killed"
    psutil.Process(consumer.pid).kill()
    consumer.wait(10)
    finish(start_run(tmp_path, config, "--role", "consumer"))
    finish(producer)
    check_parquet_ids(tmp_path / "out" / "events", rows)


def test_rabbitmq_url_is_built_from_bizon_keys() -> None:
    from bizon_fast.config.engine import RabbitMQQueueSettings

    settings = RabbitMQQueueSettings.model_validate({"host": "h", "queue_name": "q", "password": "p@ss/word"})
    assert settings.url() == "amqp://guest:p%40ss%2Fword@h:5672/%2F"


def test_postgres_leases_skip_locked_expiry_and_epochs(pg_schema: str) -> None:
    from bizon_fast.checkpoint.leases import PostgresLeases
    from bizon_fast.checkpoint.postgres import PostgresBackend
    from bizon_fast.config.engine import PostgresBackendDetails

    backend = PostgresBackend(PostgresBackendDetails.model_validate({"dsn": DSN, "schema": pg_schema}))
    backend.open()
    other = PostgresBackend(PostgresBackendDetails.model_validate({"dsn": DSN, "schema": pg_schema}))
    other.open()
    try:
        a, b = PostgresLeases(backend), PostgresLeases(other)
        a.register("job", ["s0", "s1", "s2"], done={"s2"})
        b.register("job", ["s0", "s1", "s2"], done=set())  # a second machine plans the same splits
        assert a.remaining("job") == 2
        assert a.acquire("job", "A", ttl=0.5) == ("s0", 1)
        assert b.acquire("job", "B", ttl=30) == ("s1", 1)
        assert b.acquire("job", "B", ttl=30) is None  # s0 is held, s2 was done before
        assert b.renew("job", "B", ttl=30) == {"s1"}
        time.sleep(0.7)  # A's lease expires: A is dead as far as anyone can tell
        assert b.acquire("job", "B", ttl=30) == ("s0", 2)
        assert a.renew("job", "A", ttl=30) == set()  # A learns it lost s0
        b.produced("job", "s0", "B")
        b.release("job", "B", "s1")
        assert a.acquire("job", "A", ttl=30) == ("s1", 2)
        a.produced("job", "s1", "A")
        assert a.remaining("job") == 0 and a.acquire("job", "A", ttl=30) is None
    finally:
        backend.close()
        other.close()


def test_postgres_cursor_commits_never_move_back(pg_schema: str) -> None:
    """Two consumer machines may commit one split's cursor; a late, stale commit must not win."""
    from bizon_fast.checkpoint.postgres import PostgresBackend
    from bizon_fast.config.engine import PostgresBackendDetails
    from bizon_fast.cursor import Cursor

    backend = PostgresBackend(PostgresBackendDetails.model_validate({"dsn": DSN, "schema": pg_schema}))
    backend.open()
    try:
        backend.commit_cursors("job", [Cursor(split_id="s", seq=5, position=50, rows=500)])
        backend.commit_cursors("job", [Cursor(split_id="s", seq=3, position=30, rows=300)])
        assert backend.load_cursors("job")["s"].seq == 5
        backend.commit_cursors("job", [Cursor(split_id="s", seq=5, position=50, rows=500, done=True)])
        backend.commit_cursors("job", [Cursor(split_id="s", seq=5, position=50, rows=500, done=False)])
        assert backend.load_cursors("job")["s"].done
    finally:
        backend.close()
