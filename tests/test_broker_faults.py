"""Broker mode under SIGKILL at named steps (issue 18): Kafka (Tansu) and RabbitMQ on loopback, through the CLI.

Each "machine" is a ``bizon-fast run --role ...`` process with its own log folder (``logs/<machine>``), so a
test can say which machine logged what. A kill comes from a fault point (``bizon_fast/faults.py``) armed in
one machine's environment only, or from the test on observed progress (parts staged), never from a sleep.
Exactness is by values: the output is compared column by column with what the synthetic source generates.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg  # the [test] extra installs it: a missing package is a failure
import pytest

from native_bench.services import workers_of
from tests.conftest import REPO
from tests.faults import assert_synthetic_parquet_exact, kill_workers_randomly
from tests.services.kafka import KAFKA_TEST_CLIENT

pytestmark = pytest.mark.slow

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
SLOW_FILE = "slow_file=tests.fixtures.slow_file:SlowFileDestination"
SEED = 7
PAYLOAD = 32

#: a synthetic source that pauses after each batch: producers then hold their splits for seconds (the values
#: are the synthetic source's own, so the output is still checked against ``expected_synthetic``)
PAUSING_SOURCE = """
import time

from bizon_fast.connectors.sources.synthetic.config import SyntheticSourceConfig
from bizon_fast.connectors.sources.synthetic.source import SyntheticSource


class PausingConfig(SyntheticSourceConfig):
    pause_s: float = 0.0


class PausingSynthetic(SyntheticSource):
    @staticmethod
    def get_config_class():
        return PausingConfig

    def read(self, split, position):
        for batch in super().read(split, position):
            time.sleep(self.config.pause_s)
            yield batch
"""


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", SLOW_FILE)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("BIZON_FAST_FAULT", raising=False)
    monkeypatch.delenv("BIZON_FAST_FAULT_MARK", raising=False)


# ---------------------------------------------------------------- helpers


def machine(cwd: Path, name: str, *args: str, fault: str | None = None) -> subprocess.Popen:
    """``bizon-fast run p.yml --quiet *args`` logging to ``logs/<name>``; ``fault`` arms a point in it only."""
    env = {**os.environ, "BIZON_FAST_LOG_DIR": str(cwd / "logs" / name)}
    if fault:
        env["BIZON_FAST_FAULT"] = fault
        env["BIZON_FAST_FAULT_MARK"] = str(cwd / f"fault-{name}.mark")
    return subprocess.Popen(
        [sys.executable, "-m", "bizon_fast", "run", "p.yml", "--quiet", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{err}"


def log_of(cwd: Path, name: str) -> str:
    return "".join(p.read_text() for p in sorted((cwd / "logs" / name).glob("*.log")))


def fault_pid(log: str, point: str) -> int:
    found = re.findall(rf"fault point {re.escape(point)} reached \(pass \d+\): SIGKILL pid (\d+)", log)
    assert len(found) == 1, f"expected one kill at {point}, log shows {found}"
    return int(found[0])


def died_lines(log: str, role: str) -> list[str]:
    return re.findall(rf"{role}-\d+ died \(killed by SIGKILL\); restart \d+ of \d+", log)


def staged_parts(cwd: Path) -> int:
    return len(list(cwd.glob("out/.events.bizon-fast/*/part-*")))


def wait_for(cond, what: str, timeout: float = 60, procs: tuple[subprocess.Popen, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            assert p.poll() is None, f"a machine ended (exit {p.returncode}) before {what}: {p.communicate()[1]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kafka_queue(bootstrap: str, tag: str, *, assignment: str, partitions: int = 4, **queue: object) -> str:
    extra = "".join(f", {k}: {v}" for k, v in queue.items())
    return (
        f"{{type: kafka, config: {{batch_size_mb: BATCH_MB, queue: {{bootstrap_server: '{bootstrap}',"
        f" topic: t_{tag}, partitions: {partitions}{extra}}},"
        f" consumer: {{group_id: g_{tag}, assignment: {assignment},"
        f" session_timeout_ms: {KAFKA_TEST_CLIENT['session.timeout.ms']} CONSUMER_EXTRA,"
        f" consumer_config: {{max.poll.interval.ms: {KAFKA_TEST_CLIENT['max.poll.interval.ms']}}}}}}}}}"
    )


def rabbit_queue(tag: str) -> str:
    return (
        "{type: rabbitmq, config: {batch_size_mb: BATCH_MB, queue: {host: 127.0.0.1, queue_name: "
        f"bf_{tag}, partitions: 2, prefetch: 8}}}}}}"
    )


def write_pipeline(
    cwd: Path,
    queue: str,
    *,
    rows: int,
    splits: int = 8,
    batch_rows: int = 5000,
    batch_mb: float = 0.25,
    payload_bytes: int = PAYLOAD,
    delay: float = 0.0,
    workers: int = 2,
    pg_schema: str | None = None,
    pause_s: float | None = None,
    lease_seconds: float = 5,
    consumer_extra: str = "",
) -> None:
    source = f"name: synthetic, stream: events, rows: {rows}, splits: {splits}, batch_rows: {batch_rows}"
    source += f", seed: {SEED}, payload_bytes: {payload_bytes}"
    if pause_s is not None:
        (cwd / "pausing.py").write_text(PAUSING_SOURCE)
        source = source.replace("name: synthetic", "name: pausing") + f", pause_s: {pause_s}"
        source += f", source_file_path: {cwd / 'pausing.py'}"
    backend = f'  backend: {{type: postgres, config: {{dsn: "{DSN}", schema: {pg_schema}}}}}' if pg_schema else ""
    queue = queue.replace("BATCH_MB", str(batch_mb)).replace("CONSUMER_EXTRA", consumer_extra)
    (cwd / "p.yml").write_text(
        f"""
