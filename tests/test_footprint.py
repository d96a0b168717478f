"""Small jobs stay small: workers sized from the job's splits, a ring that takes memory as batches reach it,
and workers that import only what their connectors use. (The peak PSS of a whole run against bizon 0.6.4 is
measured by native_bench's ``footprint`` benchmark, not asserted here.)
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from bizon_fast.connectors.pipeline import parse_config
from bizon_fast.engine.progress import Progress
from bizon_fast.engine.supervisor import Supervisor
from bizon_fast.engine.warm import warm
from bizon_fast.transport import ShmRing, StoreSpec, open_store
from tests.fixtures.inline_source import GENERATOR_SOURCE, write_source

TEST_PREFIX = "bizon_fast_test_footprint"


def _cfg(tmp_path: Path, splits: int, **runner: Any) -> Any:
    return parse_config(
        {
            "name": "footprint",
            "source": {"name": "synthetic", "stream": "events", "rows": 4_000, "splits": splits, "batch_rows": 500},
            "destination": {"name": "noop", "config": {"buffer_size": 0}},
            "engine": {
                "backend": {"type": "sqlite", "config": {"database": str(tmp_path / "state")}},
                "queue": {"type": "python_queue", "config": {"batch_size_mb": 0.01}},
                "runner": {"type": "thread", "config": {"max_workers": 4} | runner},
            },
        }
    )


@pytest.mark.parametrize(
    ("splits", "runner", "producers", "consumers"),
    [
        (1, {}, 1, 1),  # a bizon source is one split: one of each, whatever the worker count
        (3, {}, 3, 3),
        (8, {}, 4, 4),
        (1, {"consumers": 2}, 1, 2),  # a consumer count asked for by name is kept
    ],
)
def test_workers_never_outnumber_the_splits(
    tmp_path: Path, splits: int, runner: dict, producers: int, consumers: int
) -> None:
    summary = Supervisor(_cfg(tmp_path, splits, **runner), progress=Progress()).run()
    assert summary.status == "succeeded" and summary.rows == 4_000
    assert (summary.producers, summary.consumers) == (producers, consumers)


def _allocated(ring: ShmRing) -> int:
    return os.stat(ring.path).st_blocks * 512


def _batch(rows: int) -> pa.RecordBatch:
    return pa.record_batch({"x": pa.array(range(rows), pa.int64()), "s": pa.array([f"v{i}" for i in range(rows)])})


def _child_read(spec: StoreSpec, slot: int, nbytes: int, conn: Any) -> None:
    store = open_store(spec)
    batches = store.read(slot, nbytes)
    conn.send(pa.Table.from_batches(batches).equals(pa.Table.from_batches([_batch(20_000)])))
    del batches
    store.close()


def test_a_just_in_time_ring_allocates_only_what_its_batches_reach() -> None:
    slot_size, n_slots = 4 << 20, 8
    ring = ShmRing.create(slot_size, n_slots, prefix=TEST_PREFIX, prefault=False)
    try:
        assert not ring.spec.prefaulted
        assert _allocated(ring) == 0, "nothing is allocated before a batch is written"
        nbytes = ring.write(5, [_batch(20_000)])
        assert 0 < nbytes < slot_size // 4
        page = os.sysconf("SC_PAGE_SIZE")
        assert _allocated(ring) == -(-nbytes // page) * page, "exactly the pages the batch covers"
        ring.write(5, [_batch(1_000)])  # a smaller batch in the same slot: nothing more
        assert _allocated(ring) == -(-nbytes // page) * page
        ring.write(5, [_batch(20_000)])
        ours, theirs = mp.get_context("spawn").Pipe()
        child = mp.get_context("spawn").Process(target=_child_read, args=(ring.spec, 5, nbytes, theirs))
        child.start()
        assert ours.recv() is True, "a worker maps the slot on read and sees the batch"
        child.join(30)
        assert child.exitcode == 0
    finally:
        ring.destroy()


def test_a_prefaulted_ring_allocates_every_slot_up_front() -> None:
    ring = ShmRing.create(1 << 20, 4, prefix=TEST_PREFIX)
    try:
        assert ring.spec.prefaulted and _allocated(ring) >= 4 << 20
    finally:
        ring.destroy()


def test_a_worker_imports_no_connector_it_does_not_use() -> None:
    """The worker module (what the fork server preloads) and a consumer without transforms stay lean."""
    code = """
