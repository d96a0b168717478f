"""Microbenchmarks of the hot-path pieces (pytest-benchmark): ring write/read, cursor codec, records -> Arrow.

Why here and not in native_bench: these are single calls in one process, where pytest-benchmark's
calibration and statistics are the right tool; ``native_bench`` measures whole pipelines. Every test
checks its result too, and keeps rounds few, so a plain ``pytest`` run passes them in well under a
second each; ``pytest tests/test_microbench.py --benchmark-only`` gives the timings, ``--benchmark-skip``
leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bizon_fast.compat.bizon.source.models import SourceRecord
from bizon_fast.cursor import Cursor, decode_cursor, encode_cursor
from bizon_fast.source.records import SOURCE_RECORDS_SCHEMA, records_to_batch
from bizon_fast.transport import ShmRing

BATCH_BYTES = 4 << 20
COLUMNS = 8
RECORDS = 1_000
ROUNDS = 20


@pytest.fixture(scope="module")
def batch() -> pa.RecordBatch:
    """4 MiB of int64 columns, the engine's default batch size."""
    rows = BATCH_BYTES // (8 * COLUMNS)
    data = np.random.default_rng(0).integers(0, 1 << 30, (COLUMNS, rows))
    return pa.record_batch({f"c{i}": pa.array(data[i]) for i in range(COLUMNS)})


@pytest.fixture
def ring() -> Iterator[ShmRing]:
    """A two-slot ring with slots of twice the batch, as the supervisor sizes them."""
    store = ShmRing.create(slot_size=2 * BATCH_BYTES, n_slots=2, prefix="bizon_fast_microbench")
    try:
        yield store
    finally:
        store.destroy()


@pytest.mark.benchmark(group="ring")
def test_ring_write_4mib(benchmark, ring: ShmRing, batch: pa.RecordBatch) -> None:
    nbytes = benchmark.pedantic(ring.write, args=(0, [batch]), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert batch.nbytes < nbytes <= ring.spec.slot_size


@pytest.mark.benchmark(group="ring")
def test_ring_read_4mib(benchmark, ring: ShmRing, batch: pa.RecordBatch) -> None:
    """Open the slot zero-copy and touch one column (what a consumer does before writing)."""
    nbytes = ring.write(1, [batch])

    def read() -> int:
        batches = ring.read(1, nbytes)
        return pc.sum(batches[0].column(0)).as_py()

    total = benchmark.pedantic(read, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert total == pc.sum(batch.column(0)).as_py()
    back = ring.read(1, nbytes)
    assert back[0].equals(batch)
    del back  # no view into the segment may outlive it


CURSOR = Cursor(split_id="ids-000000000-006250000", seq=1234, position=[4_000_000, 0], rows=4_000_000, done=False)


@pytest.mark.benchmark(group="cursor")
def test_cursor_encode(benchmark) -> None:
    data = benchmark.pedantic(encode_cursor, args=(CURSOR,), rounds=ROUNDS, iterations=1_000)
    assert decode_cursor(data) == CURSOR


@pytest.mark.benchmark(group="cursor")
def test_cursor_decode(benchmark) -> None:
    data = encode_cursor(CURSOR)
    assert benchmark.pedantic(decode_cursor, args=(data,), rounds=ROUNDS, iterations=1_000) == CURSOR


@pytest.mark.benchmark(group="records")
def test_records_to_batch_1000(benchmark) -> None:
    """bizon SourceRecords (1000 of {id, name, age}, one page of the benchmark source) to one Arrow batch."""
    at = datetime(2024, 1, 1, tzinfo=UTC)
    records = [
        SourceRecord(id=i, data={"id": i, "name": f"name-{i % 8}", "age": i % 100}, timestamp=at)
        for i in range(RECORDS)
    ]
    batch = benchmark.pedantic(records_to_batch, args=(records,), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert batch.num_rows == RECORDS
    assert batch.schema.equals(SOURCE_RECORDS_SCHEMA, check_metadata=True)
    assert batch.column("id")[7].as_py() == "7"
    assert batch.column("data")[7].as_py() == '{"id":7,"name":"name-7","age":7}'
