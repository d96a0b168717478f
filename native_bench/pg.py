"""Postgres -> Postgres: bizon-fast (1 and 2 workers) against a ``psql \\copy | psql \\copy`` pipe.

Why: the pipe of two psql processes is what a DBA would type to copy a table, a single COPY stream
each way with no client-side work beyond relaying bytes; bizon-fast must come close to it (>= 0.8x
at 2 workers on a 2-core machine) while checkpointing and writing effectively-once.

The table: ``rows`` ids with a timestamptz, two bigints, a numeric(12,2), an int, a bool, an
8-value category and a 48-character payload, ~110 bytes a row in text form, generated server-side
with generate_series (once per size: ``src_<rows>`` is reused by later runs).
Each contender copies it into a fresh table of the same schema; the row count is checked after
every run. Contenders run interleaved, ``ROUNDS`` rounds, and the median round is reported.

Reported per contender: rows/s, the ratio to the psql pipe, CPU seconds of the client process tree
(user+sys), CPU seconds of the PostgreSQL server processes during the run, and the peak RSS of the
client tree (psutil polling, ``native_bench.proctree``; RSS counts the shared-memory ring once per
process that maps it, PSS splits it among them). The server runs on the same machine, so
client and server compete for the same cores, as they do in the pipe.

    .venv/bin/python -m native_bench.pg [--quick]     # 10M rows (--quick: 1M)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
import yaml

from native_bench import verify
from native_bench.proctree import RunStats, measure

DSN = os.environ.get("BIZON_FAST_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
SCHEMA = "bizon_fast_bench"
ROWS, QUICK_ROWS = 10_000_000, 1_000_000
ROUNDS, QUICK_ROUNDS = 3, 3
WORKERS = (1, 2)
TIMEOUT_S = 1_800
#: target tables of this process: two benchmark runs at once must not drop each other's
PSQL_TABLE, BF_TABLE = f"dst_psql_{os.getpid()}", f"dst_bf_{os.getpid()}"

_GENERATE = """
DROP TABLE IF EXISTS {s}.{t};
CREATE TABLE {s}.{t} (
    id bigint PRIMARY KEY, created_at timestamptz NOT NULL, user_id bigint, account_id bigint,
    amount numeric(12,2), quantity int, flag boolean, category text, payload text
);
INSERT INTO {s}.{t}
SELECT g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 ms', (g * 7919) % 1000003,
       CASE WHEN g % 10 = 0 THEN NULL ELSE (g * 104729) % 50000 END,
       ((g * 31) % 10000000) / 100.0, (g % 100) + 1, g % 3 = 0,
       (ARRAY['electronics','books','clothing','home','garden','toys','sports','grocery'])[g % 8 + 1],
       md5(g::text) || substr(md5((g + 1)::text), 1, 16)
