"""Shared fixtures and hooks: the CLI as a user runs it, the service fixtures (``tests/services``), the
``service`` mark, and CI's rule that a skip is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import REQUIRE_SERVICES, SERVICE_FIXTURES

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = [
    "tests.services.postgres",
    "tests.services.kafka",
    "tests.services.rabbitmq",
    "tests.services.bigquery",
    "tests.services.objectstore",
]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``service`` every test that uses a service fixture, directly or through another fixture."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.service)


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
