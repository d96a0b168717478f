"""Shared fixtures. Tests that need a service call ``need_service``: a skip here, a failure in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_SERVICES = os.environ.get("BIZON_FAST_REQUIRE_SERVICES") == "1"
REPO = Path(__file__).resolve().parents[1]


#: the Postgres every test uses (see README "services the tests use")
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def need_service(reason: str) -> None:
    """Skip with ``reason`` when a service is missing -- except in CI, where that is a failure."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing (BIZON_FAST_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201 - a pytest hook wrapper
    """In CI a skipped test is a failed test: a claim that was not checked must not pass as green.

    ``need_service`` already fails there; this also catches ``pytest.skip``/``importorskip`` anywhere and
    skip markers, so no path can turn into a silent skip. ``xfail`` is left alone (it reports as skipped).
    """
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SERVICES and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (BIZON_FAST_REQUIRE_SERVICES=1 turns every skip into a failure): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # noqa: ANN201 - a pytest hook wrapper
    """A module skipped at import (``pytest.importorskip`` at module level) fails in CI too."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SERVICES and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"module skipped in CI (BIZON_FAST_REQUIRE_SERVICES=1): {reason}"


def run_cli(
    *args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``bizon-fast`` as a user would, in its own process."""
    full_env = {**os.environ, "BIZON_FAST_LOG_DIR": str(cwd / "logs"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bizon_fast", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def cli(tmp_path: Path):
    def _run(*args: str, **kw) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=tmp_path, **kw)

    return _run


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    """A Tansu Kafka-protocol broker for the whole session: ``host:port``."""
    from tests.brokers import tansu

    with tansu(tmp_path_factory.mktemp("tansu") / "tansu.log") as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def pg_admin():
    """An autocommit connection to the test Postgres, for setting up tables and reading results."""
    import psycopg

    try:
        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        need_service(f"PostgreSQL is not reachable ({PG_DSN}): {exc}")
    yield conn
    conn.close()


@pytest.fixture
def pg_schema(pg_admin) -> Iterator[str]:
    """A fresh schema of its own per test, dropped afterwards: tests never see each other's tables."""
    import secrets

    name = f"bf_t_{secrets.token_hex(4)}"
    pg_admin.execute(f"CREATE SCHEMA {name}")
    yield name
    pg_admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
