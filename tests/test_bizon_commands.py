"""bizon's run outcome, side by side with bizon 0.6.4: ``--result-json``, the status line, ``logger`` on the console.

A bizon user's scheduler reads ``bizon run --result-json`` and greps ``Pipeline finished with status Failure``;
both must survive the switch. Every test runs ``python -m bizon_fast`` in a fresh folder; where bizon 0.6.4 can
run the same pipeline (its shared venv from ``native_bench.venvs``), it does, and the two outcomes are compared
field by field. The pipelines are bizon's quickstart (dummy -> logger), its failing transform, and a custom
source (written with ``bizon.*`` imports, so both run it) that fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO

FIELDS = [
    "status",
    "failure_class",
    "job_id",
    "producer",
    "consumer",
    "stream",
    "records_written",
    "started_at",
    "duration_s",
    "error",
]
#: what must match bizon's file exactly (job ids, times and error texts are each engine's own)
COMPARED = ["status", "failure_class", "producer", "consumer", "stream", "records_written"]
IDS = {9898, 88787, 98, 3333, 56565}
STARTED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")

DUMMY = """
source:
  name: dummy
  stream: creatures
  authentication:
    type: api_key
    params:
      token: dummy_key
"""
LOGGER = "destination:\n  name: logger\n  config:\n    dummy: dummy\n"
FAST_BIZON = "engine:\n  runner:\n    config:\n      consumer_start_delay: 0\n      is_alive_check_interval: 1\n"
FAILING_TRANSFORM = (
    "transforms:\n  - label: transform_data\n    python: |\n      data['name'] = data['fake_variable']\n"
)
TRANSFORM_STATUS = "Pipeline finished with status Failure (Producer: killed_by_runner, Consumer: transform_error)"
SOURCE_STATUS = "Pipeline finished with status Failure (Producer: source_error, Consumer: source_error)"

FAILING_SOURCE = """
from bizon.source.config import SourceConfig
from bizon.source.models import SourceIteration
from bizon.source.source import AbstractSource


class BrokenSource(AbstractSource):
    @staticmethod
    def streams() -> list[str]:
        return ["pages"]

    @staticmethod
    def get_config_class() -> SourceConfig:
        return SourceConfig

    def get_authenticator(self):
        return None

    def check_connection(self):
        return True, None

    def get_total_records_count(self):
        return None

    def get(self, pagination: dict = None) -> SourceIteration:
        raise RuntimeError("the API is down")
"""
BROKEN_SOURCE = "source:\n  name: broken\n  stream: pages\n  source_file_path: broken_source.py\n"

FAILING_DESTINATION = """
from bizon_fast.connectors.destinations.noop.destination import NoopDestination
from bizon_fast.errors import StepFailed


class FullDisk(NoopDestination):
    def write(self, split_id, first_seq, last_seq, batches):
        raise StepFailed("no space left on the destination")
