"""Postgres on 127.0.0.1:5432 (user postgres, trust, database ``test``): a session connection and a schema per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.services import need_service

#: the Postgres every test uses (see README "services the tests use")
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture(scope="session")
def pg_admin():  # noqa: ANN201 - psycopg.Connection, imported lazily
    """An autocommit connection to the test Postgres, for setting up tables and reading results."""
    import psycopg

    try:
        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        need_service(f"PostgreSQL is not reachable ({PG_DSN}): {exc}")
    yield conn
    conn.close()


@pytest.fixture
def pg_schema(pg_admin) -> Iterator[str]:  # noqa: ANN001 - psycopg.Connection
    """A fresh schema of its own per test, dropped afterwards: tests never see each other's tables."""
    name = f"bf_t_{secrets.token_hex(4)}"
    pg_admin.execute(f"CREATE SCHEMA {name}")
    yield name
    pg_admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
