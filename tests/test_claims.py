"""README claims that had no test of their own, checked through the CLI where the claim is about the CLI.

Each test names the sentence it checks. Why through ``bizon-fast run``: the claims are what a user gets from
a run (transforms applied by consumer processes, a watermark stored by the supervisor, writes retried in a
worker), so a unit test of the function would not show that the run wires it up.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import polars as pl
import pyarrow.dataset as ds
import pytest

from bizon_fast.engine.incremental import StoredWatermark
from tests.conftest import REPO
from tests.faults import expected_synthetic
from tests.services.postgres import PG_DSN

PLUGINS = {
    "BIZON_FAST_DESTINATIONS": (
        "attempts=tests.fixtures.claims_destinations:AttemptsFileDestination,"
        "failafter=tests.fixtures.claims_destinations:FailAfterPostgresDestination"
    ),
    "PYTHONPATH": str(REPO),
}


def _write(tmp_path: Path, text: str) -> str:
    (tmp_path / "p.yml").write_text(text)
    return "p.yml"


def _cursors(tmp_path: Path) -> list[tuple[str, str, int, int]]:
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as conn:
        return conn.execute("SELECT job_id, split_id, seq, rows FROM bizon_fast_cursors").fetchall()


def _jobs(tmp_path: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as conn:
        return conn.execute("SELECT id, status, attempt FROM bizon_fast_jobs ORDER BY created_at").fetchall()


# ---- README: the vectorized sql: / polars: transforms

ROWS = 60_000
SQL = "SELECT id, amount * 2 AS amount2, category FROM batch WHERE quantity > 50"
POLARS = '[pl.col("id"), (pl.col("amount") * 2).alias("amount2"), pl.col("category").str.to_uppercase().alias("cat")]'


def _by_polars(kind: str) -> pl.DataFrame:
    """The same computation done by polars directly on what the synthetic source generates."""
    frame = pl.from_arrow(expected_synthetic(ROWS))
    if kind == "sql":
        return pl.SQLContext(batch=frame).execute(SQL, eager=True)
    return frame.select(eval(POLARS, {"pl": pl}))  # noqa: S307 - the very text the pipeline runs


@pytest.mark.parametrize("kind", ["sql", "polars"])
def test_sql_and_polars_transforms_compute_what_polars_computes(tmp_path: Path, cli, kind: str) -> None:
    """README: "the vectorized `sql:` (polars SQL over the table `batch`) / `polars:` expressions"."""
    code = SQL if kind == "sql" else POLARS
    config = _write(
        tmp_path,
        f"""
name: tx-{kind}
source: {{name: synthetic, stream: events, rows: {ROWS}, splits: 4, batch_rows: 5000}}
transforms:
  - label: t
    {kind}: {json.dumps(code)}
destination: {{name: file, config: {{destination_id: out/events, format: parquet, buffer_size: 0}}}}
engine: {{runner: {{config: {{max_workers: 2}}}}}}
""",
    )
    res = cli("run", config, "--quiet")
    assert res.returncode == 0, res.stderr
    got = pl.from_arrow(ds.dataset(tmp_path / "out" / "events", format="parquet").to_table()).sort("id")
    want = _by_polars(kind).sort("id")
    assert 0 < want.height <= ROWS and (kind == "polars") == (want.height == ROWS), "the filter must filter"
    assert got.columns == want.columns, f"columns {got.columns} != {want.columns}"
    assert got.height == want.height, f"{got.height} rows written, polars computes {want.height}"
    assert got.equals(want), "a value differs from polars' own result"


# ---- README: each write is retried 3 times (0.5 s, 1 s, 2 s)


def _retry_config(tmp_path: Path, fail_first: int) -> str:
    # one split, one batch, one consumer: every attempt is the same write, and nothing else is written meanwhile
    return _write(
        tmp_path,
        f"""
name: retries
source: {{name: synthetic, stream: events, rows: 1000, splits: 1}}
destination: {{name: attempts, config: {{destination_id: out/events, format: parquet, buffer_size: 0,
  fail_first_writes: {fail_first}}}}}
