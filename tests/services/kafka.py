"""Kafka for the tests: one Tansu broker (``native_bench.services.tansu``) per session, and topic set-up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from native_bench.services import ServiceUnavailable, tansu
from tests.services import need_service

#: client settings that keep Tansu's group joins short (it holds the first JoinGroup for session.timeout.ms / 2)
KAFKA_TEST_CLIENT = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 10000}


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu Kafka-protocol broker for the whole session: ``host:port``."""
    with contextlib.ExitStack() as stack:
        try:
            bootstrap = stack.enter_context(tansu(tmp_path_factory.mktemp("tansu") / "tansu.log"))
        except ServiceUnavailable as exc:
            need_service(str(exc))
        yield bootstrap


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for fut in futures.values():
        fut.result(15)