name: bfault
source: {{{source}}}
destination: {{name: slow_file, config: {{destination_id: out/events, format: parquet, buffer_size: 0,
  write_delay_s: {delay}}}}}
engine:
  queue: {queue}
  runner: {{config: {{max_workers: {workers}, max_restarts: 50, lease_seconds: {lease_seconds}}}}}
{backend}
"""
    )


def topic_frames(bootstrap: str, topic: str) -> list:
    """Every bizon-fast frame in ``topic``, read by assignment (no group join, so no Tansu join delay)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from bizon_fast.transport.broker import decode_frame

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{secrets.token_hex(3)}"})
    meta = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.topics[topic].partitions])
    frames = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 2:
        msgs = [m for m in consumer.consume(500, 0.5) if not m.error()]
        if msgs:
            idle_since = time.monotonic()
        frames += [decode_frame(dict(m.headers())["bf"]) for m in msgs]
    consumer.close()
    return frames


def committed_rows(pg_schema: str) -> int:
    with psycopg.connect(DSN) as conn:
        return conn.execute(f"SELECT COALESCE(SUM(rows), 0) FROM {pg_schema}.bizon_fast_cursors").fetchone()[0]


def jobs(pg_schema: str) -> list[tuple]:
    with psycopg.connect(DSN) as conn:
        return conn.execute(f"SELECT status FROM {pg_schema}.bizon_fast_jobs").fetchall()


# ---------------------------------------------------------------- Kafka: fault points


def test_kafka_consumer_killed_after_checkpoint_before_offset_commit(kafka_bootstrap: str, tmp_path: Path) -> None:
    """``broker.commit``: a consumer dies with its batches written and their cursors committed but the Kafka
    offsets not: the replacement replays them from the old offsets and must drop every seq already written.
    Batches of ~1 MiB under a 64 KiB message limit, so the replay reassembles batches sent in parts. The kill is at
    a consumer's first commit: how many commits a consumer makes depends on timing (a later pass may never come)."""
    rows = 160_000
    tag = secrets.token_hex(3)
    write_pipeline(
        tmp_path,
        kafka_queue(kafka_bootstrap, tag, assignment="static", max_message_bytes=65536),
        rows=rows,
        batch_rows=10_000,
        batch_mb=1,
        payload_bytes=64,
        delay=0.05,
    )
    finish(machine(tmp_path, "all", fault="broker.commit@1"))
    log = log_of(tmp_path, "all")
    fault_pid(log, "broker.commit")
    assert len(died_lines(log, "consumer")) == 1, "the supervisor must see the consumer's death"
    assert not died_lines(log, "producer")
    batches = [f for f in topic_frames(kafka_bootstrap, f"t_{tag}") if f.kind == "batch"]
    assert batches and all(f.parts > 1 for f in batches), "every batch must travel in parts"
    assert_synthetic_parquet_exact(tmp_path / "out" / "events", rows, SEED, 64)