engine: {{runner: {{config: {{max_workers: 1, max_restarts: 0}}}}}}
""",
    )


def _attempts(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]


def test_a_write_is_retried_three_times_after_half_one_and_two_seconds(tmp_path: Path, cli) -> None:
    """README: "each write is retried 3 times (0.5 s, 1 s, 2 s)": 3 failures, then the 4th attempt lands."""
    res = cli("run", _retry_config(tmp_path, 3), "--quiet", env=PLUGINS)
    assert res.returncode == 0, res.stderr
    attempts = _attempts(tmp_path)
    assert len(attempts) == 4, attempts
    assert len({(a["split"], a["first"], a["last"]) for a in attempts}) == 1, "the retries must be of the same write"
    gaps = [b["t"] - a["t"] for a, b in zip(attempts, attempts[1:], strict=False)]
    for gap, delay in zip(gaps, (0.5, 1.0, 2.0), strict=True):
        # the sleep is a floor; above it only the write's own time and the machine's load (generous ceiling)
        assert delay - 0.01 <= gap <= delay + 0.75, f"gaps {[round(g, 3) for g in gaps]} != 0.5, 1, 2 s"
    assert ds.dataset(tmp_path / "out" / "events", format="parquet").count_rows() == 1000


def test_a_write_failing_four_times_fails_the_job_and_commits_nothing(tmp_path: Path, cli) -> None:
    """README: the retries are 3: a 4th failure fails the job, and no cursor is committed for that batch."""
    res = cli("run", _retry_config(tmp_path, 4), "--quiet", env=PLUGINS)
    assert res.returncode == 1, res.stderr
    assert "transient destination error" in res.stderr
    attempts = _attempts(tmp_path)
    assert len(attempts) == 4, f"{len(attempts)} attempts: expected the write and 3 retries"
    [(split, first)] = {(a["split"], a["first"]) for a in attempts}
    committed = [c for c in _cursors(tmp_path) if c[1] == split and c[2] >= first and c[3] > 0]
    assert not committed, f"a cursor was committed for the batch that was never written: {committed}"
    assert [status for _, status, _ in _jobs(tmp_path)] == ["failed"]


# ---- README: incremental watermark advanced only on success


START = datetime(2024, 1, 1, tzinfo=UTC)
LATER = datetime(2030, 1, 1, tzinfo=UTC)


def _watermark(tmp_path: Path) -> bytes:
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as conn:
        [(value,)] = conn.execute("SELECT value FROM bizon_fast_watermarks").fetchall()
    return value


def _watermark_max(value: bytes) -> datetime:
    stored = msgspec.msgpack.decode(value, type=StoredWatermark).max
    return stored if isinstance(stored, datetime) else datetime.fromisoformat(stored)


def test_incremental_watermark_stays_when_the_run_fails_and_the_rerun_loses_nothing(
    tmp_path: Path, cli, pg_admin, pg_schema: str
) -> None:
    """README: "`incremental` (a real watermark: max(`cursor_field`) over committed batches, advanced only when
    the job succeeds)": a run whose destination fails after some batches leaves the stored watermark as it was,
    and the next successful run delivers every new row exactly once."""
    conn, schema = pg_admin, pg_schema
    conn.execute(f"CREATE TABLE {schema}.src (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL)")
    insert = (
        f"INSERT INTO {schema}.src SELECT g, 'r' || g, %s + g * interval '1 s' FROM generate_series(%s::int, %s::int) g"
    )
    conn.execute(insert, (START, 1, 20_000))
    config = _write(
        tmp_path,
        f"""
name: inc
source: {{name: postgres, stream: {schema}.src, dsn: "{PG_DSN}", splits: 4, chunk_rows: 2000,
  sync_mode: incremental, cursor_field: updated_at}}
destination: {{name: failafter, config: {{dsn: "{PG_DSN}", destination_id: {schema}.dst, buffer_size: 0,
  ok_writes: 3}}}}
