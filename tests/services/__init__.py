"""The real services the tests run against, one module each: Postgres, Kafka (Tansu), RabbitMQ, BigQuery (emulator),
object stores (S3 and GCS emulators).

Each module gives fixtures that start or find its service (``conftest.py`` registers them all) and the helpers
that talk to it. A missing service is ``need_service``: a skip here, a failure in CI
(``BIZON_FAST_REQUIRE_SERVICES=1``). Every test that uses one of ``SERVICE_FIXTURES``, directly or through
another fixture, gets the ``service`` mark, so ``pytest -m "not service"`` runs the tests that need nothing.

The launchers themselves (Tansu, the emulator) live in ``native_bench.services``: the benchmarks start the
same processes and must not import the tests.
"""

from __future__ import annotations

import os

import pytest

#: set in CI: a service that is missing fails the test instead of skipping it
REQUIRE_SERVICES = os.environ.get("BIZON_FAST_REQUIRE_SERVICES") == "1"

#: the fixtures that need a running service: a test using any of them is marked ``service``
SERVICE_FIXTURES = frozenset(
    {"pg_admin", "pg_schema", "kafka_bootstrap", "rabbitmq", "bq_emulator", "bq_dataset", "s3_endpoint", "gcs_endpoint"}
)


def need_service(reason: str) -> None:
    """Skip with ``reason`` when a service is missing -- except in CI, where that is a failure."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing (BIZON_FAST_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)
