"""The machine a run measured: numbers mean nothing without the CPU, cores, RAM and library versions.

The load average is recorded at the start and the end of the run because the machines this runs on
are shared: a high load explains a slow number better than any profile.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["bizon-fast", "pyarrow", "numpy", "polars", "msgspec", "psutil"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{' (uncommitted changes)' if dirty else ''}" if head else None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict[str, Any]:
    """Everything that qualifies the numbers of this run."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
        "git": _git(),
        "load_average_start": load_average(),
    }


def markdown(machine: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [
        f"- CPU: {machine['cpu_model']}, {machine['logical_cores']} logical cores "
        f"({machine['physical_cores']} physical), RAM {machine['ram_gb']} GB, {machine['os']}",
        f"- Python {machine['python']}; {versions}",
        f"- git {machine.get('git') or 'n/a'}; run started {machine['date']}",
        f"- load average (1/5/15 min) at start {machine['load_average_start']}, "
        f"at end {machine.get('load_average_end', 'n/a')}",
    ]
    return "\n".join(lines)
