"""Build pipeline YAMLs and run them through the ``bizon-fast`` command line, one fresh folder per run.

Why the command line in a subprocess: the numbers must be what a user gets from ``bizon-fast run``,
interpreter start, imports, planning, spawning workers and publishing included. Why a fresh folder:
the default sqlite backend resumes a job found in ``bizon.sqlite3``, and a second run of the same
pipeline in the same folder would measure a resume, not a run.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from native_bench import verify
from native_bench.proctree import RunStats, measure

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TIMEOUT_S = 900


def example(name: str) -> dict[str, Any]:
    """One of the project's example pipelines (``configs/NAME``), so benchmarks track what users copy."""
    with open(CONFIGS / name) as f:
        return yaml.safe_load(f)


def synthetic_pipeline(
    name: str,
    rows: int,
    destination: str,
    dest_config: dict[str, Any] | None = None,
    *,
    splits: int = 16,
    source: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``synthetic`` source pipeline; file destinations write under ``out/`` of the run folder."""
    config: dict[str, Any] = {
        "name": name,
        "source": {"name": "synthetic", "stream": "events", "rows": rows, "splits": splits, **(source or {})},
        "destination": {"name": destination, "config": dict(dest_config or {})},
    }
    if destination == "file":
        config["destination"]["config"].setdefault("destination_id", f"out/{name}")
    if engine:
        config["engine"] = engine
    return config


def with_rows(config: dict[str, Any], rows: int, name: str | None = None) -> dict[str, Any]:
    """A copy of ``config`` with ``rows`` rows; a file destination's output redirected under ``out/``."""
    config = copy.deepcopy(config)
    config["source"]["rows"] = rows
    if name:
        config["name"] = name
    dest = config["destination"].setdefault("config", {})
    if config["destination"]["name"] == "file":
        dest["destination_id"] = f"out/{config['name']}"
    return config


@functools.cache
def _cli() -> list[str]:
    """The ``bizon-fast`` console script next to this interpreter, as a user would type it."""
    script = Path(sys.executable).parent / "bizon-fast"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bizon_fast"]


def dir_files(path: Path) -> list[Path]:
    """Every file under ``path`` (the output a run wrote)."""
    return [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []


def in_fresh_dir(
    scratch: Path,
    body: Callable[[Path], RunStats],
    expected_rows: int,
    written: Callable[[Path], verify.Written | None] | None = None,
) -> RunStats:
    """Run ``body(folder)`` in a new folder under ``scratch``; check and record what it wrote, then delete it.

    ``written(folder)`` reads the rows back (default: the Parquet or NDJSON files under ``out/``); a run
    that did not write ``expected_rows`` distinct ids is marked failed (``verify.check``).
    """
    folder = Path(tempfile.mkdtemp(prefix="run_", dir=scratch))
    try:
        stats = body(folder)
        files = dir_files(folder / "out")
        stats.extra["output_bytes"] = sum(f.stat().st_size for f in files)
        stats.extra["output_files"] = len(files)
        if stats.ok:
            try:
                found = (written or default_output)(folder)
                result: verify.Written | Exception = found or verify.Written(0, 0, "no output files under out/")
            except Exception as exc:  # noqa: BLE001 - unreadable output fails the run, it does not crash the suite
                result = exc
            verify.check(stats, expected_rows, result)
        return stats
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def default_output(folder: Path) -> verify.Written | None:
    """The Parquet or NDJSON files a run wrote under ``out/``."""
    return verify.files_under(folder / "out")


def run_bizon_fast(
    config: dict[str, Any],
    *,
    workers: int,
    scratch: Path,
    extra_args: tuple[str, ...] = (),
    timeout: float = TIMEOUT_S,
    expected_rows: int | None = None,
) -> RunStats:
    """``bizon-fast run pipeline.yml --workers N --quiet`` in a fresh folder; its tree measured.

    The run must write ``expected_rows`` rows (default: the source's ``rows``, for generated sources).
    """

    def body(folder: Path) -> RunStats:
        (folder / "out").mkdir()
        (folder / "pipeline.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {**os.environ, "BIZON_FAST_LOG_DIR": str(folder / "logs")}
        cmd = [*_cli(), "run", "pipeline.yml", "--workers", str(workers), "--quiet", *extra_args]
        return measure(cmd, cwd=folder, env=env, timeout=timeout)

    expected = int(config["source"]["rows"]) if expected_rows is None else expected_rows
    return in_fresh_dir(scratch, body, expected, lambda folder: verify.pipeline_output(folder, config))


def run_python(
    python: str | Path,
    args: list[str],
    *,
    scratch: Path,
    expected_rows: int,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT_S,
) -> RunStats:
    """``python ARGS`` in a fresh folder (with an ``out/`` in it), measured like a pipeline run.

    Its output is the Parquet or NDJSON files it wrote under ``out/``: ``expected_rows`` distinct ids.
    """

    def body(folder: Path) -> RunStats:
        (folder / "out").mkdir()
        # the repository on the path, so ``-m native_bench.x`` works from the run folder and from other venvs
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        return measure([str(python), *args], cwd=folder, env=full_env, timeout=timeout)

    return in_fresh_dir(scratch, body, expected_rows)


@functools.cache
def _row_bytes(payload_bytes: int) -> float:
    from bizon_fast.connectors.sources.synthetic.source import SyntheticGenerator

    rows = 65_536
    return SyntheticGenerator(0, payload_bytes).batch(0, rows).nbytes / rows


def synthetic_bytes(config: dict[str, Any]) -> float:
    """Arrow bytes of a synthetic pipeline's rows: the payload MB/s figures are computed from it."""
    source = config["source"]
    return _row_bytes(int(source.get("payload_bytes", 32))) * int(source["rows"])
