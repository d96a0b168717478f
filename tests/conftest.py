"""Shared fixtures. Tests that need a service call ``need_service``: a skip here, a failure in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REQUIRE_SERVICES = os.environ.get("BIZON_FAST_REQUIRE_SERVICES") == "1"
REPO = Path(__file__).resolve().parents[1]


def need_service(reason: str) -> None:
    """Skip with ``reason`` when a service is missing -- except in CI, where that is a failure."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing (BIZON_FAST_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


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