def test_kafka_producer_killed_between_parts_and_consumers_killed(kafka_bootstrap: str, tmp_path: Path) -> None:
    """``kafka.split_message``: a producer dies after the head of a batch reached the broker and before its
    tail; consumers are SIGKILLed too, mid-assembly. The head is dropped (its split is re-read under a new
    epoch and sent whole) and nothing is written twice."""
    rows = 160_000
    tag = secrets.token_hex(3)
    write_pipeline(
        tmp_path,
        kafka_queue(kafka_bootstrap, tag, assignment="static", max_message_bytes=65536),
        rows=rows,
        batch_rows=10_000,
        batch_mb=1,
        payload_bytes=64,
        delay=0.15,
    )
    proc = machine(tmp_path, "all", fault="kafka.split_message@4")
    wait_for(lambda: staged_parts(tmp_path) >= 2, "the first parts", procs=(proc,))
    killed = kill_workers_randomly(proc, kills=2, rng=random.Random("split-consumers"), roles=("consumer",))
    finish(proc)
    assert len(killed) == 2, f"the run ended before the consumer kills: {killed}"
    log = log_of(tmp_path, "all")
    fault_pid(log, "kafka.split_message")
    assert len(died_lines(log, "producer")) == 1, "the supervisor must see the producer's death"
    assert len(died_lines(log, "consumer")) == 2, "the supervisor must see both consumer deaths"
    frames = [f for f in topic_frames(kafka_bootstrap, f"t_{tag}") if f.kind == "batch"]
    sent: dict[tuple, set[int]] = {}
    for f in frames:
        sent.setdefault((f.split_id, f.seq, f.epoch, f.parts), set()).add(f.part)
    torn = [k for k, parts in sent.items() if len(parts) < k[3]]
    assert len(torn) == 1 and min(sent[torn[0]]) == 0, f"one batch must have only its head in Kafka: {torn}"
    split, seq, epoch, _ = torn[0]
    assert any(k[:2] == (split, seq) and k[2] > epoch and len(p) == k[3] for k, p in sent.items()), (
        "the torn batch must be sent whole again under a later epoch"
    )
    assert_synthetic_parquet_exact(tmp_path / "out" / "events", rows, SEED, 64)


def test_lease_renew_fault_other_producer_machine_takes_over(
    kafka_bootstrap: str, pg_schema: str, tmp_path: Path
) -> None:
    """``lease.renew``: a producer machine's supervisor dies inside a lease renewal (transaction open) while
    its producers hold splits; its leases expire and the other producer machine re-reads those splits from
    their committed cursors (epoch 2)."""
    rows = 160_000
    write_pipeline(
        tmp_path,
        kafka_queue(kafka_bootstrap, secrets.token_hex(3), assignment="static"),
        rows=rows,
        batch_rows=5000,
        pg_schema=pg_schema,
        pause_s=0.15,
        lease_seconds=3,
        workers=1,
    )
    consumer = machine(tmp_path, "consumer", "--role", "consumer")
    doomed = machine(tmp_path, "producer-a", "--role", "producer", fault="lease.renew@1")
    other = machine(tmp_path, "producer-b", "--role", "producer")
    assert doomed.wait(60) == -9, "the armed producer machine must die at its renewal"
    dead_log = log_of(tmp_path, "producer-a")
    assert fault_pid(dead_log, "lease.renew") == doomed.pid, "the supervisor itself died in the renewal"
    finish(other)
    finish(consumer)
    assert_synthetic_parquet_exact(tmp_path / "out" / "events", rows, SEED, PAYLOAD)
    with psycopg.connect(DSN) as conn:
        epochs = conn.execute(f"SELECT epoch, produced FROM {pg_schema}.bizon_fast_split_leases").fetchall()
    assert all(produced for _, produced in epochs) and len(epochs) == 8
    assert max(e for e, _ in epochs) >= 2, f"a dead machine's split must be leased again: {epochs}"
    assert jobs(pg_schema) == [("succeeded",)]


def test_kafka_group_assignment_survives_a_killed_consumer_machine(
    kafka_bootstrap: str, pg_schema: str, tmp_path: Path
) -> None:
    """``consumer.assignment: group`` (the default): two consumer machines in one group; one machine's
    supervisor is SIGKILLed mid-run; the group moves its partitions and the other machine finishes."""
    rows = 160_000
    write_pipeline(
        tmp_path,
        kafka_queue(kafka_bootstrap, secrets.token_hex(3), assignment="group"),
        rows=rows,
        pg_schema=pg_schema,
        delay=0.15,
        workers=1,
    )
    first = machine(tmp_path, "consumer-a", "--role", "consumer")
    second = machine(tmp_path, "consumer-b", "--role", "consumer")
    producer = machine(tmp_path, "producer", "--role", "producer")
    wait_for(lambda: staged_parts(tmp_path) >= 3, "staged parts", timeout=60, procs=(first, second))
    orphans = workers_of(first.pid)
    psutil.Process(first.pid).kill()
    assert first.wait(10) == -9
    psutil.wait_procs(orphans, timeout=5)
    at_kill = committed_rows(pg_schema)
    assert 0 < at_kill < rows, f"{at_kill} rows committed when the machine died: the other must finish the rest"
    finish(producer)
    finish(second, timeout=150)
    assert_synthetic_parquet_exact(tmp_path / "out" / "events", rows, SEED, PAYLOAD)
    assert jobs(pg_schema) == [("succeeded",)]


