"""Postgres reads: a table -> Parquet and -> noop through ``bizon-fast run`` (source ``postgres``, ADBC) vs what a
user would pick instead: one process of ADBC + ``pyarrow.parquet``, ConnectorX with 2 partitions, and ``psql \\copy
(select ...) to /dev/null with (format binary)``; targets: Parquet at 2 workers >= 1.2x the ADBC script, noop wall
time at 2 workers <= 1.3x psql's. Beside them the machine's ceiling for a 2-worker read: the ADBC script forked
twice after its imports, each child one COPY of half the ids (``adbc-parquet-2proc``): no engine at all, so
what 2 workers can reach here at best; on a machine whose cores the server and one reader already fill, it is
barely ahead of the one-process script, and the 1.2x target cannot be met by any 2-worker engine.

The table (issue 13's): ``id bigint PRIMARY KEY, name text, qty int, created_at timestamptz, doc jsonb``, about
110 bytes a row in Postgres, generated once per size with generate_series (``bizon_fast_bench.read_<rows>``,
reused by later runs; 3M rows, 300k with --quick). Every contender reads it whole: bizon-fast with the source's
defaults (16 key-range splits), the scripts with one ``SELECT *``. Contenders run interleaved, the first rotated
each round; medians. Every run's output is read back (Parquet rows and distinct ids; noop: the rows the
checkpoint committed; the scans and psql: the rows they counted). Server CPU is the CPU seconds of all the
PostgreSQL server's processes during the run (the server shares the machine's cores with the client; on a
shared machine other sessions' queries count too, so read it as an upper bound). Needs the server on
127.0.0.1:5432 (``$BIZON_FAST_BENCH_PG``); skipped with a note without one (ConnectorX: without the package).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from native_bench import pg, pipelines, verify
from native_bench.benchmarks.external import skip_or_fail
from native_bench.context import Context
from native_bench.proctree import RunStats, measure
from native_bench.result import BenchResult, Target, fmt, ratio, table
from native_bench.rounds import interleave, summarize

NAME = "pgread"
TITLE = "Postgres -> Parquet / noop: bizon-fast vs ADBC + pyarrow, ConnectorX and psql \\copy"
ROWS, QUICK_ROWS = 3_000_000, 300_000
PARQUET_TARGET = 1.2  # bizon-fast 2 workers vs the one-process ADBC script, rows/s
NOOP_TARGET = 1.3  # bizon-fast 2 workers' wall time vs psql's binary \copy to /dev/null (lower is better)
SCRIPT = pipelines.FIXTURES / "pg_baselines.py"

ADBC_PARQUET = "ADBC + pyarrow.parquet (one process)"
TWO_READERS = "ceiling (the ADBC script forked twice, half the ids each)"
CONNECTORX = "ConnectorX, 2 partitions + pq.write_table"
ADBC_SCAN = "ADBC read only (one process)"
PSQL = "psql \\copy (format binary) to /dev/null"

_GENERATE = """
DROP TABLE IF EXISTS {t};
CREATE TABLE {t} (id bigint PRIMARY KEY, name text, qty int, created_at timestamptz, doc jsonb);
INSERT INTO {t}
SELECT g, 'customer-' || md5(g::text), (g * 7919) % 1000,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 s',
       jsonb_build_object('k', g, 'tag', 't' || (g % 100), 'ok', g % 2 = 0, 'score', (g % 1000) / 10.0)