FROM generate_series(1::bigint, {rows}::bigint) g;
ANALYZE {s}.{t};
COMMENT ON TABLE {s}.{t} IS {marker};
"""


def _connect() -> Any:
    import psycopg

    return psycopg.connect(DSN, autocommit=True)


def _psql_args() -> list[str]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(DSN)
    args = ["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1"]
    for flag, key in (("-h", "host"), ("-p", "port"), ("-U", "user"), ("-d", "dbname")):
        if params.get(key):
            args += [flag, str(params[key])]
    return args


def source_table(rows: int) -> str:
    return f"src_{rows}"


def ensure_table(rows: int) -> None:
    """Generate ``SCHEMA.src_<rows>`` unless a complete one is already there."""
    marker = f"bizon_fast bench: {rows} rows"
    table = source_table(rows)
    with _connect() as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        current = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (f"{SCHEMA}.{table}",)).fetchone()
        if current and current[0] == marker:
            return
        print(f"generating {SCHEMA}.{table} with {rows:,} rows ...", file=sys.stderr)
        from psycopg import sql

        script = _GENERATE.replace("{s}", SCHEMA).replace("{t}", table).replace("{rows}", str(int(rows)))
        script = script.replace("{marker}", sql.Literal(marker).as_string(conn))
        for statement in script.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("CHECKPOINT")


def _reset(table: str, like: str | None) -> None:
    with _connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{table}")
        if like:
            # the same job as bizon-fast's (issue 13: the destination keeps the primary key): the pipe copies into a
            # table that has the source's key and constraints, so both end with the same table
            conn.execute(f"CREATE TABLE {SCHEMA}.{table} (LIKE {SCHEMA}.{like} INCLUDING ALL)")
        conn.execute("CHECKPOINT")  # each run starts with no dirty pages of the previous one


def _written(table: str) -> verify.Written:
    """``count(*)`` and ``count(DISTINCT id)`` of the table a run copied into."""
    with _connect() as conn:
        rows, distinct = conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {SCHEMA}.{table}").fetchone()
    return verify.Written(rows, distinct, f"table {SCHEMA}.{table}")


def _server_cpu() -> float:
    """CPU seconds of every PostgreSQL server process so far (the postmaster's children come and go)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if (proc.info["name"] or "").startswith("postgres") and proc.info["cpu_times"] is not None:
            times = proc.info["cpu_times"]
            total += (
                times.user + times.system + getattr(times, "children_user", 0) + getattr(times, "children_system", 0)
            )
    return total


def _measured(cmd: list[str], cwd: Path) -> tuple[RunStats, float]:
    before = _server_cpu()
    stats = measure(cmd, cwd=cwd, timeout=TIMEOUT_S)
    return stats, _server_cpu() - before


def run_psql(rows: int, scratch: Path) -> tuple[RunStats, float]:
    table = source_table(rows)
    _reset(PSQL_TABLE, like=table)
    psql = " ".join(_psql_args())
    out = f'{psql} -c "\\copy (SELECT * FROM {SCHEMA}.{table}) TO STDOUT"'
    into = f'{psql} -c "\\copy {SCHEMA}.{PSQL_TABLE} FROM STDIN"'
    return _measured(["bash", "-o", "pipefail", "-c", f"{out} | {into}"], scratch)


def bizon_fast_config(rows: int, workers: int) -> dict[str, Any]:
    return {
        "name": f"bench-pg-{workers}",
        "source": {"name": "postgres", "stream": f"{SCHEMA}.{source_table(rows)}", "dsn": DSN, "splits": 16},
        "destination": {"name": "postgres", "config": {"dsn": DSN, "destination_id": f"{SCHEMA}.{BF_TABLE}"}},
        "engine": {"runner": {"config": {"max_workers": workers}}},
    }


def run_bizon_fast(rows: int, workers: int, scratch: Path) -> tuple[RunStats, float]:
    _reset(BF_TABLE, like=None)
    folder = scratch / f"bf{workers}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "pipeline.yml").write_text(yaml.safe_dump(bizon_fast_config(rows, workers)))
    cmd = [sys.executable, "-m", "bizon_fast", "run", "pipeline.yml", "--quiet"]
    return _measured(cmd, folder)


def run(quick: bool) -> list[dict]:
    rows = QUICK_ROWS if quick else ROWS
    ensure_table(rows)
    contenders: dict[str, Any] = {"psql pipe": (lambda scratch: run_psql(rows, scratch), PSQL_TABLE)}
    for w in WORKERS:
        contenders[f"bizon-fast -w {w}"] = (lambda scratch, w=w: run_bizon_fast(rows, w, scratch), BF_TABLE)
    results: dict[str, list[tuple[RunStats, float, int]]] = {name: [] for name in contenders}
    try:
        with tempfile.TemporaryDirectory(prefix="native_bench_pg_") as tmp:
            scratch = Path(tmp)
            for _ in range(QUICK_ROUNDS if quick else ROUNDS):
                for name, (body, table) in contenders.items():
                    stats, server = body(scratch)
                    if not stats.ok:
                        raise RuntimeError(f"{name}: {stats.failure()}")
                    written = verify.require(name, rows, _written(table))
                    results[name].append((stats, server, written))
    finally:
        for table in (PSQL_TABLE, BF_TABLE):
            _reset(table, like=None)
    out = []
    for name, runs in results.items():
        walls = sorted(runs, key=lambda r: r[0].wall_s)
        stats, server, written = walls[len(walls) // 2]
        out.append(
            {
                "contender": name,
                "rows": written,
                "wall_s": round(stats.wall_s, 2),
                "rows_per_s": round(written / stats.wall_s),  # rows read back from the table, not the nominal
                "client_cpu_s": round(stats.cpu_s, 2),
                "server_cpu_s": round(server, 2),
                "peak_rss_mb": round(stats.peak_rss / 2**20, 1),
                "peak_pss_mb": round(stats.peak_pss / 2**20, 1) if stats.peak_pss else None,
                "walls_s": [round(r[0].wall_s, 2) for r in runs],
            }
        )
    base = out[0]["rows_per_s"]
    for row in out:
        row["vs_psql"] = round(row["rows_per_s"] / base, 2)
    return out


def markdown(rows: list[dict]) -> str:
    head = (
        "| contender | rows | wall s | rows/s | vs psql | client CPU s | server CPU s | peak RSS MB | peak PSS MB"
        " | all walls s |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['contender']} | {r['rows']:,} | {r['wall_s']} | {r['rows_per_s']:,} | {r['vs_psql']}x"
            f" | {r['client_cpu_s']} | {r['server_cpu_s']} | {r['peak_rss_mb']} | {r['peak_pss_mb']} | {r['walls_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows instead of {ROWS:,}")
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}; median of {QUICK_ROUNDS if args.quick else ROUNDS} rounds")
    print(markdown(run(args.quick)))


if __name__ == "__main__":
    main()
