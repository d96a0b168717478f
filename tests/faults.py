"""Helpers for fault injection: run the CLI as a user would and SIGKILL its workers or the supervisor."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.compute as pc
import pyarrow.dataset as ds


def start_run(cwd: Path, config: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "BIZON_FAST_LOG_DIR": str(cwd / "logs")}
    return subprocess.Popen(
        [sys.executable, "-m", "bizon_fast", "run", config, "--quiet", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def workers_of(pid: int, prefix: str = "bf-") -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)  # workers are forked by a fork server
    except psutil.NoSuchProcess:
        return []
    out = []
    for child in children:
        try:
            if child.name().startswith(prefix):
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


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
