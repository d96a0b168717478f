"""Bounded, strict YAML and one-line failures, through the CLI as a user meets them.

An alias bomb is rejected before anything expands it (time and memory measured on the real
command), duplicate keys name both lines, transforms and int64 bounds are checked at validation,
and every failed run leaves a private, non-empty log.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bizon_fast.connectors.pipeline import load_config
from tests.conftest import REPO

INT64 = "expected an integer between -9223372036854775808 and 9223372036854775807"

BILLION_LAUGHS = """\
name: bomb
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
source: {name: synthetic, stream: events, rows: 10, seed: *i}
destination: {name: noop}
"""

# a child that runs the CLI and reports its wall time and peak RSS (RUSAGE_CHILDREN of a fresh process
# counts only that run, not every child the test session has had)
MEASURE = """
import json, resource, subprocess, sys, time
t0 = time.monotonic()
res = subprocess.run([sys.executable, "-m", "bizon_fast", "run", sys.argv[1], "--quiet"],
                     capture_output=True, text=True, timeout=120)
wall = time.monotonic() - t0
rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": res.returncode, "stderr": res.stderr, "wall_s": wall, "rss_mb": rss_kb / 1024}))
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _logs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "logs").glob("*.log"))


def test_alias_bomb_is_rejected_at_once_within_200_mb(tmp_path: Path) -> None:
    (tmp_path / "bomb.yml").write_text(BILLION_LAUGHS)
    env = {**os.environ, "BIZON_FAST_LOG_DIR": str(tmp_path / "logs"), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, "bomb.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env
    )
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    assert run["rc"] == 2, run["stderr"]
    assert run["stderr"].strip().splitlines() == [
        "Error: bomb.yml:7: f: YAML aliases expand to more than 100000 nodes"
    ], run["stderr"]
    # the CLI's start-up is most of it; unbounded, this grew past 3 GB in 30 s
    assert run["wall_s"] < 5, run
    assert run["rss_mb"] < 200, run