FROM generate_series(1::bigint, {rows}::bigint) g;
VACUUM ANALYZE {t};
COMMENT ON TABLE {t} IS {marker};
"""


def table_name(rows: int) -> str:
    return f"{pg.SCHEMA}.read_{rows}"


def ensure_table(rows: int) -> None:
    """Generate the table unless a complete one (its comment says so) is already there."""
    import psycopg
    from psycopg import sql

    marker = f"bizon_fast pgread: {rows} rows"
    with psycopg.connect(pg.DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {pg.SCHEMA}")
        found = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (table_name(rows),)).fetchone()
        if found and found[0] == marker:
            return
        print(f"generating {table_name(rows)} with {rows:,} rows ...", file=sys.stderr)
        script = _GENERATE.replace("{t}", table_name(rows)).replace("{rows}", str(int(rows)))
        script = script.replace("{marker}", sql.Literal(marker).as_string(conn))
        for statement in script.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("CHECKPOINT")


def server_cpu() -> float:
    """CPU seconds of every PostgreSQL server process so far (ended backends count in the postmaster's children)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if (proc.info["name"] or "").startswith("postgres") and times is not None:
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _with_server_cpu(run: Callable[[], RunStats]) -> Callable[[], RunStats]:
    def timed() -> RunStats:
        before = server_cpu()
        stats = run()
        stats.extra["server_cpu_s"] = server_cpu() - before
        return stats

    return timed


def _uri() -> str:
    """``pg.DSN`` as a postgresql:// URI (ConnectorX takes only URIs)."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(pg.DSN)
    auth = quote(p.get("user", "postgres"), safe="") + (
        f":{quote(p['password'], safe='')}" if p.get("password") else ""
    )
    return f"postgresql://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p.get('dbname', 'postgres')}"


def _psql(query: str) -> list[str]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(pg.DSN)
    args = ["psql", "-X", "-v", "ON_ERROR_STOP=1"]
    for flag, key in (("-h", "host"), ("-p", "port"), ("-U", "user"), ("-d", "dbname")):
        if params.get(key):
            args += [flag, str(params[key])]
    return [*args, "-c", f"\\copy ({query}) TO '/dev/null' WITH (FORMAT binary)"]


def _counted(folder: Path) -> verify.Written:
    return verify.Written(int((folder / "count.txt").read_text()), None, "rows counted by the reader")


@dataclass
class Case:
    """A contender on one workload; ``workers`` None for an alternative."""

    label: str
    workload: str  # postgres->parquet | postgres->noop
    run: Callable[[], RunStats]
    workers: int | None = None


def _cases(ctx: Context, rows: int, connectorx: bool) -> list[Case]:
    table = table_name(rows)
    query = f"SELECT * FROM {table}"

    def bizon_fast(destination: str, workers: int) -> Callable[[], RunStats]:
        example = "synthetic_to_parquet.yml" if destination == "parquet" else "synthetic_to_noop.yml"
        config: dict[str, Any] = {
            "name": f"pgread_{destination}_w{workers}",
            "source": {"name": "postgres", "stream": table, "dsn": pg.DSN},
            "destination": pipelines.example(example)["destination"],
        }
        if destination == "parquet":
            config["destination"]["config"]["destination_id"] = f"out/{config['name']}"
        return lambda: pipelines.run_bizon_fast(config, workers=workers, scratch=ctx.scratch, expected_rows=rows)

    def script(mode: str, conn: str) -> Callable[[], RunStats]:
        counts = mode == "adbc-scan"
        target = "count.txt" if counts else "out/part-0.parquet"
        what = query
        if mode == "adbc-parquet-2proc":
            target, what = "out", table

        def body(folder: Path) -> RunStats:
            (folder / "out").mkdir()
            return measure([sys.executable, str(SCRIPT), mode, conn, what, target], cwd=folder)

        return lambda: pipelines.in_fresh_dir(ctx.scratch, body, rows, _counted if counts else None)

    def psql() -> RunStats:
        def body(folder: Path) -> RunStats:
            stats = measure(_psql(query), cwd=folder)
            copied = [line for line in stats.stdout.splitlines() if line.startswith("COPY ")]
            (folder / "count.txt").write_text(copied[-1].split()[1] if copied else "0")
            return stats

        return pipelines.in_fresh_dir(ctx.scratch, body, rows, _counted)

    cases = [Case(f"bizon-fast, {w} worker(s)", "postgres->parquet", bizon_fast("parquet", w), w) for w in (1, 2)]
    cases.append(Case(ADBC_PARQUET, "postgres->parquet", script("adbc-parquet", pg.DSN)))
    cases.append(Case(TWO_READERS, "postgres->parquet", script("adbc-parquet-2proc", pg.DSN)))
    if connectorx:
        cases.append(Case(CONNECTORX, "postgres->parquet", script("connectorx-parquet", _uri())))
    cases += [Case(f"bizon-fast, {w} worker(s)", "postgres->noop", bizon_fast("noop", w), w) for w in (1, 2)]
    cases.append(Case(ADBC_SCAN, "postgres->noop", script("adbc-scan", pg.DSN)))
    cases.append(Case(PSQL, "postgres->noop", psql))
    return cases


def run(ctx: Context) -> BenchResult:
    try:
        import adbc_driver_postgresql  # noqa: F401 - the ADBC script and the source both need it
        import psycopg

        psycopg.connect(pg.DSN, connect_timeout=5).close()
    except Exception as exc:  # psycopg or ADBC missing, or no server: nothing to measure here
        return skip_or_fail(NAME, TITLE, f"no PostgreSQL at {pg.DSN} (or no ADBC): {type(exc).__name__}: {exc}")
    notes: list[str] = []
    try:
        import connectorx  # noqa: F401

        has_connectorx = True
    except ImportError:
        has_connectorx = False
        notes.append("ConnectorX is not installed (pip install connectorx): its contender is left out")
    if shutil.which("psql") is None:
        return skip_or_fail(NAME, TITLE, "psql is not on the PATH")
    rows = ctx.size(ROWS, QUICK_ROWS)
    ensure_table(rows)
    notes.append(f"table {table_name(rows)}: {rows:,} rows; the machine has {ctx.cores} cores")
    cases = _cases(ctx, rows, has_connectorx)
    runs = interleave({f"{c.workload}/{c.label}": _with_server_cpu(c.run) for c in cases}, ctx.rounds)
    out: list[dict[str, Any]] = []
    for case in cases:
        results = runs[f"{case.workload}/{case.label}"]
        summary = summarize(results, rows)
        if "failure" in summary:
            notes.append(f"{case.workload}, {case.label}: {summary['failure']}")
        ok = sorted(r.extra["server_cpu_s"] for r in results if r.ok)
        summary["server_cpu_s"] = ok[len(ok) // 2] if ok else None
        out.append({"workload": case.workload, "contender": case.label, "workers": case.workers, **summary})
    reference = {"postgres->parquet": ADBC_PARQUET, "postgres->noop": PSQL}
    by = {(r["workload"], r["contender"]): r for r in out}
    for r in out:
        ref = by[(r["workload"], reference[r["workload"]])]
        r["rate_vs_reference"] = ratio(r["rows_per_s"], ref["rows_per_s"])
        r["wall_vs_reference"] = ratio(r["wall_s"], ref["wall_s"])
    metrics: dict[str, float | None] = {}
    for r in out:
        key = r["workload"].replace("->", "_to_")
        who = f"bizon_fast_w{r['workers']}" if r["workers"] else r["contender"].split()[0].lower()
        metrics[f"{key}_{who}_rows_per_s"] = r["rows_per_s"]
        if r["workers"]:
            metrics[f"{key}_{who}_vs_reference"] = r["rate_vs_reference"]
            metrics[f"{key}_{who}_wall_vs_reference"] = r["wall_vs_reference"]
    ceiling = by[("postgres->parquet", TWO_READERS)]
    metrics["postgres_to_parquet_bizon_fast_w2_vs_ceiling"] = ratio(
        metrics["postgres_to_parquet_bizon_fast_w2_rows_per_s"], ceiling["rows_per_s"]
    )
    notes.append(
        f"the 2-reader ceiling runs at {fmt(ceiling['rate_vs_reference'], 2, 'x')} the one-process script on this "
        f"machine ({ctx.cores} cores); bizon-fast at 2 workers reaches "
        f"{fmt(metrics['postgres_to_parquet_bizon_fast_w2_vs_ceiling'], 2, 'x')} of that ceiling"
    )
    targets = [
        Target(
            f"postgres -> parquet, bizon-fast 2 workers / {ADBC_PARQUET} (rows/s)",
            metrics["postgres_to_parquet_bizon_fast_w2_vs_reference"],
            PARQUET_TARGET,
        ),
        Target(
            f"postgres -> noop, bizon-fast 2 workers' wall / {PSQL}'s",
            metrics["postgres_to_noop_bizon_fast_w2_wall_vs_reference"],
            NOOP_TARGET,
            higher_is_better=False,
        ),
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description="",
        rows=out,
        metrics=metrics,
        targets=targets,
        notes=notes,
        markdown=_markdown(out),
    )


def _markdown(rows: list[dict[str, Any]]) -> str:
    cells = [
        [
            r["workload"],
            r["contender"],
            fmt(r["rows"]),
            fmt(r["wall_s"], 2),
            fmt(r["rows_per_s"]),
            fmt(r["rate_vs_reference"], 2, "x"),
            fmt(r["wall_vs_reference"], 2, "x"),
            fmt(r["cpu_s"], 1),
            fmt(r["server_cpu_s"], 1),
            fmt(r["peak_rss_mb"]),
        ]
        for r in rows
    ]
    headers = [
        "workload",
        "contender",
        "rows",
        "wall s",
        "rows/s",
        "rows/s vs reference",
        "wall vs reference",
        "client CPU s",
        "server CPU s",
        "peak RSS MB (tree)",
    ]
    return table(headers, cells)
