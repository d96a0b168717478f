"""Kafka JSON topic -> Parquet: bizon-fast's ``kafka`` source vs the one-process script a user would write, and bizon.

Why: the source should run at the speed of its client library. The reference is what a user would write
without an engine (``native_bench/fixtures/kafka_reference.py``): one process, confluent-kafka's batch
``consume(num_messages=10000)``, the values joined with newlines and parsed by ``pyarrow.json.read_json``,
a ``ParquetWriter``; and that script with ``--drain`` (``consume()`` without a wait while messages are
queued, as the source reads: a blocking ``consume(n, timeout)`` waits for ``n`` messages or the timeout).
bizon 0.6.4's own kafka source (its file destination writes NDJSON only) runs in the same table on a
``BIZON_SHARE`` times smaller topic (it is far slower), from its own venv (``native_bench/.venvs``).

Method: a Tansu broker (in memory, loopback); a topic of ``PARTITIONS`` partitions filled beforehand (not
timed) with JSON messages ``{"id", "user", "amount", "active", "event_at"}`` (``event_at`` with a UTC offset);
contenders interleaved round by round, the median reported. bizon-fast runs ``bizon-fast run`` at
``WORKERS`` workers with ``record_layout: columns`` and with the default ``bizon`` layout. Every run's output
is read back: exactly the topic's rows, each id once, or the run fails. Rates are rows over the wall time
of the whole command (interpreter start, imports and the broker's metadata round trips included).

    .venv/bin/python -m native_bench.kafka_source [--quick]     # 1M messages (--quick: 100k), bizon 50x fewer
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from native_bench import pipelines, services, venvs, verify
from native_bench.proctree import RunStats, measure
from native_bench.result import fmt, table
from native_bench.rounds import interleave, summarize

ROWS, QUICK_ROWS = 1_000_000, 100_000
BIZON_SHARE = 50  # bizon reads a topic this many times smaller (it moves ~1k rows/s here)
ROUNDS, QUICK_ROUNDS = 3, 1
WORKERS = 2
PARTITIONS = 4
BIZON_REQUIREMENTS = ["bizon[kafka]==0.6.4"]
REFERENCE = pipelines.FIXTURES / "kafka_reference.py"

SCRIPT = "one-process script (confluent-kafka consume + pyarrow.json + ParquetWriter)"
TUNED = "the same script, consume() without a wait while messages are queued (--drain)"
COLUMNS = f"bizon-fast, record_layout: columns, {WORKERS} workers"
BIZON_LAYOUT = f"bizon-fast, record_layout: bizon, {WORKERS} workers"
BIZON = "bizon 0.6.4 kafka source -> NDJSON"


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    with (
        tempfile.TemporaryDirectory(prefix="native_bench_tansu_") as tmp,
        services.tansu(Path(tmp) / "tansu.log") as url,
    ):
        yield url


def fill_topic(bootstrap: str, rows: int) -> str:
    """A new topic of ``PARTITIONS`` partitions holding ``rows`` JSON messages, ids 0..rows-1 dealt round-robin."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench_src_{secrets.token_hex(4)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]).values():
        future.result(15)
    seconds = pa.array(range(1_704_067_200, 1_704_067_200 + rows), pa.int64()).cast(pa.timestamp("s"))
    stamps = pc.strftime(seconds, "%Y-%m-%dT%H:%M:%S+00:00").to_pylist()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "queue.buffering.max.messages": 500_000})
    for i, stamp in enumerate(stamps):
        value = (
            f'{{"id":{i},"user":"user{i % 1000}","amount":{i / 4},"active":{"true" if i % 2 else "false"},'
            f'"event_at":"{stamp}"}}'
        ).encode()
        while True:
            try:
                producer.produce(topic, value=value, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"could not produce the {rows:,} benchmark messages to {topic}")
    return topic


def pipeline(topic: str, bootstrap: str, layout: str) -> dict[str, Any]:
    return {
        "name": f"bench_kafka_{layout}",
        "source": {
            "name": "kafka",
            "stream": "topic",
            "topics": [{"name": topic, "destination_id": topic}],
            "bootstrap_servers": bootstrap,
            "group_id": f"bench_{secrets.token_hex(3)}",
            "message_encoding": "utf-8",
            "record_layout": layout,
            "consumer_config": {"security.protocol": "PLAINTEXT"},
        },
        "destination": {"name": "file", "config": {"destination_id": "out/events", "format": "parquet"}},
        "engine": {"runner": {"config": {"max_workers": WORKERS}}},
    }


def _parquet_ids(folder: Path, column: str) -> verify.Written | None:
    files = [p for p in sorted((folder / "out").rglob("*.parquet")) if not p.name.startswith((".", "_"))]
    if not files:
        return None
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    ids = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=[column]).column(column)
    return verify.Written(len(ids), pc.count_distinct(ids).as_py(), f"{len(files)} Parquet files")


