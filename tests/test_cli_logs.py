"""What a run leaves to read afterwards, through the CLI: the summary's ``output`` and ``log`` rows, a log
that says why a failed run failed, and ``--log-format json`` (the supervisor's and the workers' lines).

Every run here is a real ``bizon-fast run`` in its own process (``tests/conftest.py`` ``cli``), so the
checks cover what the user sees: the table on stdout, one line on stderr, the file in the log folder.
"""

from __future__ import annotations

import json
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import REPO

JSON_KEYS = {"ts", "level", "process", "logger", "message", "pipeline"}
#: the summary table is printed whole on a wide console: paths are compared, not their folded pieces
WIDE = {"COLUMNS": "400"}

DUMMY = "source: {name: dummy, stream: creatures, authentication: {type: api_key, params: {token: x}}}\n"
RAISING = "transforms:\n  - {label: boom, python: \"raise ValueError('transform exploded')\"}\n"


def _write(tmp_path: Path, text: str) -> str:
    (tmp_path / "p.yml").write_text(text)
    return "p.yml"


def _log(tmp_path: Path) -> Path:
    [log] = sorted((tmp_path / "logs").iterdir())
    return log


def _row(stdout: str, name: str) -> str:
    """The value of the summary row ``name`` (the table's second column)."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃|").split("│")]
        if len(cells) == 2 and cells[0] == name:
            return cells[1]
    raise AssertionError(f"no row {name!r} in the summary:\n{stdout}")


def _json_lines(text: str) -> list[dict]:
    docs = [json.loads(line) for line in text.splitlines()]
    for doc in docs:
        assert doc.keys() >= JSON_KEYS, doc
        assert datetime.fromisoformat(doc["ts"]).utcoffset() == UTC.utcoffset(None), doc["ts"]
        assert doc["pipeline"] == "logs", doc
    return docs


def test_summary_names_the_file_output_and_the_log(tmp_path: Path, cli) -> None:
    config = _write(
        tmp_path,
        "name: logs\nsource: {name: synthetic, stream: events, rows: 500}\n"
        "destination: {name: file, config: {destination_id: out/events, format: parquet}}\n",
    )
    res = cli("run", config, env=WIDE, timeout=120)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out" / "events"
    assert _row(res.stdout, "output") == f"{out}/ (Parquet dataset)"
    assert sorted(out.glob("*.parquet")), "the summary names where the data is"
    assert _row(res.stdout, "log") == str(_log(tmp_path))


def test_summary_names_the_postgres_table_and_never_the_password(tmp_path: Path, cli, pg_schema: str) -> None:
    config = _write(
        tmp_path,
        f"name: logs\nsource: {{name: synthetic, stream: events, rows: 500}}\n"
        f"destination: {{name: postgres, config: {{host: 127.0.0.1, port: 5432, database: test, username: postgres,"
        f" password: Pw-n0t-for-l0gs, schema: {pg_schema}, destination_id: events}}}}\n",
    )
    res = cli("run", config, env=WIDE, timeout=120)
    assert res.returncode == 0, res.stderr
    assert _row(res.stdout, "output") == f"127.0.0.1:5432/test {pg_schema}.events"
    log = _log(tmp_path)
    assert _row(res.stdout, "log") == str(log)
    for where, text in (("stdout", res.stdout), ("stderr", res.stderr), ("log", log.read_text())):
        assert "Pw-n0t-for-l0gs" not in text, f"the password is in the {where}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_failed_at_start_up(tmp_path: Path, res, *needles: str) -> None:  # noqa: ANN001 - CompletedProcess
    assert res.returncode == 2, res.stderr
    [line] = res.stderr.strip().splitlines()
    text = _log(tmp_path).read_text()
    assert "ERROR supervisor bizon_fast.cli: run failed: UserError:" in text, text
    for needle in needles:
        assert needle in line and needle in text, (needle, line, text)


def test_a_source_on_a_closed_port_leaves_a_log_that_says_why(tmp_path: Path, cli) -> None:
    port = _closed_port()
    config = _write(
        tmp_path,
        f"name: logs\nsource: {{name: postgres, stream: public.orders, dsn: 'postgresql://postgres@127.0.0.1:{port}/test'}}\n"
        "destination: {name: noop}\n",
    )
    res = cli("run", config, "--quiet", timeout=120)
    _assert_failed_at_start_up(tmp_path, res, f"cannot connect to PostgreSQL at 127.0.0.1:{port}/test")


@pytest.mark.parametrize("problem", ["missing table", "unknown user"])
def test_a_start_up_failure_on_postgres_leaves_a_log_that_says_why(
    tmp_path: Path, cli, pg_schema: str, problem: str
) -> None:
    user, table, needle = (
        ("postgres", f"{pg_schema}.no_such_table", f"table '{pg_schema}.no_such_table' does not exist")
        if problem == "missing table"
        else ("no_such_user_bf", f"{pg_schema}.t", 'role "no_such_user_bf" does not exist')
    )
    config = _write(
        tmp_path,
        f"name: logs\nsource: {{name: postgres, stream: '{table}', dsn: 'postgresql://{user}@127.0.0.1:5432/test'}}\n"
        "destination: {name: noop}\n",
    )
    res = cli("run", config, "--quiet", timeout=120)
    _assert_failed_at_start_up(tmp_path, res, needle)


@pytest.mark.parametrize("runner", ["process", "thread"])
def test_a_worker_failure_logs_its_traceback_and_the_console_stays_one_line(tmp_path: Path, cli, runner: str) -> None:
    config = _write(tmp_path, f"name: logs\n{DUMMY}{RAISING}destination: {{name: noop}}\n")
    res = cli("run", config, "--quiet", "--runner", runner, timeout=120)
    assert res.returncode == 1, res.stderr
    [line, status] = res.stderr.strip().splitlines()  # bizon-fast's one line, then bizon's status line (cli/result.py)
    log = _log(tmp_path)
    assert line.startswith("Error: job ") and "transform exploded" in line and str(log) in line, line
    assert status == "Pipeline finished with status Failure (Producer: killed_by_runner, Consumer: transform_error)"
    text = log.read_text()
    # the worker's own report, its traceback down to the transform's line, then the supervisor's and the CLI's
    worker = text.index(" ERROR consumer-")
    assert "Traceback (most recent call last):" in text[worker:], text
    assert 'File "<transform boom>", line 1' in text[worker:], text
    assert "ERROR supervisor bizon_fast.supervisor: consumer-" in text, text
    reports = re.findall(r" ERROR (consumer-\d+) bizon_fast\.worker: \1 failed", text)
    assert text.count('File "<transform boom>"') == len(reports), "each failed worker's traceback once, not repeated"
    assert "ERROR supervisor bizon_fast.cli: run failed: JobFailed:" in text, text


def test_json_quiet_puts_the_log_lines_on_stderr_and_nothing_else(tmp_path: Path, cli) -> None:
    config = _write(tmp_path, f"name: logs\n{DUMMY}destination: {{name: logger}}\n")
    res = cli("run", config, "--log-format", "json", "--quiet", timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr == _log(tmp_path).read_text()
    docs = _json_lines(res.stderr)
    assert {d["process"] for d in docs} >= {"supervisor"}, docs
    records = [d for d in docs if d["logger"] == "bizon_fast.destination.logger" and d["process"] != "supervisor"]
    assert len(records) == 5, records  # a line per dummy record, logged by a consumer process
    assert all(d["level"] == "INFO" and d["process"].startswith("consumer-") for d in records), records
    assert res.stdout.strip() == "Pipeline finished successfully."


def test_json_quiet_failure_is_json_then_the_one_line_error(tmp_path: Path, cli) -> None:
    config = _write(tmp_path, f"name: logs\n{DUMMY}{RAISING}destination: {{name: noop}}\n")
    res = cli("run", config, "--log-format", "json", "--quiet", timeout=120)
    assert res.returncode == 1, res.stderr
    *lines, last = res.stderr.strip().splitlines()
    assert last.startswith("Error: job ") and "transform exploded" in last, last
    docs = _json_lines("\n".join(lines))
    assert _json_lines(_log(tmp_path).read_text()) == docs
    [worker] = [d for d in docs if d["process"] == "consumer-0" and d["level"] == "ERROR"]
    assert worker["exc_info"].startswith("Traceback (most recent call last):"), worker
    assert "ValueError: transform exploded" in worker["exc_info"] and "Traceback" not in worker["message"]
    assert docs[-1]["logger"] == "bizon_fast.cli" and docs[-1]["message"].startswith("run failed: JobFailed:")


def test_json_internal_error_logs_its_traceback_as_exc_info(tmp_path: Path, cli) -> None:
    (tmp_path / "boomdest.py").write_text(
        "from bizon_fast.connectors.destinations.noop.destination import NoopDestination\n\n\n"
        "class BoomDestination(NoopDestination):\n"
        "    def check_connection(self):\n"
        "        raise RuntimeError('kaboom at start-up')\n"
    )
    config = _write(
        tmp_path, "name: logs\nsource: {name: synthetic, stream: events, rows: 100}\ndestination: {name: boom}\n"
    )
    env = {"BIZON_FAST_DESTINATIONS": "boom=boomdest:BoomDestination", "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    res = cli("run", config, "--log-format", "json", timeout=120, env=env)
    assert res.returncode == 1, res.stderr
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("Internal error: RuntimeError: kaboom at start-up"), line
    [*_, failure] = _json_lines(_log(tmp_path).read_text())
    assert failure["message"] == "run failed: RuntimeError: kaboom at start-up", failure
    assert "Traceback (most recent call last):" in failure["exc_info"] and "check_connection" in failure["exc_info"]


def test_a_finished_run_exits_at_once_with_everything_flushed(tmp_path: Path, cli) -> None:
    """``main`` skips the interpreter's teardown (``exit_now``): the log, the result file and the summary on a
    pipe must all be complete when the process is gone, and the status must be the command's."""
    config = _write(
        tmp_path,
        "name: logs\nsource: {name: synthetic, stream: events, rows: 500}\n"
        "destination: {name: file, config: {destination_id: out/events, format: json}}\n",
    )
    res = cli("run", config, "--result-json", "result.json", env=WIDE, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("Pipeline finished successfully.")
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "success"
    assert "published" in _log(tmp_path).read_text().splitlines()[-1]
    assert len((tmp_path / "out" / "events.json").read_text().splitlines()) == 500
    missing = cli("run", "missing.yml", timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_exit_now_waits_for_threads_as_a_normal_exit_does(tmp_path: Path) -> None:
    """An executor left open must not hang the fast exit; a non-daemon thread still running is waited for."""
    import subprocess
    import sys

    code = (
        "import concurrent.futures, threading, time\n"
        "from bizon_fast.cli.app import exit_now\n"
        "ex = concurrent.futures.ThreadPoolExecutor(2); ex.submit(lambda: 1).result()\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done', flush=True))).start()\n"
        "print('exiting', flush=True)\n"
        "exit_now(3)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 3, res.stderr
    assert res.stdout.splitlines() == ["exiting", "thread done"]
