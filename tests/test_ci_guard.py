"""CI cannot go green on a skip: with BIZON_FAST_REQUIRE_SERVICES=1 every skip is a failure.

Runs pytest on a scratch test module that skips in each way a test here can (``pytest.skip``, a skip marker,
``importorskip`` at module level), with this suite's conftest, and checks the exit status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SKIPPING = """
import pytest

def test_skips_in_the_body():
    pytest.skip("service absent")

@pytest.mark.skipif(True, reason="a marker")
def test_skipped_by_marker():
    pass

def test_passes():
    pass
"""

SKIPPED_MODULE = """
import pytest
pytest.importorskip("no_such_package_bizon_fast")

def test_never_collected():
    pass
"""


def _pytest(folder: Path, require: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BIZON_FAST_REQUIRE_SERVICES"}
    if require:
        env["BIZON_FAST_REQUIRE_SERVICES"] = "1"
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(folder), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=120,
    )


def _scratch(tmp_path: Path, **modules: str) -> Path:
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    for name, text in modules.items():
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


def test_a_skip_fails_when_services_are_required(tmp_path: Path) -> None:
    folder = _scratch(tmp_path, test_skipping=SKIPPING)
    local = _pytest(folder, require=False)
    assert local.returncode == 0, local.stdout
    assert "2 skipped" in local.stdout
    ci = _pytest(folder, require=True)
    assert ci.returncode == 1, ci.stdout
    assert "skipped in CI" in ci.stdout
    assert "1 passed" in ci.stdout and "skipped" not in ci.stdout.splitlines()[-1]


def test_a_module_level_importorskip_fails_when_services_are_required(tmp_path: Path) -> None:
    folder = _scratch(tmp_path, test_module_skip=SKIPPED_MODULE, test_fine="def test_fine():\n    pass\n")
    assert _pytest(folder, require=False).returncode == 0
    ci = _pytest(folder, require=True)
    assert ci.returncode != 0, ci.stdout
    assert "module skipped in CI" in ci.stdout