def run_bizon_fast(scratch: Path, topic: str, bootstrap: str, layout: str, rows: int) -> RunStats:
    config = pipeline(topic, bootstrap, layout)

    def body(folder: Path) -> RunStats:
        (folder / "out").mkdir()
        (folder / "pipeline.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {**os.environ, "BIZON_FAST_LOG_DIR": str(folder / "logs")}
        cmd = [sys.executable, "-m", "bizon_fast", "run", "pipeline.yml", "--workers", str(WORKERS), "--quiet"]
        return measure(cmd, cwd=folder, env=env, timeout=pipelines.TIMEOUT_S)

    column = "id" if layout == "columns" else "source_record_id"
    return pipelines.in_fresh_dir(scratch, body, rows, lambda folder: _parquet_ids(folder, column))


def run_reference(scratch: Path, topic: str, bootstrap: str, rows: int, *flags: str) -> RunStats:
    args = [str(REFERENCE), bootstrap, topic, "out/events.parquet", *flags]
    return pipelines.run_python(sys.executable, args, scratch=scratch, expected_rows=rows)


def run_bizon(venv: venvs.Venv, scratch: Path, topic: str, bootstrap: str, rows: int) -> RunStats:
    """bizon 0.6.4's kafka source (manual assignment, ``full_refresh``) -> its file destination (NDJSON).

    bizon writes some messages twice or more here: after each ``consume()`` it advances only the partition of
    the *last* message and re-assigns every partition, so the other partitions' messages of that call are read
    again (measured: 87,518 lines for 50,000 messages at ``batch_size: 10000``, 51,500 at 1,000, which is
    ~3x slower). Its run counts as exact when every id is there; its rate is distinct rows over wall time, and
    the lines it wrote are kept in ``extra["lines_written"]``.
    """
    config = {
        "name": "bench_kafka_bizon",
        "source": {
            "name": "kafka",
            "stream": "topic",
            "sync_mode": "full_refresh",
            "topics": [{"name": topic, "destination_id": topic}],
            "bootstrap_servers": bootstrap,
            "group_id": f"bench_{secrets.token_hex(3)}",
            "message_encoding": "utf-8",
            "batch_size": 10_000,  # its fastest here (1,000: ~3x slower, fewer duplicates)
            "consumer_timeout": 2,
            "consumer_config": {"security.protocol": "PLAINTEXT", "auto.offset.reset": "earliest"},
            "authentication": {"type": "basic", "params": {"username": "unused", "password": "unused"}},
        },
        "destination": {"name": "file", "config": {"destination_id": "out/events", "format": "json"}},
    }

    def body(folder: Path) -> RunStats:
        (folder / "out").mkdir()
        (folder / "pipeline.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        bizon = Path(venv.python).parent / "bizon"
        return measure([str(bizon), "run", "pipeline.yml"], cwd=folder, timeout=pipelines.TIMEOUT_S)

    lines: list[int] = []

    def distinct(folder: Path) -> verify.Written | None:
        found = pipelines.default_output(folder)
        if found is None or found.distinct_ids is None:
            return found
        lines.append(found.rows)
        return verify.Written(found.distinct_ids, found.distinct_ids, f"{found.where}, {found.rows:,} lines")

    stats = pipelines.in_fresh_dir(scratch, body, rows, distinct)
    stats.extra["lines_written"] = lines[0] if lines else None
    return stats


def run(quick: bool) -> list[dict]:
    rows = QUICK_ROWS if quick else ROWS
    bizon_rows = rows // BIZON_SHARE
    rounds = QUICK_ROUNDS if quick else ROUNDS
    bizon_venv = venvs.ensure("bizon-kafka", BIZON_REQUIREMENTS, "import bizon.cli.main, confluent_kafka")
    with tansu() as bootstrap, tempfile.TemporaryDirectory(prefix="native_bench_kafka_source_") as tmp:
        scratch = Path(tmp)
        topic = fill_topic(bootstrap, rows)
        cases: dict[str, tuple[int, Callable[[], RunStats]]] = {
            SCRIPT: (rows, lambda: run_reference(scratch, topic, bootstrap, rows)),
            TUNED: (rows, lambda: run_reference(scratch, topic, bootstrap, rows, "--drain")),
            COLUMNS: (rows, lambda: run_bizon_fast(scratch, topic, bootstrap, "columns", rows)),
            BIZON_LAYOUT: (rows, lambda: run_bizon_fast(scratch, topic, bootstrap, "bizon", rows)),
        }
        if bizon_venv.python:
            small = fill_topic(bootstrap, bizon_rows)
            cases[BIZON] = (bizon_rows, lambda: run_bizon(bizon_venv, scratch, small, bootstrap, bizon_rows))
        runs = interleave({name: fn for name, (_, fn) in cases.items()}, rounds)
    out = []
    for name, (n, _) in cases.items():
        summary = summarize(runs[name], n)
        out.append({"contender": name, **{k: v for k, v in summary.items() if not k.endswith("_rounds")}})
        out[-1]["walls_s"] = [round(w, 2) for w in summary["wall_s_rounds"]]
        out[-1]["lines_written"] = max(
            (r.extra.get("lines_written") or r.rows_written or 0 for r in runs[name]), default=None
        )
    if not bizon_venv.python:
        out.append({"contender": BIZON, "failure": bizon_venv.problem})
    reference = next((r.get("rows_per_s") for r in out if r["contender"] == SCRIPT), None)
    for r in out:
        rate = r.get("rows_per_s")
        r["vs_script"] = round(rate / reference, 2) if rate and reference else None
    return out


def markdown(rows: list[dict]) -> str:
    headers = ["contender", "rows (distinct)", "rows written", "wall s", "rows/s", "vs script", "CPU s", "peak PSS MB"]
    cells = [
        [
            r["contender"],
            fmt(r.get("rows")),
            fmt(r.get("lines_written")),
            fmt(r.get("wall_s"), 2),
            fmt(r.get("rows_per_s")),
            fmt(r.get("vs_script"), 2, "x"),
            fmt(r.get("cpu_s"), 1),
            fmt(r.get("peak_pss_mb")),
            str(r.get("walls_s", "")),
            r.get("failure") or "",
        ]
        for r in rows
    ]
    return table([*headers, "all walls s", "failure"], cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} messages instead of {ROWS:,}")
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}; median of {QUICK_ROUNDS if args.quick else ROUNDS} rounds")
    print(markdown(run(args.quick)))


if __name__ == "__main__":
    main()
