"""Merge (issue 16): 1% of a 10M-row Postgres table changed at the source, merged into the destination
(``sync_mode: incremental`` by ``updated_at``, ``write_disposition: merge``, key = the source's primary
key) vs a full refresh of the same table (``sync_mode: full_refresh``, ``write_disposition: replace``);
target: the merge faster than the full refresh (the ratio full refresh / merge wall time, >= 1x).

Method: the source table (``rows`` ids, generate_series, an index on ``updated_at``) is created in a
schema of this process (``native_bench_merge_<pid>``, dropped at the end with its ``_ckpt`` twin) and
loaded once by the merge pipeline (untimed; its cursor kept by a Postgres checkpoint backend in
``native_bench_merge_<pid>_ckpt``). Each round first updates 1% of the rows at the source (untimed: a new
``payload`` and a later ``updated_at``, a different 1% each round), then runs both contenders, the first
one rotated: the merge pipeline's next run (reads only the changed rows, upserts them at publish) and a
full refresh of the whole table into another destination table. After each run (outside the timing) the
destination is read back: its rows and distinct ids, and every row equal to the source's (``payload`` and
``updated_at`` by id), so the changed rows carry their new values; and the rows its job read (the
checkpoint's count: the merge reads only the changed rows, the full refresh all of them). A run that did
anything else is a failed run. Reported: the median wall seconds of each (the whole ``bizon-fast run``,
2 workers) and their ratio. ``--quick``: 200k rows, one round.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from native_bench import pipelines, verify
from native_bench.benchmarks.external import skip_or_fail
from native_bench.context import Context
from native_bench.proctree import RunStats, measure
from native_bench.result import BenchResult, Target, fmt, median, ratio, table
from native_bench.rounds import interleave, summarize

NAME = "merge"
TITLE = "Merge of 1% changed rows vs a full refresh (Postgres -> Postgres)"
ROWS, QUICK_ROWS = 10_000_000, 200_000
CHANGED = 0.01  # the share of the rows updated at the source before each round
WORKERS = 2
DSN = os.environ.get("BIZON_FAST_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
SCHEMA = f"native_bench_merge_{os.getpid()}"
MERGE, FULL = "merge (incremental, 1% changed)", "full refresh (replace)"
TIMEOUT_S = 1_800

_GENERATE = """
CREATE TABLE {s}.src (
    id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, user_id bigint, amount numeric(12,2),
    quantity int, flag boolean, category text, payload text
);
INSERT INTO {s}.src
SELECT g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 ms', (g * 7919) % 1000003,
       ((g * 31) % 10000000) / 100.0, (g % 100) + 1, g % 3 = 0,
       (ARRAY['electronics','books','clothing','home','garden','toys','sports','grocery'])[g % 8 + 1],
       md5(g::text) || substr(md5((g + 1)::text), 1, 16)
FROM generate_series(1::bigint, {rows}::bigint) g;
CREATE INDEX ON {s}.src (updated_at);
ANALYZE {s}.src
"""


def _connect() -> Any:
    import psycopg

    return psycopg.connect(DSN, autocommit=True)


def _sql(*statements: str) -> None:
    with _connect() as conn:
        for statement in statements:
            conn.execute(statement)


def _config(kind: str, rows: int) -> dict[str, Any]:
    merge = kind == MERGE
    source: dict[str, Any] = {"name": "postgres", "stream": f"{SCHEMA}.src", "dsn": DSN, "splits": 16}
    dest: dict[str, Any] = {"dsn": DSN, "destination_id": f"{SCHEMA}.{'dst_merge' if merge else 'dst_full'}"}
    if merge:
        source.update(sync_mode="incremental", cursor_field="updated_at")
        dest["write_disposition"] = "merge"
    else:
        source["sync_mode"] = "full_refresh"
        dest["write_disposition"] = "replace"
    return {
        "name": f"bench-merge-{'merge' if merge else 'full'}",
        "source": source,
        "destination": {"name": "postgres", "config": dest},
        "engine": {
            "backend": {"type": "postgres", "config": {"dsn": DSN, "schema": f"{SCHEMA}_ckpt"}},
            "runner": {"config": {"max_workers": WORKERS}},
        },
    }


def _check(table: str, rows: int) -> verify.Written:
    """Rows and distinct ids of ``table``; RuntimeError unless every row equals the source's (new values included)."""
    with _connect() as conn:
        count, distinct, same = conn.execute(
            f"SELECT count(*), count(DISTINCT d.id), count(*) FILTER (WHERE s.payload = d.payload"
            f" AND s.updated_at = d.updated_at) FROM {SCHEMA}.{table} d LEFT JOIN {SCHEMA}.src s USING (id)"
        ).fetchone()
    if count == rows and same != rows:
        raise RuntimeError(f"{table}: {rows - same:,} of {rows:,} rows differ from the source (changes not applied)")
    return verify.Written(count, distinct, f"table {SCHEMA}.{table}")