STRICT_INPUTS = {
    "duplicate key": (
        "name: x\nsource:\n  rows: 10\n  name: synthetic\n  stream: events\n\n  rows: 20\ndestination: {name: noop}\n",
        "p.yml:7: source.rows: duplicate key 'rows' (first at line 3)",
    ),
    "duplicate key in a flow mapping": (
        "name: x\nsource: {name: synthetic, stream: events}\ndestination: {name: noop, name: file}\n",
        "p.yml:3: destination.name: duplicate key 'name' (first at line 3)",
    ),
    "duplicate key spelled as another boolean": (
        "name: x\nsource: {name: synthetic, stream: events, on: 1, true: 2}\ndestination: {name: noop}\n",
        "p.yml:2: source.true: duplicate key 'true' (first at line 2)",
    ),
    "two merge keys": (
        "name: x\nsource:\n  <<: {name: synthetic}\n  <<: {stream: events}\ndestination: {name: noop}\n",
        "p.yml:4: source: duplicate key '<<' (first at line 3); merge several blocks with <<: [*a, *b]",
    ),
    "recursive alias": (
        "name: x\nsource: &s {name: synthetic, stream: events, seed: *s}\ndestination: {name: noop}\n",
        "p.yml:2: source.seed: recursive YAML alias",
    ),
    "nesting too deep": (
        "name: x\nsource: {name: synthetic, stream: events, seed: " + "[" * 200 + "]" * 200 + "}\n",
        "p.yml:2: YAML nests deeper than 100 levels",
    ),
    "aliases nested in aliases": (
        "name: x\na1: &a1 " + "[" * 60 + "1" + "]" * 60 + "\na2: " + "[" * 60 + "*a1" + "]" * 60 + "\n",
        "p.yml:3: a2" + "[0]" * 20 + ": YAML aliases nest deeper than 100 levels",
    ),
    "long string aliased many times": (
        'name: x\ns: &s "' + "x" * 1_000_000 + '"\nl: [' + ", ".join(["*s"] * 20) + "]\n",
        "p.yml:3: l: YAML aliases expand to more than 10000000 characters of text",
    ),
    "integer beyond int64 in a source key": (
        "name: x\nsource: {name: synthetic, stream: events, rows: 99999999999999999999999}\n"
        "destination: {name: noop}\n",
        f"p.yml:2: source.rows: {INT64}, got 99999999999999999999999",
    ),
    "integer beyond int64 in an engine key": (
        "name: x\nsource: {name: synthetic, stream: events}\ndestination: {name: noop}\n"
        "engine:\n  runner:\n    config:\n      max_restarts: 9223372036854775808\n",
        f"p.yml:7: engine.runner.config.max_restarts: {INT64}, got 9223372036854775808",
    ),
    "python transform syntax error": (
        "name: x\nsource: {name: synthetic, stream: events}\ndestination: {name: noop}\ntransforms:\n"
        "  - label: fine\n    python: |\n      data['x'] = 1\n"
        "  - label: broken\n    python: |\n      x = 1\n      if x\n          pass\n",
        "p.yml:11: transforms[1].python: syntax error at line 2 of the code: expected ':'",
    ),
    "one-line python transform syntax error": (
        "name: x\nsource: {name: synthetic, stream: events}\ndestination: {name: noop}\n"
        "transforms: [{label: t, python: 'data = ('}]\n",
        "p.yml:4: transforms[0].python: syntax error at line 1 of the code: '(' was never closed",
    ),
    "sql transform that does not parse": (
        "name: x\nsource: {name: synthetic, stream: events}\ndestination: {name: noop}\n"
        "transforms:\n  - label: q\n    sql: SELECT * FROM batch WHERE\n",
        "p.yml:6: transforms[0].sql: SQL syntax error: Expected: an expression, found: EOF",
    ),
    "polars transform syntax error": (
        "name: x\nsource: {name: synthetic, stream: events}\ndestination: {name: noop}\n"
        "transforms:\n  - label: p\n    polars: \"[pl.col('a')\"\n",
        "p.yml:6: transforms[0].polars: syntax error at line 1 of the code: '[' was never closed",
    ),
}