engine: {{queue: {{config: {{batch_size_mb: 0.05}}}}, runner: {{config: {{max_workers: 2, max_restarts: 0}}}}}}
""",
    )
    res = cli("run", config, "--quiet", env=PLUGINS)
    assert res.returncode == 0, res.stderr
    first = _watermark(tmp_path)
    assert _watermark_max(first) == START + timedelta(seconds=20_000)

    conn.execute(insert, (LATER, 20_001, 60_000))
    (tmp_path / "dest-fail.flag").touch()
    res = cli("run", config, "--quiet", env=PLUGINS)
    assert res.returncode == 1, res.stderr
    assert "destination unavailable after some batches" in res.stderr
    [_, (failed_job, status, _)] = _jobs(tmp_path)
    assert status == "failed"
    committed = sum(rows for job, _, _, rows in _cursors(tmp_path) if job == failed_job)
    assert 0 < committed < 40_000, f"{committed} rows committed: the destination must fail part-way"
    assert _watermark(tmp_path) == first, "a failed run advanced the watermark"

    (tmp_path / "dest-fail.flag").unlink()
    res = cli("run", config, "--quiet", env=PLUGINS)
    assert res.returncode == 0, res.stderr
    count, distinct, low, high = conn.execute(
        f"SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {schema}.dst"
    ).fetchone()
    assert (count, distinct, low, high) == (60_000, 60_000, 1, 60_000), "rows lost or duplicated across the failure"
    assert _watermark_max(_watermark(tmp_path)) == LATER + timedelta(seconds=60_000)


# ---- native_bench/README.md: a run's rate counts only when its output was read back and is right


def test_native_bench_refuses_a_rate_for_a_run_that_wrote_the_wrong_rows(tmp_path: Path) -> None:
    """A run that exits 0 but wrote half its rows is a failed run: no rate is reported for it."""
    from native_bench import pipelines, verify
    from native_bench.rounds import summarize

    config = pipelines.synthetic_pipeline("half", 20_000, "file", {"format": "parquet"}, splits=2)
    config["transforms"] = [{"label": "half", "sql": "SELECT * FROM batch WHERE id % 2 = 0"}]
    verify.FAILURES.clear()
    stats = pipelines.run_bizon_fast(config, workers=1, scratch=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert not stats.ok and stats.rows_written == 10_000
    assert "wrong output: 10,000 rows" in (stats.verify_error or "") and verify.FAILURES
    summary = summarize([stats], 20_000)
    assert summary["rows_per_s"] is None and "wrong output" in summary["failure"]

    del config["transforms"]
    good = pipelines.run_bizon_fast(config, workers=1, scratch=tmp_path)
    assert good.ok and good.rows_written == 20_000, good.failure()
    assert summarize([good], 20_000)["rows_per_s"] == pytest.approx(20_000 / good.wall_s)


def test_native_bench_fills_only_the_marked_figures() -> None:
    """--update-readme rewrites what sits between a block's markers and nothing else, in every document."""
    from native_bench.report import fill_markers

    text = (
        "keep\n<!-- native_bench:begin a -->old a<!-- native_bench:end a -->\n"
        "<!-- native_bench:begin b -->old b<!-- native_bench:end b -->\nkeep too\n"
    )
    new, filled = fill_markers(text, {"a": "NEW"})
    assert filled == ["a"]
    assert new == text.replace("old a", "NEW")


# ---- README "Running pipelines": --workers overrides the YAML only when given; logs in .bizon_fast/logs/


def test_workers_flag_overrides_the_yaml_only_when_given(tmp_path: Path, cli) -> None:
    """README: "`-w 2`  # --workers overrides the YAML only when given" (the summary names the workers)."""
    config = _write(
        tmp_path,
        """
name: workers
source: {name: synthetic, stream: events, rows: 100000, splits: 4}
destination: {name: noop, config: {buffer_size: 0}}
engine: {runner: {config: {max_workers: 1}}}
""",
    )
    from_yaml = cli("run", config)
    assert from_yaml.returncode == 0, from_yaml.stderr
    assert "1 producers, 1 consumers" in from_yaml.stdout, from_yaml.stdout
    from_flag = cli("run", config, "-w", "2")
    assert from_flag.returncode == 0, from_flag.stderr
    assert "2 producers, 2 consumers" in from_flag.stdout, from_flag.stdout