import sys
import bizon_fast.engine.worker
from bizon_fast.destination.base import DestinationContext
from bizon_fast.engine.consumer import Consumer, RingInlet
from bizon_fast.engine.spec import WorkerSpec
context = DestinationContext(job_id="j", pipeline="p", source_name="s", stream="t", sync_mode="full_refresh")
spec = WorkerSpec(role="consumer", index=0, source={}, destination_name="noop", destination={}, context=context,
                  store=None, batch_bytes=1, buffer_bytes=0, flush_timeout=0, max_held=2, parent_pid=0)
Consumer(None, spec, RingInlet(None))
heavy = ("polars", "psycopg", "google.cloud", "confluent_kafka", "pika", "adbc_driver_manager",
         "bizon_fast.transform.apply")
print(",".join(sorted(m for m in heavy if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""


_FORK_PROBE = """
import json, os, sys
import multiprocessing as mp
from bizon_fast.engine.handles import start_fork_server
from bizon_fast.engine.warm import WARM_ENV


def probe(out):
    from bizon_fast.connectors import discovery
    parsed = sorted({os.path.basename(os.path.dirname(path)) for path, _, _ in discovery._CANDIDATES})
    heavy = [m for m in ("psycopg", "adbc_driver_manager", "adbc_driver_postgresql") if m in sys.modules]
    heavy += ["bizon"] if "bizon.source.source" in sys.modules else []
    out.send(json.dumps({"heavy": heavy, "parsed": parsed, "env": WARM_ENV in os.environ}))


if __name__ == "__main__":
    start_fork_server(sys.argv[1] if sys.argv[1] != "-" else None, custom_source=sys.argv[2] == "custom")
    ctx = mp.get_context("forkserver")
    ours, theirs = ctx.Pipe()
    worker = ctx.Process(target=probe, args=(theirs,))
    worker.start()
    print(ours.recv())
    worker.join()
"""


_POSTGRES_TO_FILE = {
    "source": {"name": "postgres", "stream": "public.t", "dsn": "host=x"},
    "destination": {"name": "file"},
}


@pytest.mark.parametrize(
    ("pipeline", "custom", "heavy", "parsed"),
    [
        (_POSTGRES_TO_FILE, False, ["psycopg", "adbc_driver_manager", "adbc_driver_postgresql"], ["postgres"]),
        (
            {"source": {"name": "synthetic", "stream": "events"}, "destination": {"name": "postgres"}},
            False,
            ["psycopg"],
            [],
        ),
        ({"source": {"name": "synthetic", "stream": "events"}, "destination": {"name": "noop"}}, False, [], []),
        (
            {
                "source": {"name": "generator", "stream": "r", "source_file_path": "gen.py"},
                "destination": {"name": "noop"},
            },
            False,
            ["bizon"],
            [],
        ),
        (_POSTGRES_TO_FILE, True, ["bizon"], []),  # --custom-source replaces the file's source
        (None, False, [], []),  # no pipeline file: the worker stack alone
        ("source: [unclosed", False, [], []),  # a file that does not parse: nothing warmed, nothing raised
    ],
    ids=[
        "postgres source",
        "postgres destination",
        "no declared imports",
        "custom source file",
        "--custom-source",
        "no file",
        "broken yaml",
    ],
)
def test_the_fork_server_imports_the_connectors_the_pipeline_names(
    tmp_path: Path, pipeline: Any, custom: bool, heavy: list[str], parsed: list[str]
) -> None:
    """A forked worker finds its connector's libraries imported and its source's files parsed before it starts
    (the ~110 ms a postgres producer spent on them before its first query; a custom source's: bizon-fast's
    ``bizon`` package), and only the pipeline's own."""
    script = tmp_path / "probe.py"
    script.write_text(_FORK_PROBE)
    target = "-"
    if pipeline is not None:
        target = str(tmp_path / "pipeline.yml")
        Path(target).write_text(pipeline if isinstance(pipeline, str) else json.dumps({"name": "p", **pipeline}))
    env = {k: v for k, v in os.environ.items() if k != "BIZON_FAST_START_METHOD"}
    out = subprocess.run(
        [sys.executable, str(script), target, "custom" if custom else "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"heavy": heavy, "parsed": parsed, "env": False}, out.stderr


def test_a_custom_source_is_never_imported_by_the_fork_server(tmp_path: Path) -> None:
    """A user's source file may start threads or connect at import: the fork server must stay fit to fork, so
    warming skips it, even when its ``name`` is a built-in connector's."""
    marker = tmp_path / "imported"
    source_file = tmp_path / "mine.py"
    source_file.write_text(f"open({str(marker)!r}, 'w').close()\n")
    pipeline = tmp_path / "pipeline.yml"
    pipeline.write_text(
        json.dumps(
            {
                "name": "p",
                "source": {"name": "postgres", "stream": "s", "source_file_path": str(source_file)},
                "destination": {"name": "postgres"},
            }
        )
    )
    imported = warm(pipeline)
    assert "bizon.source.source" in imported  # bizon-fast's own bizon package, which such files derive from
    assert imported[-2:] == ["bizon_fast.connectors.destinations.postgres.destination", "psycopg"]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("source", "queue", "batches"),
    [
        ({"name": "generator", "stream": "records", "source_file_path": str(GENERATOR_SOURCE)}, {}, (5, 8)),
        (
            {"name": "generator", "stream": "records", "source_file_path": str(GENERATOR_SOURCE)},
            {"batch_size_mb": 4},
            (2, 3),
        ),
        ({"name": "synthetic", "stream": "events", "splits": 1, "payload_bytes": 32}, {}, (1, 3)),
    ],
    ids=["bizon source: 1 MiB batches", "bizon source, batch_size_mb given: kept", "synthetic source: 4 MiB"],
)
def test_a_source_that_holds_a_core_sends_smaller_batches(
    tmp_path: Path, source: dict, queue: dict, batches: tuple[int, int]
) -> None:
    """~6 MiB of rows: a bizon source's producer sends them in 1 MiB batches unless the config names a size; a
    native source keeps the 4 MiB default."""
    cfg = parse_config(
        {
            "name": "batches",
            "source": {**source, "rows": 100_000},
            "destination": {"name": "noop", "config": {"buffer_size": 0}},
            "engine": {
                "backend": {"type": "sqlite", "config": {"database": str(tmp_path / "state")}},
                "queue": {"type": "python_queue", "config": queue},
                "runner": {"type": "thread", "config": {"max_workers": 1}},
            },
        }
    )
    summary = Supervisor(cfg, progress=Progress()).run()
    assert summary.status == "succeeded" and summary.rows == 100_000
    assert batches[0] <= summary.batches <= batches[1], summary.batches


def test_a_record_larger_than_a_bizon_sources_batch_still_fits_a_slot(tmp_path: Path) -> None:
    """A bizon source sends 1 MiB batches, but its ring keeps the default's 8 MiB slots: a 3 MiB record passes."""
    # two pages: small records, then one record of 3 MiB of text
    path = write_source(
        tmp_path,
        "big",
        """
        if not pagination:
            records = [SourceRecord(id=str(i), data={"i": i}) for i in range(10)]
            return SourceIteration(next_pagination={"page": 2}, records=records)
        return SourceIteration(next_pagination={}, records=[SourceRecord(id="big", data={"text": "x" * (3 << 20)})])
        """,
    )
    cfg = parse_config(
        {
            "name": "big",
            "source": {"name": "big", "stream": "big", "source_file_path": str(path)},
            "destination": {"name": "file", "config": {"destination_id": str(tmp_path / "out"), "format": "json"}},
            "engine": {
                "backend": {"type": "sqlite", "config": {"database": str(tmp_path / "state")}},
                "runner": {"type": "thread", "config": {"max_workers": 1}},
            },
        }
    )
    summary = Supervisor(cfg, progress=Progress()).run()
    assert summary.status == "succeeded" and summary.rows == 11
    assert (tmp_path / "out.json").stat().st_size > 3 << 20