@pytest.mark.parametrize("case", sorted(STRICT_INPUTS))
def test_strict_input_is_one_line_and_exit_2(tmp_path: Path, cli, case: str) -> None:
    text, expected = STRICT_INPUTS[case]
    (tmp_path / "p.yml").write_text(text)
    res = cli("run", "p.yml", "--quiet", timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith(f"Error: {expected}"), res.stderr


def test_integer_from_a_reference_is_checked_without_printing_it(tmp_path: Path, cli) -> None:
    (tmp_path / "p.yml").write_text(
        "name: x\nsource: {name: synthetic, stream: events, rows: 'env://BF_TEST_ROWS'}\ndestination: {name: noop}\n"
    )
    res = cli("run", "p.yml", "--quiet", env={"BF_TEST_ROWS": "123456789012345678901234567"})
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == f"Error: p.yml:2: source.rows: {INT64}, got the value of 'env://BF_TEST_ROWS'"


def test_merge_key_overrides_are_not_duplicates(tmp_path: Path, cli) -> None:
    (tmp_path / "p.yml").write_text(
        """\
name: merged
source:
  <<: &base {name: synthetic, stream: events, rows: 10}
  rows: 20
destination:
  <<: [{name: file}, {config: {}}]
  name: noop
"""
    )
    assert load_config(tmp_path / "p.yml").source.rows == 20, "the explicit key wins over the merged one"
    res = cli("run", "p.yml", "--quiet", timeout=120)
    assert res.returncode == 0, res.stderr


def test_log_folder_log_file_and_checkpoint_are_private(tmp_path: Path, cli) -> None:
    (tmp_path / "p.yml").write_text(
        "name: private\nsource: {name: synthetic, stream: events, rows: 1000}\ndestination: {name: noop}\n"
    )
    res = cli("run", "p.yml", "--quiet", timeout=120)
    assert res.returncode == 0, res.stderr
    assert _mode(tmp_path / "logs") == 0o700
    [log] = _logs(tmp_path)
    assert _mode(log) == 0o600
    checkpoint = tmp_path / "bizon.sqlite3"
    assert _mode(checkpoint) == 0o600
    for extra in (tmp_path / "bizon.sqlite3-wal", tmp_path / "bizon.sqlite3-shm"):
        assert not extra.exists() or _mode(extra) == 0o600


def test_sqlite_wal_and_shm_files_inherit_the_private_mode(tmp_path: Path) -> None:
    from bizon_fast.checkpoint.sqlite import SqliteBackend

    backend = SqliteBackend(str(tmp_path / "ck" / "db"))
    backend.open()
    try:
        assert backend.conn is not None
        backend.conn.execute("CREATE TABLE t (x)")
        backend.conn.execute("INSERT INTO t VALUES (1)")
        files = sorted(p.name for p in (tmp_path / "ck").iterdir() if p.is_file())
        assert {"db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"} <= set(files), files
        assert {name: _mode(tmp_path / "ck" / name) for name in files} == dict.fromkeys(files, 0o600)
        locks = tmp_path / "ck" / "db.sqlite3.locks"  # the run locks' folder: private too
        assert _mode(locks) == 0o700 and all(_mode(p) == 0o600 for p in locks.iterdir())
    finally:
        backend.close()


def test_config_error_leaves_a_log_that_says_why(tmp_path: Path, cli) -> None:
    (tmp_path / "p.yml").write_text("name: x\nsource: {name: synthetic, stream: events, rows: many}\n")
    res = cli("run", "p.yml", "--quiet")
    assert res.returncode == 2, res.stderr
    [log] = _logs(tmp_path)
    assert log.name.startswith("p-"), "named after the config file: the pipeline's name was never read"
    assert _mode(log) == 0o600
    assert "source.rows" in log.read_text()


def test_start_up_failure_leaves_a_non_empty_log(tmp_path: Path, cli) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "p.yml").write_text(
        "name: startup\nsource: {name: synthetic, stream: events, rows: 1000}\ndestination: {name: noop}\n"
        "engine: {backend: {type: sqlite, config: {database: a_file/db, schema: x}}}\n"
    )
    res = cli("run", "p.yml", "--quiet")
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    [log] = _logs(tmp_path)
    text = log.read_text()
    assert "engine.backend" in text and "cannot create sqlite database" in text, text


BOOM_DESTINATION = """\
from bizon_fast.connectors.destinations.noop.destination import NoopDestination


class BoomDestination(NoopDestination):
    def check_connection(self):
        raise RuntimeError("kaboom at start-up")
"""


def test_internal_error_is_one_line_and_the_traceback_is_in_the_log(tmp_path: Path, cli) -> None:
    (tmp_path / "boomdest.py").write_text(BOOM_DESTINATION)
    (tmp_path / "p.yml").write_text(
        "name: boom\nsource: {name: synthetic, stream: events, rows: 1000}\ndestination: {name: boom}\n"
    )
    env = {"BIZON_FAST_DESTINATIONS": "boom=boomdest:BoomDestination", "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    res = cli("run", "p.yml", "--quiet", env=env, timeout=120)
    assert res.returncode == 1, res.stderr
    [line] = res.stderr.strip().splitlines()
    [log] = _logs(tmp_path)
    assert line == f"Internal error: RuntimeError: kaboom at start-up (traceback in {log})", line
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "kaboom at start-up" in text, text


def test_alias_bomb_is_measured_in_linear_time() -> None:
    """The reader itself, without the CLI: a 10^18-node document is measured in milliseconds."""
    from bizon_fast.config.yamlstrict import read_yaml
    from bizon_fast.errors import ConfigError

    levels = ["a0: &a0 [" + ", ".join(['"lol"'] * 10) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 18)]
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="YAML aliases expand to more than 100000 nodes"):
        read_yaml("\n".join(levels) + "\n", "bomb.yml")
    assert time.perf_counter() - started < 1.0
