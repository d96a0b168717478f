"""bizon's own acceptance behaviours (reference/bizon.md section 7), run through the CLI as a bizon user would.

Every test writes bizon YAML into a fresh working directory and runs ``python -m bizon_fast`` there;
the custom source in ``tests/fixtures/bizon_custom_source.py`` imports from ``bizon.*`` exactly as a
bizon source does. The in-process tests at the end cover the compatibility layer itself.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

CUSTOM_SOURCE = str(REPO / "tests" / "fixtures" / "bizon_custom_source.py")
IDS = {9898, 88787, 98, 3333, 56565}

DUMMY = """
source:
  name: dummy
  stream: creatures
  authentication:
    type: api_key
    params:
      token: dummy_key
"""
UPPER = """
transforms:
  - label: transform_data
    python: |
      if 'name' in data:
        data['name'] = data['name'].upper()
"""
CREATURE_SCHEMA = """
        record_schema:
          - {name: id, type: integer}
          - {name: name, type: string}
          - {name: age, type: integer}
"""


def _write(tmp_path: Path, text: str, name: str = "config.yml") -> str:
    (tmp_path / name).write_text(text)
    return name


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _jobs(tmp_path: Path, name: str) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
        return db.execute(
            "SELECT status, COALESCE(error, '') FROM bizon_fast_jobs WHERE name=? ORDER BY created_at", (name,)
        ).fetchall()


# ---------------------------------------------------------------- 1-4: the e2e pipelines


def test_quickstart_dummy_to_logger(tmp_path: Path, cli) -> None:
    res = cli("run", _write(tmp_path, "name: demo-creatures-pipeline\n" + DUMMY + LOGGER))
    assert res.returncode == 0, res.stderr
    assert "Pipeline finished successfully." in res.stdout
    assert (tmp_path / "bizon.sqlite3").exists()


LOGGER = """
destination:
  name: logger
  config:
    dummy: dummy
