"""Checkpoint cost: the same pipeline committing cursors every batch vs every 10 vs every 100 batches
(``engine.backend.config.syncCursorInDBEvery``), on the sqlite backend and on Postgres.

Many small batches make the commit cost visible: synthetic ``batch_rows: 2000``,
``engine.queue.config.batch_size_mb: 0.1`` (one source batch per ring batch) and the noop destination
with ``buffer_size: 0`` (one write per batch, nothing else to pay for). The supervisor also commits at
least every 0.5 s whatever the setting, so "every 100" is really "every 100 or every 0.5 s". Postgres is
127.0.0.1:5432, database ``test``, schema ``native_bench`` (created here, dropped at the end).
"""

from __future__ import annotations

from collections.abc import Callable

from native_bench import pipelines
from native_bench.context import Context
from native_bench.proctree import RunStats
from native_bench.result import BenchResult, fmt, ratio, table
from native_bench.rounds import interleave, summarize

NAME = "checkpoint"
TITLE = "Checkpoint cost: commit every 1 / 10 / 100 batches, sqlite vs Postgres"
EVERY = [1, 10, 100]
BATCH_ROWS = 2_000
PG_SCHEMA = "native_bench"
PG_CONFIG = {
    "host": "127.0.0.1",
    "port": 5432,
    "database": "test",
    "schema": PG_SCHEMA,
    "username": "postgres",
}


def _config(rows: int, backend: str, every: int) -> dict:
    details = {**(PG_CONFIG if backend == "postgres" else {}), "syncCursorInDBEvery": every}
    return pipelines.synthetic_pipeline(
        f"checkpoint_{backend}_{every}",
        rows,
        "noop",
        {"buffer_size": 0},
        splits=16,
        source={"batch_rows": BATCH_ROWS},
        engine={"backend": {"type": backend, "config": details}, "queue": {"config": {"batch_size_mb": 0.1}}},
    )


def _postgres(sql: str) -> str | None:
    """Run ``sql`` on the benchmark database; the reason it could not, or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        with psycopg.connect(
            host=PG_CONFIG["host"],
            port=PG_CONFIG["port"],
            dbname=PG_CONFIG["database"],
            user="postgres",
            connect_timeout=5,
            autocommit=True,
        ) as conn:
            conn.execute(sql)
    except psycopg.Error as exc:
        return f"Postgres at {PG_CONFIG['host']}:{PG_CONFIG['port']} unusable: {str(exc).strip()[:200]}"
    return None


def run(ctx: Context) -> BenchResult:
    rows_n = ctx.size(2_000_000, 200_000)
    batches = -(-rows_n // BATCH_ROWS)
    notes: list[str] = []
    backends = ["sqlite"]
    problem = _postgres(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
    if problem is None:
        backends.append("postgres")  # a backend that cannot run shows up as failed runs, with the reason, below
    else:
        notes.append(f"postgres: no numbers; {problem}")
    try:
        keys = [(b, every) for b in backends for every in EVERY]
        contenders: dict[str, Callable[[], RunStats]] = {
            f"{b}/{every}": (
                lambda c=_config(rows_n, b, every): pipelines.run_bizon_fast(c, workers=ctx.cores, scratch=ctx.scratch)
            )
            for b, every in keys
        }
        runs = interleave(contenders, ctx.rounds)
    finally:
        if "postgres" in backends:
            _postgres(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
    rows = []
    for b, every in keys:
        summary = summarize(runs[f"{b}/{every}"], rows_n)
        if "failure" in summary:
            notes.append(f"{b} every {every}: {summary['failure']}")
        wall = summary["wall_s"]
        rows.append(
            {
                "backend": b,
                "every": every,
                "batches": batches,
                "batches_per_s": batches / wall if wall else None,
                **summary,
            }
        )
    by = {(r["backend"], r["every"]): r for r in rows}
    metrics: dict[str, float | None] = {}
    for b in backends:
        for every in EVERY:
            metrics[f"{b}_every{every}_batches_per_s"] = by[(b, every)]["batches_per_s"]
        slow, fast = by[(b, 1)], by[(b, EVERY[-1])]
        metrics[f"{b}_every1_vs_every100"] = ratio(slow["rows_per_s"], fast["rows_per_s"])
        if slow["wall_s"] and fast["wall_s"]:
            metrics[f"{b}_commit_ms_per_batch"] = (slow["wall_s"] - fast["wall_s"]) / batches * 1e3
    for r in rows:
        r["vs_every100"] = ratio(r["rows_per_s"], by[(r["backend"], EVERY[-1])]["rows_per_s"])
    return BenchResult(
        name=NAME, title=TITLE, description="", rows=rows, metrics=metrics, notes=notes, markdown=_markdown(rows)
    )


def _markdown(rows: list[dict]) -> str:
    cells = [
        [
            r["backend"],
            str(r["every"]),
            fmt(r["rows"]),
            fmt(r["batches"]),
            fmt(r["wall_s"], 2),
            fmt(r["rows_per_s"]),
            fmt(r["batches_per_s"]),
            fmt(r["vs_every100"], 2, "x"),
            fmt(r["cpu_s"], 1),
        ]
        for r in rows
    ]
    headers = ["backend", "commit every", "rows", "batches", "wall s", "rows/s", "batches/s", "vs every 100", "CPU s"]
    return table(headers, cells)