def test_a_run_logs_to_dot_bizon_fast_logs_by_default(tmp_path: Path) -> None:
    """README: "Each run writes its log to `.bizon_fast/logs/` (or `$BIZON_FAST_LOG_DIR`)"."""
    import os
    import subprocess
    import sys

    config = _write(
        tmp_path,
        "name: logs\nsource: {name: synthetic, stream: events, rows: 1000, splits: 1}\n"
        "destination: {name: noop, config: {buffer_size: 0}}\n",
    )
    env = {k: v for k, v in os.environ.items() if k != "BIZON_FAST_LOG_DIR"}
    res = subprocess.run(
        [sys.executable, "-m", "bizon_fast", "run", config, "--quiet", "-w", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    logs = list((tmp_path / ".bizon_fast" / "logs").glob("*.log"))
    assert logs and all(p.stat().st_size > 0 for p in logs), f"no log written under .bizon_fast/logs: {logs}"


def test_plain_progress_prints_a_line_every_five_seconds_when_not_a_terminal(tmp_path: Path) -> None:
    """README: "when stdout is not a terminal a plain `progress:` line is printed every 5 s" (on stderr)."""
    (tmp_path / "p.yml").write_text(
        """
name: progress
source: {name: synthetic, stream: events, rows: 240000, splits: 1, batch_rows: 10000}
destination: {name: slow_file, config: {destination_id: out/events, format: parquet, buffer_size: 0,
              write_delay_s: 0.5}}
engine: {queue: {config: {batch_size_mb: 0.5}}, runner: {config: {max_workers: 1}}}
"""
    )
    env = {
        **os.environ,
        "BIZON_FAST_LOG_DIR": str(tmp_path / "logs"),
        "BIZON_FAST_DESTINATIONS": "slow_file=tests.fixtures.slow_file:SlowFileDestination",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bizon_fast", "run", "p.yml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stderr:
            if line.startswith("progress:"):
                seen.append((time.monotonic(), line.strip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.wait(timeout=120)
    reader.join(5)
    assert proc.returncode == 0
    assert len(seen) >= 2, f"expected progress lines every 5 s of a 12 s run, got {seen}"
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False)]
    assert all(4.5 <= gap <= 7.5 for gap in gaps), gaps
    line = re.compile(
        r"progress: progress read [\d,]+/240,000 rows \(\d+%\), written [\d,]+, ([\d.]+ ?k?|-) ?rows/s, "
        r"([\d.]+ ?[kMG]?|-) ?B/s(, eta [\d,]+s)?"
    )
    assert all(line.fullmatch(text) for _, text in seen), seen


@pytest.mark.parametrize("batch_mb", [1, 4, 0.5])
def test_a_ring_slot_is_twice_the_batch_size(tmp_path: Path, batch_mb: float) -> None:
    """README: ``engine.queue.config.batch_size_mb``: "a slot is twice this" (so a batch over its target fits)."""
    from bizon_fast.connectors.pipeline import parse_config
    from bizon_fast.engine.slots import ring_layout

    cfg = parse_config(
        {
            "name": "slots",
            "source": {"name": "synthetic", "stream": "events", "rows": 10},
            "destination": {"name": "noop", "config": {}},
            "engine": {"queue": {"config": {"batch_size_mb": batch_mb}}},
        }
    )
    qcfg = cfg.engine.queue.config  # what the ring dispatch hands ring_layout
    layout = ring_layout(
        batch_size_mb=qcfg.batch_size_mb,
        ring_size_mb=qcfg.ring_size_mb,
        buffer_size_mb=cfg.destination.config.buffer_size,
        producers=2,
        consumers=2,
    )
    slot_size, n_slots = layout.slot_size, layout.n_slots
    assert slot_size == 2 * batch_mb * 1024 * 1024
    assert n_slots >= 2 * 2 + 2 * 2 + 1  # every producer's grants and every consumer's held batches fit at once