def _run(kind: str, rows: int, scratch: Path, expect_read: int | None = None) -> RunStats:
    config = _config(kind, rows)

    def body(folder: Path) -> RunStats:
        (folder / "pipeline.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {**os.environ, "BIZON_FAST_LOG_DIR": str(folder / "logs")}
        cmd = [sys.executable, "-m", "bizon_fast", "run", "pipeline.yml", "--quiet"]
        return measure(cmd, cwd=folder, env=env, timeout=TIMEOUT_S)

    table = config["destination"]["config"]["destination_id"].split(".", 1)[1]
    stats = pipelines.in_fresh_dir(scratch, body, rows, lambda _folder: _check(table, rows))
    if stats.ok:  # what the run read: the rows its job committed (the merge must read only the changed ones)
        stats.extra["rows_read"] = verify.checkpoint_rows(scratch, config).rows
        if expect_read is not None and stats.extra["rows_read"] != expect_read:
            stats.verify_error = f"{kind}: read {stats.extra['rows_read']:,} rows, expected {expect_read:,}"
            verify.FAILURES.append(stats.verify_error)
            print(f"native_bench: RUN FAILED VERIFICATION: {stats.verify_error}", flush=True)
    return stats


def _update(rows: int, round_no: int) -> int:
    """Update a different 1% of the source's rows (new payload, later updated_at); how many."""
    step = round(1 / CHANGED)
    with _connect() as conn:
        cur = conn.execute(
            f"UPDATE {SCHEMA}.src SET payload = 'round-{round_no}-' || id,"
            f" updated_at = timestamptz '2030-01-01' + interval '{round_no} day' + id * interval '1 us'"
            f" WHERE id % {step} = {round_no % step}"
        )
        changed = cur.rowcount
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.src")
        conn.execute("CHECKPOINT")
    return changed


def run(ctx: Context) -> BenchResult:
    try:
        _connect().close()
    except Exception as exc:  # psycopg missing or no server: nothing to measure here
        return skip_or_fail(NAME, TITLE, f"no PostgreSQL at {DSN}: {type(exc).__name__}: {exc}")
    rows = ctx.size(ROWS, QUICK_ROWS)
    scratch = ctx.scratch / NAME
    scratch.mkdir(parents=True, exist_ok=True)
    result = BenchResult(name=NAME, title=TITLE, description="")
    try:
        _sql(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE", f"DROP SCHEMA IF EXISTS {SCHEMA}_ckpt CASCADE")
        _sql(f"CREATE SCHEMA {SCHEMA}", *_GENERATE.replace("{s}", SCHEMA).replace("{rows}", str(rows)).split(";\n"))
        first = _run(MERGE, rows, scratch, expect_read=rows)  # the initial load: untimed, it sets the cursor
        if not first.ok:
            raise RuntimeError(f"initial load: {first.failure()}")
        changed: list[int] = []

        def merged() -> RunStats:
            return _run(MERGE, rows, scratch, expect_read=changed[-1])

        def full() -> RunStats:
            return _run(FULL, rows, scratch, expect_read=rows)

        runs: dict[str, list[RunStats]] = {MERGE: [], FULL: []}
        for r in range(ctx.rounds):  # one round at a time: the source changes between rounds
            changed.append(_update(rows, r + 1))
            order = [MERGE, FULL] if r % 2 == 0 else [FULL, MERGE]
            one = interleave({name: {MERGE: merged, FULL: full}[name] for name in order}, 1)
            for name, stats in one.items():
                runs[name] += stats
    finally:
        _sql(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE", f"DROP SCHEMA IF EXISTS {SCHEMA}_ckpt CASCADE")
    for name in (MERGE, FULL):
        summary = summarize(runs[name], rows)
        read = median(r.extra.get("rows_read") for r in runs[name] if r.ok)
        result.rows.append(
            {"contender": name, "changed_rows": median(changed), "rows_read": read, "initial_load_s": first.wall_s}
            | summary
        )
    merge_s, full_s = (next(r["wall_s"] for r in result.rows if r["contender"] == c) for c in (MERGE, FULL))
    speedup = ratio(full_s, merge_s)
    result.metrics = {"merge_wall_s": merge_s, "full_refresh_wall_s": full_s, "full_refresh_over_merge": speedup}
    result.targets = [Target("full refresh / merge of 1% changed rows (wall time)", speedup, 1.0)]
    result.notes.append(
        f"{rows:,} rows; {fmt(median(changed))} rows changed at the source before each round;"
        f" initial load (merge pipeline's first run, untimed) {first.wall_s:.1f} s"
    )
    result.markdown = table(
        [
            "contender",
            "rows",
            "changed rows",
            "rows read",
            "wall s (median)",
            "all walls s",
            "CPU s",
            "peak RSS MB",
            "vs full refresh",
        ],
        [
            [
                r["contender"],
                fmt(r["rows"]),
                fmt(r["changed_rows"]),
                fmt(r["rows_read"]),
                fmt(r["wall_s"], 2),
                ", ".join(f"{w:.2f}" for w in r["wall_s_rounds"]),
                fmt(r["cpu_s"], 1),
                fmt(r["peak_rss_mb"]),
                fmt(ratio(r["wall_s"], full_s), 3, "x"),
            ]
            for r in result.rows
        ],
    )
    return result
