"""bizon NDJSON lines byte for byte, and the file destination's json staging log (segments).

The expected lines in ``fixtures/json_varied_expected.json`` were written by the polars ``concat_str`` encoder
this one replaced (``envelope_lines`` and ``row_json`` of ``fixtures/json_varied.py``'s batches): nulls,
NaN and infinities, -0.0 and 1e20, unicode, quotes, backslashes and control characters, timestamps in three
units and zones, dates, decimals, lists, structs, binary, and ids that are ints, plain or escaped strings, or
missing.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.destinations.envelope import envelope_lines
from bizon_fast.connectors.destinations.file import destination as file_destination
from bizon_fast.connectors.destinations.file import file_io
from bizon_fast.connectors.destinations.file.config import FileDestinationDetails
from bizon_fast.connectors.destinations.file.destination import FileDestination
from bizon_fast.connectors.destinations.jsontext import row_json
from bizon_fast.connectors.sources.synthetic.source import SyntheticSource
from bizon_fast.destination.base import DestinationContext
from bizon_fast.engine.job import fingerprint
from bizon_fast.engine.supervisor import destination_threads
from bizon_fast.source.base import Split
from bizon_fast.source.records import with_extracted_at
from tests.fixtures.inline_source import GENERATOR_SOURCE
from tests.fixtures.json_varied import varied_batches

EXTRACTED = datetime(2024, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
LOADED = datetime(2024, 3, 4, 5, 6, 8, tzinfo=UTC)
EXPECTED = json.loads((Path(__file__).parent / "fixtures" / "json_varied_expected.json").read_text())
LOADED_AT = re.compile(rb'"bizon_loaded_at":"[^"]*"')


def test_lines_are_byte_identical_to_the_pinned_encoder() -> None:
    for i, batch in enumerate(varied_batches()):
        batch = with_extracted_at(batch, EXTRACTED)
        lines = envelope_lines(batch, job_id="job-1", split_id="sp", seq=i, loaded_at=LOADED, row_offset=10)
        assert lines.to_pylist() == EXPECTED[2 * i], f"batch {i}"
        assert row_json(batch).to_pylist() == EXPECTED[2 * i + 1], f"batch {i}"
        for line in lines.to_pylist():  # and each is one JSON document whose source_data is JSON too
            json.loads(json.loads(line)["source_data"])


def synthetic(rows: int, start: int = 0) -> pa.RecordBatch:
    src = SyntheticSource(SourceConfig(name="synthetic", stream="events", batch_rows=rows, payload_bytes=16))
    (batch,) = [b.batch for b in src.read(Split(id="s", params={"start": start, "stop": start + rows}), None)]
    return with_extracted_at(batch, EXTRACTED)


def dest(tmp_path: Path, worker: str = "consumer-0", threads: int = 1, **kw) -> FileDestination:
    context = DestinationContext(
        job_id="job-1",
        pipeline="p",
        source_name="synthetic",
        stream="events",
        sync_mode="full_refresh",
        worker=worker,
        threads=threads,
    )
    return FileDestination(FileDestinationDetails(destination_id=str(tmp_path / "events"), **kw), context)


def expected_bytes(batch: pa.RecordBatch, split: str, seq: int) -> bytes:
    lines = envelope_lines(batch, job_id="job-1", split_id=split, seq=seq, loaded_at=LOADED)
    return "".join(lines.to_pylist()).encode()


def published(path: Path) -> bytes:
    return LOADED_AT.sub(b'"bizon_loaded_at":"' + LOADED.isoformat().encode() + b'"', path.read_bytes())


@pytest.mark.parametrize("fsync", [False, True])
def test_one_consumer_in_order_publishes_its_segment_by_rename(tmp_path: Path, fsync: bool) -> None:
    """A batch larger than a formatting chunk is written in chunks, overlapped with their writes: same bytes."""
    a, b = synthetic(40_000), synthetic(1_000, start=40_000)
    assert a.num_rows > file_destination.LINES_CHUNK_ROWS
    d = dest(tmp_path, fsync=fsync)
    d.prepare({})
    d.write("s1", 0, 0, [a])
    d.write("s2", 0, 0, [b])
    (segment,) = {e.path for e in d.staged_entries()}
    inode = os.stat(segment).st_ino
    d.close()
    d.publish()
    assert os.stat(d.target).st_ino == inode  # renamed, not copied
    assert published(d.target) == expected_bytes(a, "s1", 0) + expected_bytes(b, "s2", 0)
    assert not d.staging_root.exists()


def test_chunks_formatted_in_parallel_are_written_in_order(tmp_path: Path, monkeypatch) -> None:
    """With formatting threads, the later chunks of a write finish first (the first ones are held back here):
    the segment still holds every chunk in order, and the bytes are those of one thread."""
    a, b = synthetic(5 * file_destination.LINES_CHUNK_ROWS + 7), synthetic(100, start=10**6)
    real = file_destination.envelope_lines
    formatted: list[int] = []

    def slow_early_chunks(batch, **kw):
        time.sleep(0.2 if kw["row_offset"] < 2 * file_destination.LINES_CHUNK_ROWS else 0)
        formatted.append(kw["row_offset"])
        return real(batch, **kw)

    monkeypatch.setattr(file_destination, "envelope_lines", slow_early_chunks)
    d = dest(tmp_path, threads=3)
    d.write("s1", 0, 0, [a])
    d.write("s2", 0, 0, [b])
    assert formatted[:3] != sorted(formatted[:3])  # a later chunk was done before an earlier one
    d.close()
    d.publish()
    assert published(d.target) == expected_bytes(a, "s1", 0) + expected_bytes(b, "s2", 0)


def test_a_chunk_failing_in_a_formatting_thread_takes_the_whole_write_back(tmp_path: Path, monkeypatch) -> None:
    a = synthetic(4 * file_destination.LINES_CHUNK_ROWS)
    real = file_destination.envelope_lines

    def fail_third_chunk(batch, **kw):
        if kw["row_offset"] == 2 * file_destination.LINES_CHUNK_ROWS:
            raise OSError(28, "No space left on device")
        return real(batch, **kw)

    d = dest(tmp_path, threads=2)
    monkeypatch.setattr(file_destination, "envelope_lines", fail_third_chunk)
    with pytest.raises(Exception, match="No space left on device"):
        d.write("s", 0, 0, [a])
    monkeypatch.setattr(file_destination, "envelope_lines", real)
    assert d.staged_entries() == []
    assert d._segment is not None and os.stat(d._segment.path).st_size == 0
    d.write("s", 0, 0, [a])
    d.close()
    d.publish()
    assert published(d.target) == expected_bytes(a, "s", 0)


def test_formatting_threads_only_while_the_consumer_is_the_bottleneck(monkeypatch) -> None:
    """A consumer that waits for batches between its writes formats in one thread: its producers need the cores."""
    clock = [100.0]
    monkeypatch.setattr(file_io.time, "monotonic", lambda: clock[0])
    writes = file_io.BackgroundWrites(threads=2)
    seen = []

    def one_write(work_s: float, then_wait_s: float) -> None:
        with writes.write():
            seen.append(writes.parallel)
            clock[0] += work_s
        clock[0] += then_wait_s

    one_write(0.1, 0.0)  # nothing known yet: parallel
    one_write(0.1, 1.0)  # back to back so far: parallel; then the consumer waits 10x its work
    one_write(0.1, 1.0)  # waited: one thread
    assert seen == [True, True, False]
    for _ in range(8):  # writes back to back again: the waits fade out of the average
        one_write(0.1, 0.0)
    assert seen[3] is False and seen[-1] is True
    assert not file_io.BackgroundWrites(threads=1).parallel


@pytest.mark.parametrize(
    ("consumers", "cores", "busy", "threads"),
    [(1, 2, 0, 2), (2, 2, 0, 1), (1, 1, 0, 1), (1, 64, 0, 4), (16, 16, 0, 1), (1, 2, 1, 1), (2, 8, 2, 3), (1, 1, 1, 1)],
)
def test_destination_threads_share_the_cores_among_consumers(
    consumers: int, cores: int, busy: int, threads: int
) -> None:
    assert destination_threads(consumers, cores, busy) == threads


@pytest.mark.parametrize(
    ("source", "threads"),
    [
        ({"name": "generator", "stream": "records", "rows": 3000, "source_file_path": str(GENERATOR_SOURCE)}, 3),
        ({"name": "synthetic", "stream": "events", "rows": 3000, "splits": 1}, 4),
    ],
    ids=["bizon source: its producer keeps a core", "synthetic source"],
)
def test_a_source_that_holds_a_core_leaves_it_to_its_producer(tmp_path, monkeypatch, source, threads) -> None:
    """On 4 cores with one producer and one consumer, the json destination formats on 3 threads beside a bizon
    source (its get() loop holds a core) and on 4 beside a native one."""
    from bizon_fast.connectors.pipeline import parse_config
    from bizon_fast.engine.progress import Progress
    from bizon_fast.engine.supervisor import Supervisor

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    seen: list[int] = []
    original = file_io.BackgroundWrites.__init__

    def recording(self: file_io.BackgroundWrites, threads: int = 1) -> None:
        seen.append(threads)
        original(self, threads)

    monkeypatch.setattr(file_io.BackgroundWrites, "__init__", recording)
    cfg = parse_config(
        {
            "name": "cores",
            "source": source,
            "destination": {"name": "file", "config": {"destination_id": str(tmp_path / "out"), "format": "json"}},
            "engine": {
                "backend": {"type": "sqlite", "config": {"database": str(tmp_path / "state")}},
                "runner": {"type": "thread", "config": {"max_workers": 1}},
            },
        }
    )
    summary = Supervisor(cfg, progress=Progress()).run()
    assert summary.status == "succeeded" and summary.rows == 3000
    assert max(seen) == threads, seen  # the consumer's destination (the supervisor's own has 1)


def test_consumers_out_of_order_and_a_torn_write_publish_each_row_once(tmp_path: Path) -> None:
    batches = [synthetic(500, start=500 * k) for k in range(4)]
    one, two = dest(tmp_path, "consumer-1"), dest(tmp_path, "consumer-2")
    two.write("s", 2, 3, batches[2:])  # the later seqs first, by another consumer
    one.write("s", 0, 0, batches[:1])
    one.write("s", 1, 1, batches[1:2])
    # consumer 1 then dies in the middle of seq 2's write: bytes in its segment, no index line
    assert one._segment is not None
    one._segment.out.write(b'{"torn": ')
    one._segment.out.flush()
    two.write("s", 2, 3, batches[2:])  # the replay of 2..3 (the same rows): replaces two's first write
    sup = dest(tmp_path, "supervisor")
    assert [(e.first, e.last) for e in sup.staged_entries()] == [(0, 0), (1, 1), (2, 3)]
    sup.publish()
    text = published(sup.target)
    body = expected_bytes(batches[0], "s", 0) + expected_bytes(batches[1], "s", 1)
    body += expected_bytes(batches[2], "s", 2) + expected_bytes(batches[3], "s", 3)  # one batch a seq
    assert text == body
    ids = [json.loads(line)["source_record_id"] for line in text.splitlines()]
    assert ids == [str(i) for i in range(2000)]


def test_a_failed_write_leaves_no_bytes_and_the_next_write_follows(tmp_path: Path, monkeypatch) -> None:
    a, b = synthetic(40_000), synthetic(100, start=40_000)
    d = dest(tmp_path)
    real = file_destination.envelope_lines
    calls = []

    def fail_second_chunk(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(file_destination, "envelope_lines", fail_second_chunk)
    with pytest.raises(Exception, match="No space left on device"):
        d.write("s", 0, 0, [a])
    monkeypatch.setattr(file_destination, "envelope_lines", real)
    assert d.staged_entries() == []
    assert d._segment is not None and os.stat(d._segment.path).st_size == 0  # the first chunk's bytes were taken back
    d.write("s", 0, 0, [a])
    d.write("s", 1, 1, [b])
    d.close()
    d.publish()
    assert published(d.target) == expected_bytes(a, "s", 0) + expected_bytes(b, "s", 1)


def test_prepare_forgets_uncommitted_writes_of_a_segment(tmp_path: Path) -> None:
    batches = [synthetic(100, start=100 * k) for k in range(3)]
    d = dest(tmp_path)
    for seq, batch in enumerate(batches):
        d.write("s", seq, seq, [batch])
    d.close()
    rerun = dest(tmp_path)
    rerun.prepare({"s": 1})  # seq 2 was written but never committed
    assert [(e.first, e.last) for e in rerun.staged_entries()] == [(0, 0), (1, 1)]
    rerun.write("s", 2, 2, [batches[2]])
    rerun.close()
    rerun.publish()
    ids = [json.loads(line)["source_record_id"] for line in rerun.target.read_text().splitlines()]
    assert ids == [str(i) for i in range(300)]


def test_resolve_keeps_what_no_later_write_of_its_split_overlaps() -> None:
    """``resolve`` against the rule spelled out (each write drops the earlier ones it overlaps), on random logs."""
    import random

    from bizon_fast.connectors.destinations.file.segments import Entry, resolve

    def spelled_out(entries: list[Entry]) -> list[Entry]:
        kept: list[Entry] = []
        for e in sorted(entries, key=lambda e: e.written):
            kept = [k for k in kept if not (k.label == e.label and k.first <= e.last and k.last >= e.first)]
            if e.end > e.start:
                kept.append(e)
        return sorted(kept, key=lambda e: (e.label, e.first))

    rng = random.Random(13)
    for _ in range(1_000):
        log = []
        for written in range(rng.randint(0, 12)):
            first = rng.randint(0, 10)
            empty = rng.random() < 0.15  # a write of no rows
            log.append(
                Entry(rng.choice("ab"), first, first + rng.randint(0, 3), Path("x"), 0, 0 if empty else 5, written)
            )
        assert resolve(log) == spelled_out(log), log
    # a long job's log: one write a seq, resolved in well under a second
    many = [Entry("s", i, i, Path("x"), i, i + 1, i) for i in range(100_000)]
    assert resolve(many) == many


def test_json_writes_each_batch_as_it_comes_unless_a_buffer_is_set() -> None:
    """An NDJSON write is an append: by default a json consumer writes every batch (no 50 MiB buffer to wait
    for), Parquet keeps bizon's buffer, an explicit buffer_size is kept, and none of it changes the job."""
    json_default = FileDestinationDetails(destination_id="x")
    assert json_default.buffer_size == 0 and "buffer_size" not in json_default.model_fields_set
    assert FileDestinationDetails(destination_id="x", format="parquet").buffer_size == 50
    assert FileDestinationDetails(destination_id="x", buffer_size=8).buffer_size == 8
    dumped = json_default.model_dump(mode="json")
    assert fingerprint({}, "file", dumped) == fingerprint({}, "file", {**dumped, "buffer_size": 50})
    assert fingerprint({}, "file", dumped) != fingerprint({}, "file", {**dumped, "destination_id": "y"})
