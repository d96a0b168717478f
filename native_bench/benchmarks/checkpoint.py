"""Checkpoint cost: the same pipeline committing cursors every batch vs every 10 vs every 100 batches
(``engine.backend.config.syncCursorInDBEvery``), on the sqlite backend and on Postgres.

Many small batches make the commit cost visible: synthetic ``batch_rows: 2000``,
``engine.queue.config.batch_size_mb: 0.1`` (one source batch per ring batch) and the noop destination
with ``buffer_size: 0`` (one write per batch, nothing else to pay for). The supervisor also commits at
least every 0.5 s whatever the setting, so "every 100" is really "every 100 or every 0.5 s". Postgres is
127.0.0.1:5432, database ``test``, schema ``native_bench_<pid>`` (created here, dropped at the end; the
pid keeps two suites running at once, say CI and a developer, from dropping each other's tables).

The pipeline difference is small against the engine's own per-batch cost and the machine's noise, so
the latency of one commit is measured directly too: the backend's ``commit_cursors`` of two cursors
(what the supervisor commits after a batch with 2 workers), called in a loop in this process.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from bizon_fast.checkpoint.factory import create_backend
from bizon_fast.config.engine import BackendConfig
from bizon_fast.cursor import Cursor
from native_bench import pipelines
from native_bench.context import Context
from native_bench.proctree import RunStats
from native_bench.result import BenchResult, fmt, ratio, table
from native_bench.rounds import interleave, summarize

NAME = "checkpoint"
TITLE = "Checkpoint cost: commit every 1 / 10 / 100 batches, sqlite vs Postgres"
EVERY = [1, 10, 100]
BATCH_ROWS = 2_000
PG_SCHEMA = f"native_bench_{os.getpid()}"
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


def _commit_latency(backend: str, commits: int, ctx: Context) -> dict[str, float]:
    """Median and 95th percentile of one ``commit_cursors`` call, in ms, on a fresh job."""
    details = dict(PG_CONFIG) if backend == "postgres" else {"database": str(ctx.scratch / "commit_latency")}
    store = create_backend(BackendConfig.model_validate({"type": backend, "config": details}))
    store.open()
    try:
        job = store.create_job(
            name="native_bench_commit",
            source_name="synthetic",
            stream_name="events",
            sync_mode="full_refresh",
            fingerprint="native_bench",
            total_rows=None,
        )
        times = []
        for seq in range(commits):
            cursors = [
                Cursor(split_id=f"split-{k}", seq=seq, position=[seq * BATCH_ROWS, 0], rows=seq * BATCH_ROWS)
                for k in range(2)
            ]
            start = time.perf_counter()
            store.commit_cursors(job.id, cursors)
            times.append(time.perf_counter() - start)
    finally:
        store.close()
    times.sort()
    return {"median_ms": statistics.median(times) * 1e3, "p95_ms": times[int(0.95 * (len(times) - 1))] * 1e3}


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
        latency: dict[str, dict[str, float]] = {}
        for b in backends:
            try:
                latency[b] = _commit_latency(b, ctx.size(1_000, 200), ctx)
            except Exception as exc:  # the pipeline runs above already say why, if that is why
                notes.append(f"{b} commit latency: {type(exc).__name__}: {exc}")
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
        metrics[f"{b}_commit_median_ms"] = latency.get(b, {}).get("median_ms")
        metrics[f"{b}_commit_p95_ms"] = latency.get(b, {}).get("p95_ms")
    for r in rows:
        r["vs_every100"] = ratio(r["rows_per_s"], by[(r["backend"], EVERY[-1])]["rows_per_s"])
    commits = table(
        ["backend", "one commit of 2 cursors, median ms", "p95 ms"],
        [[b, fmt(v["median_ms"], 3), fmt(v["p95_ms"], 3)] for b, v in latency.items()],
    )
    return BenchResult(
        name=NAME,
        title=TITLE,
        description="",
        rows=rows,
        metrics=metrics,
        notes=notes,
        markdown=_markdown(rows) + "\n\n" + commits,
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