"""


def test_dummy_to_file_with_transform(tmp_path: Path, cli) -> None:
    config = (
        "name: test_job\n" + DUMMY + UPPER + "destination:\n  name: file\n  config:\n    destination_id: test_e2e\n"
    )
    res = cli("run", _write(tmp_path, config))
    assert res.returncode == 0, res.stderr
    lines = _lines(tmp_path / "test_e2e.json")
    assert {line["source_record_id"] for line in lines} == {str(i) for i in IDS}
    assert set(lines[0]) == {
        "bizon_id",
        "bizon_extracted_at",
        "bizon_loaded_at",
        "source_record_id",
        "source_timestamp",
        "source_data",
    }
    by_id = {line["source_record_id"]: json.loads(line["source_data"]) for line in lines}
    assert by_id["9898"]["name"] == "BIZON"


def test_unnest(tmp_path: Path, cli) -> None:
    config = (
        "name: test_unnest\n"
        + DUMMY
        + UPPER
        + "destination:\n  name: file\n  config:\n    destination_id: unnested\n    unnest: true\n"
        + "    record_schemas:\n      - destination_id: unnested\n"
        + CREATURE_SCHEMA
    )
    res = cli("run", _write(tmp_path, config))
    assert res.returncode == 0, res.stderr
    lines = _lines(tmp_path / "unnested.json")
    assert all(list(line) == ["id", "name", "age"] for line in lines)
    assert {line["id"] for line in lines} == IDS
    assert next(line for line in lines if line["id"] == 9898)["name"] == "BIZON"


STREAMING = (
    "name: test_streaming\n"
    + DUMMY
    + "  sync_mode: stream\n  max_iterations: 4\n"
    + UPPER
    + "destination:\n  name: file\n  config:\n    unnest: true\n    record_schemas:\n"
    + "      - destination_id: routed\n"
    + CREATURE_SCHEMA
    + "      - destination_id: creatures\n"
    + CREATURE_SCHEMA
    + "engine:\n  runner:\n    type: stream\n"
)


def test_stream_mode_routes_by_destination_id(tmp_path: Path, cli) -> None:
    res = cli("run", _write(tmp_path, STREAMING), "--runner", "stream")
    assert res.returncode == 0, res.stderr
    lines = _lines(tmp_path / "creatures.json")
    assert {line["id"] for line in lines} == {9898, 88787}
    assert len(lines) == 8, "max_iterations: 4 is exactly four pages (bizon fetched five)"
    assert next(line for line in lines if line["id"] == 9898)["name"] == "BIZON"
    assert not (tmp_path / "routed.json").exists(), "bizon's stream runner only ever sees the first page"
    assert _jobs(tmp_path, "test_streaming") == [("succeeded", "")]


# ---------------------------------------------------------------- 5: the failure path


def test_failing_transform_fails_the_job_and_publishes_nothing(tmp_path: Path, cli) -> None:
    config = (
        "name: test_failure\n"
        + DUMMY
        + "  sleep: 1\n"
        + "transforms:\n  - label: transform_data\n    python: |\n      data['name'] = data['fake_variable']\n"
        + "destination:\n  name: file\n  config:\n    destination_id: failed\n"
    )
    res = cli("run", _write(tmp_path, config))
    assert res.returncode == 1
    error = [line for line in res.stderr.splitlines() if not line.startswith("progress:")]
    assert len(error) == 2, res.stderr  # bizon-fast's line, then bizon's own status line
    assert error[1] == "Pipeline finished with status Failure (Producer: killed_by_runner, Consumer: transform_error)"
    assert "Error applying transformation" in error[0] and "fake_variable" in error[0]
    # the transform raises on the data: a rerun as is cannot succeed, so no resume hint
    assert "Run the same command" not in error[0] and "A rerun as is fails the same way" in error[0]
    assert not (tmp_path / "failed.json").exists()
    (status, message) = _jobs(tmp_path, "test_failure")[-1]
    assert status == "failed" and "Error applying transformation" in message


# ---------------------------------------------------------------- 7: stream reset

INCREMENTAL = (
    "name: test_reset\n"
    + DUMMY
    + "  sync_mode: incremental\n"
    + "destination:\n  name: file\n  config:\n    destination_id: out\n"
    + "engine:\n  runner:\n    type: thread\n"  # the in-process path: these tests are about the backend
)
SQLITE_WARNING = (
    "Warning: the sqlite backend is a local file, so this request is only visible to runs using the same file."
)


def test_stream_reset_messages(tmp_path: Path, cli) -> None:
    name = _write(tmp_path, INCREMENTAL)
    res = cli("stream", "reset", name)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        SQLITE_WARNING,
        "Warning: no previous successful run found for dummy - creatures. Check the stream name — a stream that "
        "has never run already fetches everything on its next run.",
        "Reset requested for dummy - creatures. The next run will re-fetch the full stream, replace the "
        "destination table, and resume incremental from there.",
    ]
    again = cli("stream", "reset", name)
    assert again.stdout.splitlines()[-1] == "A reset is already pending for dummy - creatures, nothing to do."
    other = cli("stream", "reset", name, "--stream", "plants", "--cancel")  # --stream: another stream's request
    assert other.stdout.splitlines()[-1] == "No pending reset request for dummy - plants."
    cancelled = cli("stream", "reset", name, "--cancel")
    assert cancelled.stdout.splitlines()[-1] == "Cancelled 1 pending reset request(s) for dummy - creatures."


def test_stream_reset_replaces_then_incremental_appends(tmp_path: Path, cli) -> None:
    name = _write(tmp_path, INCREMENTAL)
    assert cli("run", name, "-q").returncode == 0
    assert cli("run", name, "-q").returncode == 0  # dummy has no get_records_after: a full fetch, appended
    assert len(_lines(tmp_path / "out.json")) == 10
    assert cli("stream", "reset", name).returncode == 0
    assert cli("run", name, "-q").returncode == 0  # consumes the request: the output is replaced
    assert len(_lines(tmp_path / "out.json")) == 5
    assert cli("run", name, "-q", "--reset").returncode == 0  # --reset: the same, from the command line
    assert len(_lines(tmp_path / "out.json")) == 5  # an incremental run would have appended (10)
    assert [status for status, _ in _jobs(tmp_path, "test_reset")] == ["succeeded"] * 4


def test_stream_reset_rejects_non_incremental(tmp_path: Path, cli) -> None:
    res = cli("stream", "reset", _write(tmp_path, "name: fr\n" + DUMMY + LOGGER))
    assert res.returncode == 1
    assert "Only incremental streams can be reset, but sync_mode is 'full_refresh'." in res.stderr


# ---------------------------------------------------------------- 8: listings


def test_source_and_stream_listings(tmp_path: Path, cli) -> None:
    sources = cli("source", "list")
    assert sources.returncode == 0, sources.stderr
    assert "Available sources:" in sources.stdout
    assert "dummy - ['creatures', 'plants']" in sources.stdout
    streams = cli("stream", "list", "dummy")
    assert streams.stdout.splitlines() == [
        "Available streams for dummy:",
        "[Full refresh only] - creatures",
        "[Full refresh only] - plants",
    ]
    missing = cli("stream", "list", "nope")
    assert missing.returncode == 2 and missing.stderr.startswith("Error: Source nope not found; available: ")


# ---------------------------------------------------------------- 10: config validation


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "streams:\n  - name: s\n    destination: {table_id: p.d.t}\n",
            "a streams block needs source.sync_mode: stream",
        ),
        ("", "unnest: true needs record_schemas"),
    ],
)
def test_config_validation(tmp_path: Path, cli, extra: str, message: str) -> None:
    config = "name: bad\n" + DUMMY + "destination:\n  name: file\n  config:\n    destination_id: x\n"
    if not extra:
        config += "    unnest: true\n"
    res = cli("run", _write(tmp_path, config + extra))
    assert res.returncode == 2
    assert message in res.stderr


def test_reset_is_rejected_for_bigquery_streaming(tmp_path: Path, cli) -> None:
    config = (
        "name: bq\n"
        + DUMMY
        + "  sync_mode: incremental\n  reset: true\n"
        + "destination:\n  name: bigquery_streaming\n  config: {project_id: p, dataset_id: d}\n"
    )
    res = cli("run", _write(tmp_path, config))
    assert res.returncode == 2
    assert "cannot reset a stream" in res.stderr


# ---------------------------------------------------------------- custom sources written for bizon


def _flowers(tmp_path: Path, rows: int, mode: str = "incremental") -> str:
    return _write(
        tmp_path,
        f"""
