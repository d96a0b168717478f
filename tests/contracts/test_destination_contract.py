"""The destination contract (``bizon_fast/destination/base.py``), asserted the same way for every built-in
destination against its real local service: replays never duplicate, ``prepare(committed)`` drops writes past
the committed seq, publishing twice is harmless, a full refresh replaces and an incremental (or stream) run
appends, an empty run publishes what the destination documents.

What each destination declares is read from its class (``capabilities``): an at-least-once destination is
held to "every row at least once", and one that appends in every sync mode (it cannot reset) to appending.
``noop`` and ``logger`` keep nothing to read back: they go through the same calls, and their declarations
are checked.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from bizon_fast.connectors.registry import destination_class
from tests.contracts.destinations import (
    Job,
    Target,
    batches,
    bigquery_target,
    file_target,
    ids,
    postgres_target,
)

DESTINATIONS = ["file", "noop", "logger", "postgres", "bigquery", "bigquery_streaming", "bigquery_streaming_v2"]
#: the destinations whose replays may repeat rows (a log line, an insertAll row cannot be taken back)
AT_LEAST_ONCE = {"logger", "bigquery_streaming"}

SERVICE = pytest.mark.service  # marked here: the target fixture asks for its service only once it knows the case
CASES = [
    "file-json",
    "file-parquet",
    "noop",
    "logger",
    pytest.param("postgres", marks=SERVICE),
    pytest.param("bigquery", marks=SERVICE),
    pytest.param("bigquery_streaming", marks=SERVICE),
    pytest.param("bigquery_streaming_v2", marks=SERVICE),
]


@pytest.fixture(params=CASES)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    case = request.param
    if case.startswith("file-"):
        return file_target(case.removeprefix("file-"), tmp_path)
    if case in ("noop", "logger"):
        return Target(case, {}, readable=False)
    if case == "postgres":
        return postgres_target(request.getfixturevalue("pg_admin"), request.getfixturevalue("pg_schema"))
    return bigquery_target(case, request.getfixturevalue("bq_emulator"), request.getfixturevalue("bq_dataset"))


def effectively_once(target: Target) -> bool:
    return target.cls.capabilities.effectively_once


def replaces_on_full_refresh(target: Target) -> bool:
    """A destination that cannot reset a stream appends in every sync mode (bizon's insertAll did)."""
    return target.cls.capabilities.supports_reset


def run(target: Target, job_id: str, sync_mode: str, written: list[pa.RecordBatch], split: str = "s0") -> None:
    """A whole job: prepare, one write per batch, publish -- twice, which must be harmless in every sync mode
    (an append published again must not append again)."""
    job = Job(target, job_id, sync_mode)
    job.prepare({})
    for seq, batch in enumerate(written):
        job.write(split, seq, seq, [batch])
    job.publish()
    job.publish()
    job.close()


def assert_holds(target: Target, expected: list[int]) -> None:
    """The published ids are ``expected``: exactly for an effectively-once destination, each at least once for
    an at-least-once one; nothing to read for a destination that keeps nothing."""
    got = target.published()
    if not target.readable:
        assert got is None
    elif effectively_once(target):
        assert got == sorted(expected), f"{target.name}: {len(got)} rows published, expected {len(expected)}"
    else:
        assert sorted(set(got)) == sorted(set(expected)), f"{target.name}: rows missing or foreign"


@pytest.mark.parametrize("name", DESTINATIONS)
def test_each_destination_declares_its_delivery(name: str) -> None:
    cls = destination_class(name)
    assert cls.name == name
    assert cls.capabilities.effectively_once == (name not in AT_LEAST_ONCE)


def test_replays_never_duplicate_and_publishing_twice_is_harmless(target: Target) -> None:
    """Writes of (split, seq range) replayed in other groupings and exactly; the publish repeated by the same
    supervisor and by a rerun of the job (the supervisor died before marking it succeeded)."""
    s0, s1 = batches(0, 8), batches(1, 2)
    job = Job(target, "job-1")
    job.prepare({})
    job.write("s0", 0, 3, s0[0:4])  # written by a consumer that died before reporting ...
    job.write("s0", 0, 1, s0[0:2])  # ... replayed in other groupings
    job.write("s0", 2, 5, s0[2:6])
    job.write("s0", 6, 7, s0[6:8])
    job.write("s0", 6, 7, s0[6:8])  # the same range again
    job.write("s1", 0, 1, s1)
    job.publish()
    job.publish()
    job.close()
    assert_holds(target, ids(s0 + s1))
    rerun = Job(target, "job-1")
    rerun.prepare({"s0": 7, "s1": 1})
    rerun.publish()
    rerun.close()
    assert_holds(target, ids(s0 + s1))


def crash_past_the_committed_seq(target: Target, s0: list, s1: list) -> None:
    """A run that wrote s0 0..5 and s1 0..1 and died with only s0 0..3 committed."""
    crashed = Job(target, "job-1")
    crashed.prepare({})
    crashed.write("s0", 0, 3, s0[0:4])
    crashed.write("s0", 4, 5, s0[4:6])
    crashed.write("s1", 0, 1, s1)
    crashed.close()


def test_prepare_drops_writes_past_the_committed_seq(target: Target) -> None:
    """A run dies with writes past the committed cursors (s0 4..5, all of s1); the rerun's ``prepare`` drops
    them, so what it publishes is exactly the committed batches (the rerun then rewrites the rest)."""
    s0, s1 = batches(0, 6), batches(1, 2)
    crash_past_the_committed_seq(target, s0, s1)
    resumed = Job(target, "job-1")
    resumed.prepare({"s0": 3})
    resumed.publish()
    resumed.close()
    if target.readable and not effectively_once(target):
        assert set(ids(s0[0:4])) <= set(target.published())  # at-least-once: what was written stays
    else:
        assert_holds(target, ids(s0[0:4]))


def test_prepare_then_replay_publishes_each_row_once(target: Target) -> None:
    """The usual resume: ``prepare(committed)``, then the uncommitted batches written again, regrouped."""
    s0, s1 = batches(0, 8), batches(1, 2)
    crash_past_the_committed_seq(target, s0, s1)
    resumed = Job(target, "job-1")
    resumed.prepare({"s0": 3})
    resumed.write("s0", 4, 7, s0[4:8])
    resumed.write("s1", 0, 0, s1[0:1])
    resumed.write("s1", 1, 1, s1[1:2])
    resumed.publish()
    resumed.close()
    assert_holds(target, ids(s0 + s1))


def test_full_refresh_replaces_and_incremental_and_stream_append(target: Target) -> None:
    first, second, third, fourth = batches(0, 3), batches(1, 2), batches(2, 2), batches(3, 1)
    run(target, "j1", "full_refresh", first)
    assert_holds(target, ids(first))
    run(target, "j2", "full_refresh", second)
    previous = ids(second) if replaces_on_full_refresh(target) else ids(first + second)
    assert_holds(target, previous)
    run(target, "j3", "incremental", third)
    assert_holds(target, previous + ids(third))
    run(target, "j4", "stream", fourth)
    assert_holds(target, previous + ids(third + fourth))


def test_an_empty_run_publishes_what_the_destination_documents(target: Target) -> None:
    """An empty incremental leaves the target as it was; an empty full refresh replaces it by nothing (an
    empty target), or leaves it for a destination that appends in every mode; rerunning that publish
    changes nothing."""
    first = batches(0, 2)
    run(target, "j1", "full_refresh", first)
    run(target, "j2", "incremental", [])
    assert_holds(target, ids(first))
    run(target, "j3", "full_refresh", [])
    after = [] if replaces_on_full_refresh(target) else ids(first)
    assert_holds(target, after)
    rerun = Job(target, "j3")
    rerun.prepare({})
    rerun.publish()
    rerun.close()
    assert_holds(target, after)
