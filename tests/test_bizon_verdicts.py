"""``config validate``: every example YAML shipped in the bizon 0.6.4 wheel gets bizon's own verdict.

bizon users check their configs in CI with ``bizon config validate``; after switching, ``bizon-fast config
validate`` must pass and fail the same files, with the same output shape and exit codes. Both tools are
run for real: bizon 0.6.4 in its own venv (``native_bench.venvs``), bizon-fast in the test venv (without
the ``bizon`` extra: bizon's own sources are then one line naming the install that brings them) and in the
layered venv with the extra (``tests/bizon_env.py``), where bizon's sources validate with their own classes.
The measured table is written to ``out/bizon-verdicts.md`` and must match the one in ``docs/bizon-compat.md``.

Each side validates all the examples in one process through its CLI app (click's and typer's test runners),
which keeps the walk to a few seconds; the output shape is also checked through the real ``bizon-fast``
binary.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from native_bench import venvs
from tests.bizon_env import BizonEnv, bizon_env  # noqa: F401 - the fixture
from tests.conftest import REPO, run_cli

DOC = REPO / "docs" / "bizon-compat.md"
TABLE_OUT = REPO / "out" / "bizon-verdicts.md"
DOC_SECTION = "## `config validate` on bizon's own examples"

#: bizon valid, bizon-fast invalid on purpose: example -> the text bizon-fast's error must contain (the rule
#: that protects data, documented in docs/bizon-compat.md). Empty: no example needs one.
STRICTER: dict[str, str] = {}

#: one process validating every file given on the command line with a CLI app, printing JSON results
RUNNER = textwrap.dedent(
    """
    import json, sys
    from click.testing import CliRunner
    which, files = sys.argv[1], sys.argv[2:]
    if which == "bizon":
        from bizon.cli.main import cli as app
    else:
        from typer.main import get_command
        from bizon_fast.cli.app import app as typer_app
        app = get_command(typer_app)
    runner = CliRunner()
    out = []
    for path in files:
        res = runner.invoke(app, ["config", "validate", path], catch_exceptions=False)
        out.append({"file": path, "code": res.exit_code, "stdout": res.stdout, "stderr": res.stderr})
    print("@@RESULTS@@" + json.dumps(out))
    """
)


def _run_all(
    python: Path | str, which: str, files: list[Path], cwd: Path, pythonpath: Path | None = None
) -> dict[str, dict]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["BIZON_FAST_LOG_DIR"] = str(cwd / "logs")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run(
        [str(python), "-c", RUNNER, which, *map(str, files)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    marker = proc.stdout.rfind("@@RESULTS@@")
    assert proc.returncode == 0 and marker >= 0, f"{which} validation crashed:\n{proc.stdout}\n{proc.stderr}"
    return {r["file"]: r for r in json.loads(proc.stdout[marker + len("@@RESULTS@@") :])}


@pytest.fixture(scope="module")
def bizon_venv() -> venvs.Venv:
    venv = venvs.ensure("bizon", ["bizon==0.6.4"], "import bizon.cli.main")
    if venv.python is None:
        pytest.skip(f"bizon 0.6.4 is not installable here: {venv.problem}")
    return venv


@pytest.fixture(scope="module")
def examples(bizon_venv: venvs.Venv) -> tuple[Path, list[Path]]:
    """(bizon's package folder, every example YAML inside the installed wheel)."""
    # bizon is a namespace package (no __init__.py): its folder is the one above bizon.cli
    code = "import bizon.cli.main as m, pathlib; print(pathlib.Path(m.__file__).resolve().parents[1])"
    probe = subprocess.run([str(bizon_venv.python), "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    root = Path(probe.stdout.strip())
    files = sorted({*root.rglob("*.yml"), *root.rglob("*.yaml")})
    assert len(files) >= 27, f"expected bizon 0.6.4's 27 example YAMLs under {root}, found {len(files)}"
    return root, files


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verdicts")  # no .env here: the examples are judged as written


@pytest.fixture(scope="module")
def bizon_results(bizon_venv: venvs.Venv, examples: tuple[Path, list[Path]], workdir: Path) -> dict[str, dict]:
    """bizon 0.6.4 as ``pip install bizon==0.6.4`` gives it: some of its sources lack an optional module there."""
    return _run_all(bizon_venv.python, "bizon", examples[1], workdir)


@pytest.fixture(scope="module")
def plain_results(examples: tuple[Path, list[Path]], workdir: Path) -> dict[str, dict]:
    """bizon-fast in the test venv: no real bizon, so bizon's own sources need the extra."""
    return _run_all(sys.executable, "bizon-fast", examples[1], workdir)


MISSING_MODULE = re.compile(r"is invalid:\nNo module named '([\w.]+)'\n?$")


def missing_module(result: dict) -> str | None:
    """The module bizon could not import to judge a file (its source's optional dependency), or None."""
    match = MISSING_MODULE.search(result["stderr"]) if result["code"] == 1 else None
    return match.group(1).split(".")[0] if match else None


def rejudged(bizon: dict, env: BizonEnv, workdir: Path) -> dict[str, tuple[dict, str]]:
    """bizon's verdict on the files it could not judge for a missing module: bizon (the layered venv's, which
    has the extra's ``gspread``) with the missing modules installed beside it. path -> (result, modules)."""
    todo = {path: [name] for path, result in bizon.items() if (name := missing_module(result))}
    target = workdir / "bizon-source-modules"
    done: dict[str, tuple[dict, str]] = {}
    for _ in range(4):  # a module installed can reveal the next one missing
        if not todo:
            break
        wanted = sorted({names[-1] for names in todo.values()})
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *wanted],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if install.returncode != 0:
            pytest.skip(f"cannot install {wanted} for bizon to judge {sorted(todo)}: {install.stderr[-300:]}")
        results = _run_all(env.python, "bizon", [Path(p) for p in todo], workdir, pythonpath=target)
        for path, result in results.items():
            name = missing_module(result)
            if name is None:
                done[path] = (result, ", ".join(todo.pop(path)))
            else:
                todo[path].append(name)
    assert not todo, f"bizon still misses modules for {todo}"
    return done


def verdict(result: dict) -> str:
    """``valid``, ``invalid``, or (bizon-fast without the extra) ``needs [bizon]``: bizon's source is not installed;
    (bizon) ``needs X``: the source's optional module X is not installed, so bizon could not judge the file."""
    if result["code"] == 0:
        return "valid"
    assert result["code"] == 1, f"an invalid config exits 1, got {result['code']}: {result['stderr']}"
    if "bizon-fast[bizon]" in result["stderr"]:
        return "needs [bizon]"
    if (name := missing_module(result)) is not None:
        return f"needs {name}"
    return "invalid"


def why(result: dict, path: str) -> str:
    """The first problem bizon-fast names, without the file's own path (the table is read on any machine)."""
    if result["code"] == 0:
        return ""
    lines = [line for line in result["stderr"].splitlines() if line and not line.startswith("Error: ")]
    first = lines[0] if lines else result["stderr"].strip()
    first = re.sub(rf"^{re.escape(path)}:(\d+): ", r"line \1: ", first)
    return first.replace(f"{path}: ", "").replace(path, "FILE").replace("|", "/")[:160]


Row = tuple[str, str, str, str, str]


def table(root: Path, bizon: dict, plain: dict, extra: dict | None, again: dict | None = None) -> list[Row]:
    """One row per example: bizon's verdict (re-judged with the modules it missed, when ``again``), bizon-fast's
    with the extra (when measured) and alone, and bizon-fast's first error."""
    rows = []
    for path in sorted(bizon):
        ours = verdict(bizon[path])
        if again and path in again:
            result, modules = again[path]
            ours = f"{verdict(result)} (with {modules})"
        with_extra = verdict(extra[path]) if extra is not None else "not measured"
        reason = why(extra[path] if extra is not None else plain[path], path)
        rows.append((row_name(root, path), ours, with_extra, verdict(plain[path]), reason))
    return rows


def write_table(rows: list[Row]) -> str:
    lines = [
        "| example (in the bizon 0.6.4 wheel) | bizon 0.6.4 | bizon-fast + `[bizon]` | bizon-fast alone "
        "| bizon-fast's first error |",
        "|---|---|---|---|---|",
        *(f"| `{ex}` | {b} | {e} | {p} | {r} |" for ex, b, e, p, r in rows),
    ]
    text = "\n".join(lines) + "\n"
    TABLE_OUT.parent.mkdir(exist_ok=True)
    TABLE_OUT.write_text(text)
    return text


def doc_rows() -> dict[str, tuple[str, str, str]]:
    """The verdict columns of the table in docs/bizon-compat.md, by example."""
    text = DOC.read_text()
    assert DOC_SECTION in text, f"docs/bizon-compat.md lacks the section {DOC_SECTION!r}"
    section = text.split(DOC_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for match in re.finditer(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", section, re.MULTILINE):
        rows[match.group(1)] = (match.group(2).strip(), match.group(3).strip(), match.group(4).strip())
    return rows


def check_same(bizon_verdict: str, fast_verdict: str, example: str, result: dict) -> str | None:
    """What is wrong with bizon-fast's verdict on ``example``, or None."""
    if fast_verdict == bizon_verdict.split(" (with ")[0]:
        return None
    if bizon_verdict.startswith("valid") and example in STRICTER and STRICTER[example] in result["stderr"]:
        return None
    return f"{example}: bizon says {bizon_verdict}, bizon-fast says {fast_verdict}: {result['stderr'][:400]}"


def row_name(root: Path, path: str) -> str:
    return str(Path(path).relative_to(root))


def test_examples_without_the_extra(
    examples: tuple[Path, list[Path]], bizon_results: dict, plain_results: dict
) -> None:
    """Without the extra, bizon-fast's own sources get bizon's verdict; bizon's sources ask for the extra
    (or are invalid on their own already: a placeholder source name, a key bizon rejects). Files bizon could
    not judge (a module its source lacks) are compared by the next test, where bizon gets the module."""
    root, _ = examples
    rows = table(root, bizon_results, plain_results, None)
    write_table(rows)
    problems = []
    for ex, bizon_verdict, _, fast, _ in rows:
        if fast == "needs [bizon]" or bizon_verdict.startswith("needs "):
            continue
        problem = check_same(bizon_verdict, fast, ex, plain_results[str(root / ex)])
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)
    assert sum(fast == "valid" for *_, fast, _ in rows) >= 4, "too few examples validated to prove anything"
    documented = {ex: (b, p) for ex, (b, _, p) in doc_rows().items()}
    measured = {ex: (b, p) for ex, b, _, p, _ in rows}
    for ex, (b, p) in measured.items():  # bizon's column as documented comes from the next test for those
        if b.startswith("needs ") and ex in documented:
            measured[ex] = (documented[ex][0], p)
    assert documented == measured, f"docs/bizon-compat.md's table differs from the measured one ({TABLE_OUT})"


def test_examples_with_the_extra(
    examples: tuple[Path, list[Path]],
    bizon_results: dict,
    plain_results: dict,
    bizon_env: BizonEnv,  # noqa: F811 - the fixture
    workdir: Path,
) -> None:
    """With ``bizon-fast[bizon]`` installed, every example gets bizon's verdict (except a documented stricter rule)."""
    root, files = examples
    again = rejudged(bizon_results, bizon_env, workdir)
    extra = _run_all(bizon_env.python, "bizon-fast", files, workdir)
    rows = table(root, bizon_results, plain_results, extra, again)
    write_table(rows)
    problems = [
        problem
        for ex, bizon_verdict, fast, _, _ in rows
        if (problem := check_same(bizon_verdict, fast, ex, extra[str(root / ex)]))
    ]
    assert not problems, "\n".join(problems)
    assert sum(fast == "valid" for _, _, fast, _, _ in rows) >= 10, "too few examples validated to prove anything"
    assert doc_rows() == {ex: (b, e, p) for ex, b, e, p, _ in rows}, (
        f"docs/bizon-compat.md's table differs from the measured one ({TABLE_OUT})"
    )


# ---------------------------------------------------------------- the output shape, against bizon's own

DUMMY = """\
name: shape
source:
  name: dummy
  stream: creatures
  authentication:
    type: api_key
    params:
      token: dummy_key
destination:
  name: logger
  config:
    dummy: dummy
"""

CASES = {
    "valid.yml": DUMMY,
    "wrong_stream.yml": DUMMY.replace("stream: creatures", "stream: unicorns"),
    "reset.yml": DUMMY.replace("  stream: creatures\n", "  stream: creatures\n  reset: true\n"),
    "unresolved.yml": DUMMY + "engine:\n  backend:\n    type: sqlite_in_memory\n    config:\n"
    "      database: x\n      schema: x\n      syncCursorInDBEvery: env://BF_UNSET_SYNC_EVERY\n",
}
#: bizon 0.6.4's own bigquery example's destination block (a dummy source: no extra needed)
CASES["bigquery.yml"] = DUMMY.split("destination:")[0] + textwrap.dedent(
    """\
    destination:
      name: bigquery
      config:
        dataset_id: bizon_test
        project_id: my-gcp-project-id
        gcs_buffer_bucket: bizon-buffer
        time_partitioning:
          type: DAY
          field: _bizon_loaded_at
        enforce_partitioning: true
    """
)
#: (case, extra arguments): what each tool is asked
ASKS = [
    ("valid.yml", []),
    ("bigquery.yml", []),
    ("wrong_stream.yml", []),
    ("missing.yml", []),
    ("reset.yml", []),
    ("reset.yml", ["--strict"]),
    ("unresolved.yml", []),
    ("unresolved.yml", ["--skip-references"]),
]

SHAPE_RUNNER = textwrap.dedent(
    """
    import json, sys
    from click.testing import CliRunner
    from bizon.cli.main import cli
    out = []
    for args in json.loads(sys.argv[1]):
        res = CliRunner().invoke(cli, ["config", "validate", *args], catch_exceptions=False)
        out.append({"code": res.exit_code, "stdout": res.stdout, "stderr": res.stderr})
    print("@@RESULTS@@" + json.dumps(out))
    """
)


def error_line(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("Error: ")), "")


def test_output_and_exit_codes_match_bizon(bizon_venv: venvs.Venv, tmp_path: Path) -> None:
    """Same exit code for every ask, the same success line, the same first error line, the same
    not-type-checked count and --strict line: a CI job written for bizon reads bizon-fast's output unchanged."""
    for name, text in CASES.items():
        (tmp_path / name).write_text(text)
    asks = [[name, *extra] for name, extra in ASKS]
    proc = subprocess.run(
        [str(bizon_venv.python), "-c", SHAPE_RUNNER, json.dumps(asks)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "@@RESULTS@@" in proc.stdout, proc.stderr
    theirs = json.loads(proc.stdout.split("@@RESULTS@@", 1)[1])
    for ask, bizon in zip(asks, theirs, strict=True):
        ours = run_cli("config", "validate", *ask, cwd=tmp_path, timeout=60)
        label = " ".join(ask)
        assert ours.returncode == bizon["code"], (
            f"{label}: exit {ours.returncode}, bizon {bizon['code']}\n{ours.stderr}"
        )
        if bizon["code"] == 0:  # stdout line for line: the count of unchecked fields, then the verdict
            assert ours.stdout.splitlines() == bizon["stdout"].splitlines(), label
        elif bizon["code"] == 1:  # the error line says the same; bizon-fast's detail lines are its own
            assert error_line(ours.stderr) == error_line(bizon["stderr"]), f"{label}\n{ours.stderr}"
        else:  # a usage error: bizon-fast's one line says what click's last line says
            assert f"'{ask[0]}' does not exist" in ours.stderr and f"'{ask[0]}' does not exist" in bizon["stderr"]
        assert ours.stderr.count("Warning: ") == bizon["stderr"].count("Warning: "), f"{label}\n{ours.stderr}"
    valid = run_cli("config", "validate", "valid.yml", cwd=tmp_path, timeout=60)
    assert valid.stdout == "valid.yml is valid: dummy.creatures (full_refresh) -> logger\n"
    wrong = run_cli("config", "validate", "wrong_stream.yml", cwd=tmp_path, timeout=60)
    assert wrong.stderr.startswith("Error: wrong_stream.yml is invalid:\nwrong_stream.yml:4: source.stream: ")
    assert "unicorns" in wrong.stderr and "creatures" in wrong.stderr


# ---------------------------------------------------------------- what bizon 0.6.4 accepts, run for real


def test_file_destination_without_destination_id_runs(examples: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """bizon's own ``file_incremental.example.yml`` has no ``destination_id``: it validates and runs, writing
    the stream's name next to the pipeline file (bizon wrote ``None.json``). Run as a full refresh: dummy's
    records have no ``updated_at``, and bizon-fast stops an incremental job that cannot keep a watermark."""
    root, _ = examples
    example = root / "connectors" / "destinations" / "file" / "config" / "file_incremental.example.yml"
    text = example.read_text().replace("sync_mode: incremental", "sync_mode: full_refresh")
    assert "destination_id" not in text
    (tmp_path / "pipeline.yml").write_text(text)
    done = run_cli("run", "pipeline.yml", "--quiet", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "creatures.json").read_text().splitlines()
    assert {json.loads(line)["source_record_id"] for line in lines} == {"9898", "88787", "98", "3333", "56565"}
    assert not (tmp_path / "None.json").exists()


def _bigquery_details(**keys: object) -> object:
    from bizon_fast.connectors.registry import destination_config_class

    model = destination_config_class("bigquery")
    return model.model_validate({"project_id": "p", "dataset_id": "d", **keys})


@pytest.mark.parametrize(
    ("written", "window", "field"),
    [
        ({"type": "DAY", "field": "_bizon_loaded_at"}, "DAY", "_bizon_loaded_at"),  # bizon 0.6.4's example
        ({"type": "HOUR", "field": "ts"}, "HOUR", "ts"),
        ("MONTH", "MONTH", "_bizon_loaded_at"),  # the historical bare window
        (None, "DAY", "_bizon_loaded_at"),
    ],
)
def test_bigquery_time_partitioning_forms(written: object, window: str, field: str) -> None:
    details = _bigquery_details(**({} if written is None else {"time_partitioning": written}))
    assert (details.time_partitioning.type, details.time_partitioning.field) == (window, field)
    assert details.enforce_partitioning is False
    assert _bigquery_details(enforce_partitioning=True).enforce_partitioning is True


@pytest.mark.parametrize(
    "written",
    [{"type": "WEEK"}, {"type": "DAY", "field": None}, {"type": "DAY", "colum": "ts"}, "WEEK"],
)
def test_bigquery_time_partitioning_rejects(written: object) -> None:
    """A window BigQuery does not have, a typo'd key, and ``field: null`` (ingestion time: a published
    ``CREATE TABLE AS SELECT`` cannot make one, so accepting it would partition otherwise than written)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        _bigquery_details(time_partitioning=written)


def _partitioned_publish(dataset: str, enforce: bool, emulator: object) -> str:
    """Publish a full refresh partitioned on ``ts`` over an existing unpartitioned table; the publish's SQL.

    The emulator records no partitioning from a ``CREATE TABLE ... PARTITION BY`` statement (it does from an
    API-created table), so the statement it ran is what shows the partitioning asked for."""
    from google.cloud import bigquery

    from bizon_fast.connectors.registry import destination_class
    from bizon_fast.destination.base import DestinationContext
    from native_bench.services import BQEMU_PROJECT

    client = emulator.client()
    table = f"{BQEMU_PROJECT}.{dataset}.events"
    columns = [bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("ts", "TIMESTAMP")]
    client.create_table(bigquery.Table(table, schema=columns))  # a legacy table: not partitioned
    assert client.get_table(table).time_partitioning is None
    cls = destination_class("bigquery")
    config = cls.config_class.model_validate(
        {
            "project_id": BQEMU_PROJECT,
            "dataset_id": dataset,
            "destination_id": "events",
            "time_partitioning": {"type": "DAY", "field": "ts"},
            "enforce_partitioning": enforce,
        }
    )
    context = DestinationContext(job_id="j1", pipeline="p", source_name="s", stream="events", sync_mode="full_refresh")
    dest = cls(config, context)
    dest.check_connection()
    dest.prepare({})
    ts = pa.array([datetime(2024, 1, 2, tzinfo=UTC)] * 3, pa.timestamp("us", "UTC"))
    dest.write("s0", 0, 0, [pa.record_batch({"id": pa.array([1, 2, 3], pa.int64()), "ts": ts})])
    dest.publish()
    dest.close()
    rows = [tuple(r.values()) for r in client.query(f"SELECT COUNT(*) FROM `{table}`").result()]
    publish = [
        job.query
        for job in client.list_jobs(max_results=200)
        if job.job_type == "query" and job.query.startswith(f"CREATE OR REPLACE TABLE `{table}`")
    ]
    client.close()
    assert rows == [(3,)] and len(publish) == 1, (rows, publish)
    return publish[0]


@pytest.mark.parametrize("enforce", [True, False])
def test_enforce_partitioning_rebuilds_a_legacy_table(
    bq_emulator, bq_dataset: str, enforce: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A full refresh over an unpartitioned (legacy) table: ``enforce_partitioning: true`` drops it and recreates
    it partitioned as configured; left false, it keeps its partitioning (BigQuery refuses to change it in a
    ``CREATE OR REPLACE``) and a warning says so."""
    caplog.set_level("WARNING", logger="bizon_fast.destination.bigquery")
    sql = _partitioned_publish(bq_dataset, enforce, bq_emulator)
    if enforce:
        assert " PARTITION BY TIMESTAMP_TRUNC(`ts`, DAY) AS SELECT" in sql
        assert "enforce_partitioning: dropping and recreating it" in caplog.text
    else:
        assert "PARTITION BY" not in sql
        assert "keeps its partitioning None (configured ('ts', 'DAY'))" in caplog.text
