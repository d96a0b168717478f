"""Virtual environments for the alternatives (bizon, dlt), created on demand under ``native_bench/.venvs/``.

Why separate environments: bizon pins its own polars, pydantic and sqlalchemy, and dlt brings a large
tree of its own; neither may change the versions bizon-fast is measured with. A venv is made once
and reused while its requirements are unchanged (a marker file records them). Without PyPI, or if
an install fails, the caller gets the reason and the benchmark records it as a note instead of a number.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

VENVS = Path(__file__).resolve().parent / ".venvs"
MARKER = ".native_bench-requirements"
INSTALL_TIMEOUT_S = 900


@dataclass
class Venv:
    """A ready environment (``python`` set) or the reason there is none (``problem`` set)."""

    name: str
    python: Path | None
    problem: str | None = None
    created_s: float = 0.0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("WARNING: Location")]
    return lines[-1][:300] if lines else ""


def ensure(name: str, requirements: list[str], check: str) -> Venv:
    """The venv ``name`` with ``requirements`` installed and ``check`` (a Python snippet) passing in it."""
    root = VENVS / name
    python = root / "bin" / "python"
    wanted = "\n".join(requirements)
    marker = root / MARKER
    if marker.is_file() and marker.read_text() == wanted and python.exists():
        return Venv(name, python)
    start = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True, text=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--retries", "1", "--timeout", "20", *requirements],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        if install.returncode != 0:
            reason = _last_line(install.stderr) or _last_line(install.stdout)
            return Venv(name, None, f"pip install {' '.join(requirements)} failed (PyPI unreachable?): {reason}")
        probe = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            return Venv(name, None, f"{name} venv installed but `{check}` fails: {_last_line(probe.stderr)}")
    except (subprocess.SubprocessError, OSError) as exc:
        return Venv(name, None, f"could not create the {name} venv: {exc}")
    marker.write_text(wanted)
    return Venv(name, python, created_s=time.perf_counter() - start)


def version(venv: Venv, module: str) -> str | None:
    """``module``'s installed distribution version inside ``venv``."""
    if venv.python is None:
        return None
    code = f"import importlib.metadata as m; print(m.version({module!r}))"
    probe = subprocess.run([str(venv.python), "-c", code], capture_output=True, text=True, timeout=60)
    return probe.stdout.strip() or None