name: flowers
source:
  name: flowers
  stream: flowers
  sync_mode: {mode}
  cursor_field: updated_at
  rows: {rows}
  page_size: 4
destination:
  name: file
  config:
    destination_id: flowers
engine:
  runner:
    type: thread
""",
    )


def test_custom_source_with_bizon_imports(tmp_path: Path, cli) -> None:
    res = cli("run", _flowers(tmp_path, 10, mode="full_refresh"), "--custom-source", CUSTOM_SOURCE)
    assert res.returncode == 0, res.stderr
    data = [json.loads(line["source_data"]) for line in _lines(tmp_path / "flowers.json")]
    assert sorted(d["id"] for d in data) == list(range(10))
    assert "bizon" not in {p.name for p in (REPO / "bizon_fast").iterdir()}, "no top-level bizon package"


def test_incremental_watermark_reads_only_new_records(tmp_path: Path, cli) -> None:
    assert cli("run", _flowers(tmp_path, 10), "-q", "--custom-source", CUSTOM_SOURCE).returncode == 0
    res = cli("run", _flowers(tmp_path, 15), "-q", "--custom-source", CUSTOM_SOURCE)
    assert res.returncode == 0, res.stderr
    ids = [json.loads(line["source_data"])["id"] for line in _lines(tmp_path / "flowers.json")]
    assert ids == list(range(15)), "the second run appends only records past max(updated_at) = 1009"
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
        ((raw,),) = db.execute("SELECT value FROM bizon_fast_watermarks WHERE stream_name='flowers'").fetchall()
    import msgspec

    assert msgspec.msgpack.decode(raw)["max"] == 1014


def test_stream_mode_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    name = _write(
        tmp_path,
        """
name: flowers-stream
source: {name: flowers, stream: flowers, sync_mode: stream, page_size: 3, commit_log: commits.txt}
destination: {name: file, config: {destination_id: streamed}}
""",
    )
    env = {"BIZON_FAST_LOG_DIR": str(tmp_path / "logs")}
    import os

    proc = subprocess.Popen(
        [sys.executable, "-m", "bizon_fast", "run", name, "-q", "--custom-source", CUSTOM_SOURCE],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = tmp_path / "streamed.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 2000):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "rows committed" in stderr
    ids = [json.loads(line["source_data"])["id"] for line in _lines(out)]
    assert ids == list(range(len(ids))), "every page in order, none twice"
    commits = [int(x) for x in (tmp_path / "commits.txt").read_text().split()]
    assert commits and commits[-1] <= len(ids), "the source commits only what is durable"
    assert _jobs(tmp_path, "flowers-stream")[-1][0] == "cancelled"


def test_stream_mode_commits_the_source_once_each_page_is_durable(tmp_path: Path, cli) -> None:
    name = _write(
        tmp_path,
        """