"""


def _result(path: Path) -> dict:
    """The result file, checked for bizon's exact shape: its ten fields in bizon's order, its time format."""
    doc = json.loads(path.read_text())
    assert list(doc) == FIELDS, doc
    assert STARTED_AT.fullmatch(doc["started_at"]), doc["started_at"]
    assert doc["status"] in ("running", "success", "failure"), doc
    if doc["status"] == "running":
        assert doc["duration_s"] is None, doc
    else:
        assert isinstance(doc["duration_s"], float) and doc["duration_s"] >= 0, doc
    assert not Path(f"{path}.tmp").exists(), "the outcome is renamed into place"
    return doc


def _console_records(stderr: str, mode: str = "full_refresh") -> list[str]:
    """The logger destination's records printed on the console, as text.

    bizon's lines carry loguru's prefix first, and bizon 0.6.4 prints the mode as the enum
    (``[SourceSyncModes.FULL_REFRESH]``); bizon-fast prints the bare line with the plain mode.
    """
    label = rf"(?:{mode}|SourceSyncModes\.{mode.upper()})"
    return re.findall(rf"\[{label}\] (\{{.*\}})$", stderr, re.MULTILINE)


def _messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("progress:")]


@pytest.fixture(scope="module")
def bizon() -> Callable[..., subprocess.CompletedProcess]:
    """Run bizon 0.6.4 itself (its CLI, in its own venv) in a folder, as a bizon user would."""
    from native_bench import venvs

    venv = venvs.ensure("bizon", ["bizon==0.6.4"], "import bizon.cli.main")
    if venv.python is None:
        pytest.skip(f"bizon 0.6.4 is not available to compare with: {venv.problem}")

    def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return subprocess.run(
            [str(venv.python), "-m", "bizon", *args], cwd=folder, capture_output=True, text=True, timeout=180, env=env
        )

    return run


def _side_by_side(tmp_path: Path, config: str, files: dict[str, str] | None = None) -> tuple[Path, Path]:
    """The same pipeline in two folders, ``fast/`` and ``bizon/``."""
    folders = tmp_path / "fast", tmp_path / "bizon"
    for folder in folders:
        folder.mkdir()
        (folder / "p.yml").write_text(config)
        for name, text in (files or {}).items():
            (folder / name).write_text(text)
    return folders


def _fast(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "BIZON_FAST_LOG_DIR": str(folder / "logs"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bizon_fast", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        env=full_env,
    )


# ---------------------------------------------------------------- success: the result file and the records


def test_success_writes_bizons_result_and_prints_the_records_like_bizon(tmp_path: Path, bizon) -> None:
    fast_dir, bizon_dir = _side_by_side(tmp_path, "name: creatures\n" + DUMMY + LOGGER + FAST_BIZON)
    fast = _fast(fast_dir, "run", "p.yml", "--result-json", "result.json")
    assert fast.returncode == 0, fast.stderr
    ours = _result(fast_dir / "result.json")
    assert ours["status"] == "success" and ours["failure_class"] is None and ours["error"] is None, ours
    assert (ours["producer"], ours["consumer"], ours["stream"]) == ("success", "success", None), ours
    assert ours["records_written"] == 5 and ours["job_id"], ours

    theirs_run = bizon(bizon_dir, "run", "p.yml", "--result-json", "result.json")
    assert theirs_run.returncode == 0, theirs_run.stderr[-3000:]
    theirs = _result(bizon_dir / "result.json")
    assert {k: ours[k] for k in COMPARED} == {k: theirs[k] for k in COMPARED}, (ours, theirs)
    assert "Pipeline finished successfully." in fast.stdout and "Pipeline finished successfully." in theirs_run.stdout

    # the default (process) runner prints every record on the console, the same records bizon prints
    records = _console_records(fast.stderr)
    assert {json.loads(r)["id"] for r in records} == IDS and len(records) == 5, fast.stderr
    assert sorted(records) == sorted(_console_records(theirs_run.stderr)), "the same text for every record"
    assert "Logger destination: FULL_REFRESH sync completed" in fast.stderr
    assert "Logger destination: FULL_REFRESH sync completed" in theirs_run.stderr


@pytest.mark.parametrize("runner", ["thread", "stream"])
def test_logger_prints_records_on_the_console_under_every_runner(tmp_path: Path, cli, runner: str) -> None:
    stream = "  sync_mode: stream\n  max_iterations: 2\n" if runner == "stream" else ""
    (tmp_path / "p.yml").write_text("name: creatures\n" + DUMMY + stream + LOGGER)
    # --quiet drops the progress display and the summary, not the records
    res = cli("run", "p.yml", "--runner", runner, "--quiet", "--result-json", "r.json", timeout=120)
    assert res.returncode == 0, res.stderr
    result = _result(tmp_path / "r.json")
    sides = (None, None, "success") if runner == "stream" else ("success", "success", None)  # bizon's stream runner
    assert (result["producer"], result["consumer"], result["stream"]) == sides, result
    records = _console_records(res.stderr, "stream" if runner == "stream" else "full_refresh")
    ids = [json.loads(r)["id"] for r in records]
    if runner == "stream":  # bizon's stream contract: each iteration is the first page again
        assert len(ids) == 4 and set(ids) == {9898, 88787}, res.stderr
    else:
        assert len(ids) == 5 and set(ids) == IDS, res.stderr
    assert len(res.stderr.splitlines()) == len(records) + 1, "records and bizon's last line, each once: " + res.stderr


def test_result_json_reads_running_until_the_run_ends(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text("name: creatures\n" + DUMMY + "  sleep: 1\n" + LOGGER)
    result = tmp_path / "result.json"
    env = {**os.environ, "BIZON_FAST_LOG_DIR": str(tmp_path / "logs")}
    args = [sys.executable, "-m", "bizon_fast", "run", "p.yml", "--quiet", "--result-json", str(result)]
    with subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 60
        while not result.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        seen = _result(result)
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    assert seen["status"] == "running" and seen["job_id"] is None and seen["error"] is None, seen
    done = _result(result)
    assert done["status"] == "success" and done["started_at"] == seen["started_at"], done


# ---------------------------------------------------------------- failures: the result file and the status line


def test_failing_transform_matches_bizons_result_and_status_line(tmp_path: Path, bizon) -> None:
    # a page a second: bizon's producer is still reading when its consumer fails (else it reports `success`)
    config = "name: failing\n" + DUMMY + "  sleep: 1\n" + FAILING_TRANSFORM + LOGGER + FAST_BIZON
    fast_dir, bizon_dir = _side_by_side(tmp_path, config)
    fast = _fast(fast_dir, "run", "p.yml", "--result-json", "result.json")
    assert fast.returncode == 1, fast.stderr
    *_, first, last = _messages(fast.stderr)  # bizon-fast's own line, then bizon's
    assert first.startswith("Error: job ") and "Error applying transformation" in first, first
    assert last == TRANSFORM_STATUS
    ours = _result(fast_dir / "result.json")
    assert ours["status"] == "failure" and ours["failure_class"] == "transform" and ours["job_id"], ours
    assert ours["error"].startswith("DataError: Error applying transformation") and "KeyError" in ours["error"]

    theirs_run = bizon(bizon_dir, "run", "p.yml", "--result-json", "result.json")
    assert theirs_run.returncode == 1, theirs_run.stderr[-3000:]
    assert f"Error: {TRANSFORM_STATUS}" in theirs_run.stderr.splitlines()
    theirs = _result(bizon_dir / "result.json")
    assert {k: ours[k] for k in COMPARED} == {k: theirs[k] for k in COMPARED}, (ours, theirs)


def test_failing_source_matches_bizons_result_and_status_line(tmp_path: Path, bizon) -> None:
    config = "name: broken\n" + BROKEN_SOURCE + LOGGER + FAST_BIZON
    fast_dir, bizon_dir = _side_by_side(tmp_path, config, {"broken_source.py": FAILING_SOURCE})
    fast = _fast(fast_dir, "run", "p.yml", "--result-json", "result.json", "--runner", "thread")
    assert fast.returncode == 1, fast.stderr
    *_, first, last = _messages(fast.stderr)  # after the progress display's note on the failure
    assert first.startswith("Error: job ") and "the API is down" in first, first
    assert last == SOURCE_STATUS
    ours = _result(fast_dir / "result.json")
    assert ours["failure_class"] == "source" and ours["error"] == "RuntimeError: the API is down", ours

    theirs_run = bizon(bizon_dir, "run", "p.yml", "--result-json", "result.json")
    assert theirs_run.returncode == 1, theirs_run.stderr[-3000:]
    assert f"Error: {SOURCE_STATUS}" in theirs_run.stderr.splitlines()
    theirs = _result(bizon_dir / "result.json")
    assert {k: ours[k] for k in COMPARED} == {k: theirs[k] for k in COMPARED}, (ours, theirs)


def test_failing_destination_with_json_quiet_logs_the_status_line_as_json(tmp_path: Path, cli) -> None:
    (tmp_path / "full_disk.py").write_text(FAILING_DESTINATION)
    (tmp_path / "p.yml").write_text("name: full\n" + DUMMY + "destination: {name: full_disk}\n")
    env = {"BIZON_FAST_DESTINATIONS": "full_disk=full_disk:FullDisk", "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    res = cli("run", "p.yml", "--log-format", "json", "--quiet", "--result-json", "r.json", env=env, timeout=120)
    assert res.returncode == 1, res.stderr
    *lines, last = res.stderr.strip().splitlines()
    assert last.startswith("Error: job ") and "no space left" in last, last
    docs = [json.loads(line) for line in lines]  # every other line is the log's, as JSON: the status line too
    status = "Pipeline finished with status Failure (Producer: killed_by_runner, Consumer: destination_error)"
    assert [d["level"] for d in docs if d["message"] == status] == ["ERROR"], docs
    result = _result(tmp_path / "r.json")
    assert (result["failure_class"], result["producer"], result["consumer"]) == (
        "destination",
        "killed_by_runner",
        "destination_error",
    ), result
    assert result["error"] == "StepFailed: no space left on the destination" and result["records_written"] is None


def test_a_config_error_is_bizons_config_class_without_a_status_line(tmp_path: Path, cli) -> None:
    (tmp_path / "p.yml").write_text("name: bad\n" + DUMMY + "destination:\n  name: logger\n  config: {dummy: [1]}\n")
    res = cli("run", "p.yml", "--result-json", "result.json")
    assert res.returncode == 2, res.stderr
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "destination.config.dummy" in line, line
    result = _result(tmp_path / "result.json")
    assert result["status"] == "failure" and result["failure_class"] == "config", result
    assert result["job_id"] is None and result["producer"] is None and result["records_written"] is None, result
    assert result["error"].startswith("ConfigError: "), result


def test_an_unwritable_result_path_is_one_line_before_anything_runs(tmp_path: Path, cli) -> None:
    (tmp_path / "p.yml").write_text("name: creatures\n" + DUMMY + LOGGER)
    res = cli("run", "p.yml", "--result-json", "no/such/folder/result.json")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        "Error: --result-json: cannot write no/such/folder/result.json: No such file or directory"
    ), res.stderr
    assert not (tmp_path / "bizon.sqlite3").exists(), "nothing ran"
