"""Helpers for fault injection: SIGKILL a run's workers, check what it wrote, read its log and checkpoint.

Starting a run and finding its workers (``start_run``, ``workers_of``) live in ``native_bench.services``.
"""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.json as pj

from bizon_fast.connectors.sources.synthetic.source import SCHEMA as SYNTHETIC_SCHEMA
from native_bench.services import workers_of


def kill_workers_randomly(
    proc: subprocess.Popen, kills: int, rng: random.Random, roles: tuple[str, ...] = ("producer", "consumer")
) -> list[str]:
    """SIGKILL ``kills`` random workers at random moments while ``proc`` runs; return what was killed."""
    killed: list[str] = []
    while len(killed) < kills and proc.poll() is None:
        time.sleep(rng.uniform(0.2, 0.8))
        victims = [w for w in workers_of(proc.pid) if any(w.name().startswith(f"bf-{r}") for r in roles)]
        if not victims:
            continue
        victim = rng.choice(victims)
        try:
            name = victim.name()
            victim.send_signal(signal.SIGKILL)
            killed.append(name)
        except psutil.NoSuchProcess:
            pass
    return killed


def check_parquet_ids(path: Path, rows: int) -> None:
    table = ds.dataset(path, format="parquet").to_table(columns=["id"])
    assert table.num_rows == rows, f"expected {rows} rows, found {table.num_rows}"
    ids = table.column("id")
    assert pc.count_distinct(ids).as_py() == rows, "duplicate ids"
    assert pc.min(ids).as_py() == 0 and pc.max(ids).as_py() == rows - 1, "ids missing"


def check_json_ids(path: Path, rows: int) -> None:
    seen: set[int] = set()
    count = 0
    with open(path, "rb") as fh:
        for line in fh:
            count += 1
            seen.add(int(json.loads(line)["source_record_id"]))
    assert count == rows, f"expected {rows} lines, found {count}"
    assert seen == set(range(rows)), "duplicate or missing ids"


def expected_synthetic(rows: int, seed: int = 0, payload_bytes: int = 32) -> pa.Table:
    """What the synthetic source yields for ids ``0..rows-1``: its values are a pure function of (seed, id)."""
    from bizon_fast.connectors.sources.synthetic.source import SyntheticGenerator

    gen = SyntheticGenerator(seed, payload_bytes)
    step = 1_000_000
    return pa.Table.from_batches([gen.batch(lo, min(rows, lo + step)) for lo in range(0, rows, step)])


def assert_synthetic_exact(table: pa.Table, rows: int, seed: int = 0, payload_bytes: int = 32) -> None:
    """Every id once and every value what the source generated: a replay that wrote other values (a torn or
    regrouped part, a wrong split position) fails here even when the ids are all present once."""
    expected = expected_synthetic(rows, seed, payload_bytes)
    names = expected.schema.names
    missing = [n for n in names if n not in table.schema.names]
    assert not missing, f"columns missing from the output: {missing}"
    assert table.num_rows == rows, f"expected {rows} rows, found {table.num_rows}"
    got = table.select(names).sort_by("id")
    assert pc.count_distinct(got["id"]).as_py() == rows, "duplicate ids"
    for name in names:
        want = expected[name]
        have = got[name].cast(want.type) if got[name].type != want.type else got[name]
        if not have.equals(want):
            diff = pc.not_equal(have, want)
            first = pc.index(diff, True).as_py()
            raise AssertionError(
                f"column {name!r} differs from the source at id {first}: {have[first]} != {want[first]}"
            )


def assert_synthetic_parquet_exact(path: Path, rows: int, seed: int = 0, payload_bytes: int = 32) -> None:
    assert_synthetic_exact(ds.dataset(path, format="parquet").to_table(), rows, seed, payload_bytes)


def read_synthetic_json(path: Path) -> pa.Table:
    """The synthetic columns of every line of a json output (the envelope's ``source_data``), typed as the source.

    Parsed by Arrow, not line by line in Python: the crash tests write millions of lines. Each line's
    ``source_record_id`` must be its row's id.
    """
    outer = pj.read_json(
        path,
        parse_options=pj.ParseOptions(
            explicit_schema=pa.schema([("source_record_id", pa.string()), ("source_data", pa.string())]),
            unexpected_field_behavior="ignore",
        ),
    )
    if outer.num_rows == 0:
        return SYNTHETIC_SCHEMA.empty_table()
    lines = pc.binary_join_element_wise(outer["source_data"].combine_chunks(), pa.scalar("\n"), "")
    text = lines.cast(pa.large_string())  # its value buffer is the lines, back to back: one parse, no copy
    offsets = np.frombuffer(text.buffers()[1], np.int64)[text.offset : text.offset + len(text) + 1]
    body = text.buffers()[2][int(offsets[0]) : int(offsets[-1])]
    data = pj.read_json(pa.BufferReader(body), parse_options=pj.ParseOptions(explicit_schema=SYNTHETIC_SCHEMA))
    ids = pc.cast(outer["source_record_id"], pa.int64())
    assert ids.equals(data["id"]), "a line's source_record_id is not its row's id"
    return data


# ---------------------------------------------------------------- what a run left: its log, its checkpoint


def run_log(tmp_path: Path, pid: int) -> str:
    """The log file of the run whose supervisor had ``pid`` (``start_run`` puts logs in ``tmp_path/logs``)."""
    [path] = (tmp_path / "logs").glob(f"*-{pid}.log")
    return path.read_text()


def fault_line(log: str, point: str) -> tuple[str, int]:
    """(role-index of the process that logged the fault, its pid); exactly one fault in the run."""
    found = re.findall(
        rf" (\S+) bizon_fast\.faults: fault point {re.escape(point)} reached \(pass \d+\): SIGKILL pid (\d+)", log
    )
    assert len(found) == 1, f"expected one fault line for {point}, found {found}"
    return found[0][0], int(found[0][1])


def job_rows(tmp_path: Path, database: str = "bizon.sqlite3") -> list[tuple]:
    """(id, status, attempt, error) of every job in the run's sqlite checkpoint, oldest first."""
    with sqlite3.connect(tmp_path / database) as conn:
        return conn.execute("SELECT id, status, attempt, error FROM bizon_fast_jobs ORDER BY created_at").fetchall()


def committed_rows(tmp_path: Path, database: str = "bizon.sqlite3") -> int:
    """Rows the checkpoint holds as committed; 0 while the run has not created its tables or holds a write lock
    (so a test can poll it during a run)."""
    try:
        with sqlite3.connect(tmp_path / database, timeout=0.1) as conn:
            return conn.execute("SELECT COALESCE(SUM(rows), 0) FROM bizon_fast_cursors").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
