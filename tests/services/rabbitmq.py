"""RabbitMQ on 127.0.0.1:5672 (guest/guest): the machine starts it (``rabbitmq-server -detached``), not the tests."""

from __future__ import annotations

import pytest

from native_bench.services import listening
from tests.services import need_service

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture
def rabbitmq() -> str:
    """The broker's URL, once it is seen listening."""
    if not listening("127.0.0.1", 5672):
        need_service("RabbitMQ is not listening on 127.0.0.1:5672 (rabbitmq-server -detached)")
    return RABBITMQ_URL