name: flowers-commits
source: {name: flowers, stream: flowers, sync_mode: stream, page_size: 3, commit_log: commits.txt, max_iterations: 20}
destination: {name: file, config: {destination_id: streamed}}
engine: {runner: {type: thread}}
""",
    )
    res = cli("run", name, "-q", "--custom-source", CUSTOM_SOURCE)
    assert res.returncode == 0, res.stderr
    assert len(_lines(tmp_path / "streamed.json")) == 60
    assert (tmp_path / "commits.txt").read_text().split() == [str(3 * i) for i in range(1, 21)]


# ---------------------------------------------------------------- 11: secrets check


def test_secrets_check(tmp_path: Path, cli) -> None:
    config = (
        "name: s\nsource:\n  name: dummy\n  stream: creatures\n  authentication:\n    type: api_key\n"
        "    params:\n      token: env://DUMMY_TOKEN\n"
        'destination:\n  name: logger\n  config:\n    dummy: "x-${env://NOT_SET_ANYWHERE}"\n'
    )
    name = _write(tmp_path, config)
    res = cli("secrets", "check", name, env={"DUMMY_TOKEN": "abcd"})
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["source.authentication.params.token", "env://DUMMY_TOKEN", "✓", "(4", "chars)"]
    assert lines[1].startswith("destination.config.dummy") and "✗ environment variable NOT_SET_ANYWHERE" in lines[1]
    assert "1 reference(s) failed to resolve." in res.stderr
    ok = cli("secrets", "check", _write(tmp_path, "name: p\n" + DUMMY + LOGGER, "plain.yml"))
    assert ok.returncode == 0 and ok.stdout.strip() == "No gsm:// / env:// references found in config."


# ---------------------------------------------------------------- the compatibility layer, in process


def test_bizon_alias_is_installed_only_for_custom_sources() -> None:
    from bizon_fast.compat import real_bizon_available

    if real_bizon_available():
        pytest.skip("a real bizon is installed here: custom sources use it, no alias is installed")
    code = (
        "import sys, importlib.util\n"
        "import bizon_fast.cli, bizon_fast.engine.supervisor\n"
        "assert 'bizon' not in sys.modules and importlib.util.find_spec('bizon') is None\n"
        "from bizon_fast.connectors.registry import source_class\n"
        f"cls = source_class('flowers', 'flowers', {CUSTOM_SOURCE!r})\n"
        "import bizon.source.source as s, bizon_fast.compat.bizon.source.source as c\n"
        "assert s is c and cls.bizon_class.__mro__[1] is c.AbstractSource\n"
        "print(cls.__name__, cls.supports_incremental)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["FlowerSourceAdapter", "True"]


def test_source_record_and_iteration_models() -> None:
    from bizon_fast.compat.bizon.source.models import SourceIteration, SourceRecord

    record = SourceRecord(id=7, data={"a": 1})
    assert record.id == "7" and record.model_dump()["data"] == {"a": 1}
    assert record.timestamp.tzinfo is not None
    iteration = SourceIteration(next_pagination={}, records=[record, {"id": "x", "data": {}}])
    assert [r.id for r in iteration.records] == ["7", "x"]
    with pytest.raises(TypeError):
        SourceRecord(id=1.5, data={})


def test_auth_builder_token_header() -> None:
    from bizon_fast.compat.bizon.source.auth.authenticators.token import TokenAuthParams
    from bizon_fast.compat.bizon.source.auth.builder import AuthBuilder

    auth = AuthBuilder.token(params=TokenAuthParams(token="secret"))
    assert auth.get_auth_header() == {"Authorization": "Bearer secret"}


def test_first_class_with_the_stream_wins(tmp_path: Path) -> None:
    from bizon_fast.connectors.registry import source_class

    path = tmp_path / "two.py"
    path.write_text(
        "from bizon.source.source import AbstractSource\n"
        "class Base(AbstractSource):\n"
        "    @staticmethod\n    def streams(): return ['a']\n"
        "    @staticmethod\n    def get_config_class():\n"
        "        from bizon.source.config import SourceConfig\n        return SourceConfig\n"
        "    def get_authenticator(self): return None\n"
        "    def check_connection(self): return True, None\n"
        "    def get(self, pagination=None): raise NotImplementedError\n"
        "    def get_total_records_count(self): return None\n"
        "class First(Base):\n    pass\n"
        "class Second(Base):\n"
        "    @staticmethod\n    def streams(): return ['a', 'b']\n"
    )
    assert source_class("x", "a", str(path)).bizon_class.__name__ == "Base"
    assert source_class("x", "b", str(path)).bizon_class.__name__ == "Second"
