"""A virtual environment for the tests that run bizon's own connectors with bizon-fast: the test venv plus the
``bizon`` extra.

Why a separate venv: the main test venv must not hold a real bizon, because its tests exercise bizon-fast's
``bizon.*`` shim, which a real bizon replaces. Why layered rather than a fresh venv: a fresh one would install
the whole dependency tree again (minutes). The layered venv sees every package of the interpreter running the
tests (bizon-fast's editable install included) through a ``.pth`` file that adds that interpreter's
site-packages as a site directory, *after* its own; pip then installs into it only what the ``bizon`` extra of
``pyproject.toml`` adds (bizon itself, its own dependencies bizon-fast lacks, gspread). A plain
``python -m venv --system-site-packages`` would not do: made from a venv's interpreter it exposes the base
Python's site-packages, not the venv's.

It is built once per machine and reused while the extra's requirements are unchanged (a marker file records
them), under a file lock, so parallel sessions build it once. Without PyPI the fixture skips with pip's reason.
Use it through the session fixture :func:`bizon_env` (import it into a test module)::

    from tests.bizon_env import bizon_env  # noqa: F401 - the fixture
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-bizon"
LOCK = REPO / ".venv-bizon.lock"
MARKER = ".bizon-fast-layer"
LAYER_PTH = "_bizon_fast_layer.pth"
#: the import that proves the layered venv works: bizon's sources and bizon-fast side by side
CHECK = "import bizon.source.source, bizon.connectors.sources, gspread, bizon_fast.cli"
INSTALL_TIMEOUT_S = 900


def bizon_extra() -> list[str]:
    """The ``bizon`` extra's requirements, as ``pyproject.toml`` declares them."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(data["project"]["optional-dependencies"]["bizon"])


def _site_dirs() -> list[str]:
    """The site-packages of the interpreter running the tests (the main test venv), purelib then platlib."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


@dataclass
class BizonEnv:
    """The layered venv: ``python`` runs bizon-fast with a real bizon importable."""

    root: Path
    python: Path

    def run_cli(
        self, *args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """``bizon-fast ARGS`` in the layered venv, in ``cwd``, as a user runs it (its own process)."""
        full_env = {**os.environ, "BIZON_FAST_LOG_DIR": str(cwd / "logs"), **(env or {})}
        full_env.pop("PYTHONPATH", None)  # the layered venv's own sys.path only
        return subprocess.run(
            [str(self.python), "-m", "bizon_fast", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _build(root: Path, requirements: list[str]) -> str | None:
    """Create the layered venv at ``root``; the reason it could not be made, or None."""
    shutil.rmtree(root, ignore_errors=True)
    python = root / "bin" / "python"
    # no pip of its own: the main venv's pip is importable through the layer
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True)
    probe = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    own_site = Path(probe.stdout.strip())
    lines = [f"import site; site.addsitedir({path!r})" for path in _site_dirs()]
    (own_site / LAYER_PTH).write_text("\n".join(lines) + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--retries", "1"]
        + ["--timeout", "20", *requirements],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    if install.returncode != 0:
        reason = _last_line(install.stderr) or _last_line(install.stdout)
        return f"pip install {' '.join(requirements)} into {root} failed (PyPI unreachable?): {reason}"
    check = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        return f"the layered bizon venv {root} is installed but `{CHECK}` fails: {_last_line(check.stderr)}"
    return None


def ensure(root: Path = VENV) -> BizonEnv | str:
    """The layered venv, built when missing or stale; a string (the reason) when it cannot be made."""
    requirements = bizon_extra()
    wanted = "\n".join([sys.executable, *_site_dirs(), *requirements])
    python = root / "bin" / "python"
    marker = root / MARKER
    with open(LOCK if root == VENV else root.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == wanted and python.exists():
            return BizonEnv(root, python)
        try:
            problem = _build(root, requirements)
        except (subprocess.SubprocessError, OSError) as exc:
            problem = f"could not create the layered bizon venv {root}: {exc}"
        if problem is not None:
            return problem
        marker.write_text(wanted)
    return BizonEnv(root, python)


@pytest.fixture(scope="session")
def bizon_env() -> Iterator[BizonEnv]:
    """The layered venv (the main test venv + the ``bizon`` extra); skips with pip's reason when it cannot be built."""
    env = ensure()
    if isinstance(env, str):
        pytest.skip(env)
    yield env