def test_no_partition_warning_fires_after_the_configured_delay(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Two group consumers on a one-partition topic: one gets nothing and says so after
    ``consumer.no_partitions_warning_s`` (default 30 s; 1 s here)."""
    rows = 40_000
    write_pipeline(
        tmp_path,
        kafka_queue(kafka_bootstrap, secrets.token_hex(3), assignment="group", partitions=1),
        rows=rows,
        delay=0.2,
        consumer_extra=", no_partitions_warning_s: 1",
    )
    finish(machine(tmp_path, "all"))
    log = log_of(tmp_path, "all")
    assert "no Kafka partitions assigned after 1 s" in log
    assert_synthetic_parquet_exact(tmp_path / "out" / "events", rows, SEED, PAYLOAD)


# ---------------------------------------------------------------- RabbitMQ


def test_rabbitmq_random_worker_kills(rabbitmq: str, tmp_path: Path) -> None:
    rows = 200_000
    write_pipeline(tmp_path, rabbit_queue(secrets.token_hex(3)), rows=rows, delay=0.1)
    proc = machine(tmp_path, "all")
    wait_for(lambda: staged_parts(tmp_path) >= 1, "the first part", procs=(proc,))
    killed = kill_workers_randomly(proc, kills=4, rng=random.Random("rabbit-workers"))
    finish(proc)
    assert len(killed) == 4, f"the run ended before the kills: {killed}"
    log = log_of(tmp_path, "all")
    deaths = died_lines(log, "producer") + died_lines(log, "consumer")
    assert len(deaths) == 4, f"the supervisor must see every kill: {killed} vs {deaths}"
    assert_synthetic_parquet_exact(tmp_path / "out" / "events", rows, SEED, PAYLOAD)


def test_rabbitmq_single_active_consumer_takeover(rabbitmq: str, pg_schema: str, tmp_path: Path) -> None:
    """Two consumer machines on the same queues: only the first consumes (single active consumer); it is
    SIGKILLed, RabbitMQ hands its queues and unacknowledged messages to the second, which finishes."""
    rows = 160_000
    write_pipeline(tmp_path, rabbit_queue(secrets.token_hex(3)), rows=rows, delay=0.2, pg_schema=pg_schema)
    active = machine(tmp_path, "consumer-a", "--role", "consumer")
    wait_for(lambda: "batches through rabbitmq" in log_of(tmp_path, "consumer-a"), "consumer-a up", procs=(active,))
    standby = machine(tmp_path, "consumer-b", "--role", "consumer")
    wait_for(lambda: "batches through rabbitmq" in log_of(tmp_path, "consumer-b"), "consumer-b up", procs=(standby,))
    producer = machine(tmp_path, "producer", "--role", "producer")
    wait_for(lambda: staged_parts(tmp_path) >= 3, "staged parts", procs=(active, standby))
    orphans = workers_of(active.pid)
    psutil.Process(active.pid).kill()
    assert active.wait(10) == -9
    psutil.wait_procs(orphans, timeout=5)
    at_kill = committed_rows(pg_schema)
    assert 0 < at_kill < rows, f"{at_kill} rows committed when the active machine died: the standby must finish"
    try:
        finish(standby, timeout=60)
        finish(producer, timeout=30)
    finally:
        for proc in (standby, producer):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "joining it without preparing" in log_of(tmp_path, "consumer-b")
    assert_synthetic_parquet_exact(tmp_path / "out" / "events", rows, SEED, PAYLOAD)
    assert jobs(pg_schema) == [("succeeded",)]


def test_producer_machine_ends_when_a_consumer_machine_fails_the_job(
    rabbitmq: str, pg_schema: str, tmp_path: Path
) -> None:
    """A consumer machine that fails the job (here a transform that cannot run on these records) must not
    leave the producer machine waiting forever for commits nobody makes: it sees the job failed in the shared
    backend and ends, non-zero, saying so."""
    rows = 160_000
    write_pipeline(tmp_path, rabbit_queue(secrets.token_hex(3)), rows=rows, pg_schema=pg_schema, pause_s=0.05)
    with (tmp_path / "p.yml").open("a") as f:
        f.write("transforms:\n  - {label: needs_data, python: 'data = data'}\n")
    consumer = machine(tmp_path, "consumer", "--role", "consumer")
    producer = machine(tmp_path, "producer", "--role", "producer")
    try:
        _, consumer_err = consumer.communicate(timeout=60)
        assert consumer.returncode == 1, consumer_err
        assert "python transforms need bizon source records" in consumer_err
        _, producer_err = producer.communicate(timeout=30)
    finally:
        for proc in (consumer, producer):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert producer.returncode == 1, f"the producer machine must fail with the job: {producer_err}"
    assert "the job failed on another machine" in producer_err
    assert "failed on another machine" in log_of(tmp_path, "producer")
    assert jobs(pg_schema) == [("failed",)]
