"""Crash recovery, measured: SIGKILL random workers during a real run and time their replacements.

Reports kills survived, rows lost and duplicated (both must be 0), and the time from a worker's death
to its replacement producing (producers: its first filled slot; consumers: its first durable write),
read from the supervisor's log. ``python -m native_bench.recovery [--quick]``.
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds

from native_bench.services import start_run, workers_of

RECOVERED = re.compile(r"(\S+) working again ([0-9.]+)s after its predecessor died")
UP = re.compile(r"(\S+) replacement up ([0-9.]+)s after its predecessor died")


def run(quick: bool = False) -> list[dict]:
    rows = 6_000_000 if quick else 30_000_000
    kills = 4 if quick else 10
    with tempfile.TemporaryDirectory(prefix="bf-recovery-") as tmp:
        cwd = Path(tmp)
        (cwd / "p.yml").write_text(
            f"""
name: recovery
source: {{name: synthetic, stream: events, rows: {rows}, splits: 16, batch_rows: 20000}}
destination: {{name: file, config: {{destination_id: out/events, format: parquet, buffer_size: 2}}}}
engine: {{queue: {{config: {{batch_size_mb: 1}}}}, runner: {{config: {{max_workers: 2, max_restarts: 100}}}}}}
"""
        )
        rng = random.Random(7)
        started = time.monotonic()
        proc = start_run(cwd, "p.yml")
        killed: list[str] = []
        while len(killed) < kills and proc.poll() is None:
            time.sleep(rng.uniform(0.8, 1.6))
            victims = [w for w in workers_of(proc.pid) if w.name().startswith(("bf-producer", "bf-consumer"))]
            if victims:
                victim = rng.choice(victims)
                try:
                    name = victim.name()
                    victim.send_signal(signal.SIGKILL)
                    killed.append(name)
                except Exception:  # noqa: BLE001 - it may have exited on its own
                    pass
        _, err = proc.communicate(timeout=600)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(f"run failed: {err}")
        table = ds.dataset(cwd / "out" / "events").to_table(columns=["id"])
        distinct = pc.count_distinct(table["id"]).as_py()
        log_text = "".join(p.read_text() for p in (cwd / "logs").glob("*.log"))
        recoveries = [float(m.group(2)) for m in RECOVERED.finditer(log_text)]
        producers = [float(m.group(2)) for m in RECOVERED.finditer(log_text) if m.group(1).startswith("producer")]
        ups = [float(m.group(2)) for m in UP.finditer(log_text)]
    return [
        {
            "benchmark": "recovery",
            "rows": rows,
            "kills": len(killed),
            "rows_lost": rows - distinct,
            "duplicates": table.num_rows - distinct,
            "recovery_median_s": statistics.median(recoveries) if recoveries else None,
            "recovery_max_s": max(recoveries) if recoveries else None,
            "recoveries": len(recoveries),
            "producer_recovery_median_s": statistics.median(producers) if producers else None,
            "replacement_up_median_s": statistics.median(ups) if ups else None,
            "wall_s": wall,
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    for row in run(parser.parse_args().quick):
        for key, value in row.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
