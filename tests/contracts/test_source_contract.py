"""The source contract (``bizon_fast/source/base.py``), asserted the same way for every built-in source that
can run here: the planned splits cover the data without overlap, a read resumed from a cursor's position
returns the same rows as the uninterrupted read from that point, and an empty source yields nothing and ends.

Splits and positions make the trip the engine makes them take (msgpack, supervisor to producer, checkpoint
to rerun) before they are used: what a source cannot encode or decode fails here.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from bizon_fast.source.base import SourceBatch, Split
from tests.contracts.sources import SourceCase, build, dummy, file, kafka, postgres, synthetic

SERVICE = pytest.mark.service  # marked here: the fixtures ask for their service only once they know the case


@pytest.fixture(
    params=[
        "synthetic",
        "dummy",
        "file",
        pytest.param("postgres", marks=SERVICE),
        pytest.param("kafka", marks=SERVICE),
    ]
)
def case(request: pytest.FixtureRequest) -> SourceCase:
    return make_case(request, request.param, empty=False)


@pytest.fixture(
    params=["synthetic", "file", pytest.param("postgres", marks=SERVICE), pytest.param("kafka", marks=SERVICE)]
)
def empty_case(request: pytest.FixtureRequest) -> SourceCase:
    """The sources that can be empty (the dummy API always has its five records)."""
    return make_case(request, request.param, empty=True)


def make_case(request: pytest.FixtureRequest, name: str, empty: bool) -> SourceCase:
    if name == "synthetic":
        return synthetic(0 if empty else 5_000)
    if name == "dummy":
        return dummy()
    if name == "file":
        return file(request.getfixturevalue("tmp_path") / "files", 0 if empty else 6_000)
    if name == "postgres":
        admin, schema = request.getfixturevalue("pg_admin"), request.getfixturevalue("pg_schema")
        return postgres(admin, schema, 0 if empty else 3_000)
    return kafka(request.getfixturevalue("kafka_bootstrap"), 0 if empty else 600)


def planned(case: SourceCase) -> list[Split]:
    """The splits as a producer receives them: planned by one instance, sent as msgpack."""
    return [msgspec.msgpack.decode(msgspec.msgpack.encode(s), type=Split) for s in build(case.config).splits()]


def read(case: SourceCase, split: Split, position: Any) -> list[SourceBatch]:
    """``read`` on a fresh instance, as a (re)started producer does."""
    return list(build(case.config).read(split, position))


def rows(case: SourceCase, batches: list[SourceBatch]) -> pa.Table | None:
    """The rows of ``batches`` in key order, without the volatile columns; None for no rows."""
    full = [b.batch.replace_schema_metadata(None) for b in batches if b.batch.num_rows]
    if not full:
        return None
    table = pa.Table.from_batches(full).drop_columns([c for c in case.volatile if c in full[0].schema.names])
    return table.sort_by(case.key)


def keys(case: SourceCase, batches: list[SourceBatch]) -> list[str]:
    return [str(k) for b in batches if b.batch.num_rows for k in b.batch.column(case.key).to_pylist()]


def test_splits_cover_the_data_without_overlap(case: SourceCase) -> None:
    splits = planned(case)
    assert splits, "a source with data plans at least one split"
    assert len({s.id for s in splits}) == len(splits), "split ids must be unique"
    seen: dict[str, str] = {}
    for split in splits:
        for key in keys(case, read(case, split, None)):
            assert key not in seen, f"row {key} read by split {split.id} and by {seen[key]}"
            seen[key] = split.id
    missing = set(case.expected) - set(seen)
    assert not missing, f"{len(missing)} rows read by no split, e.g. {sorted(missing)[:5]}"
    assert len(seen) == len(case.expected)


def test_resume_from_a_cursor_returns_the_same_rows(case: SourceCase) -> None:
    """For each split, resume after its first, middle and last batch from the position as the checkpoint
    returns it (msgpack): the rows are those the uninterrupted read yielded after that batch."""
    resumed_any = False
    for split in planned(case):
        whole = read(case, split, None)
        for k in sorted({0, len(whole) // 2, len(whole) - 1}) if whole else []:
            position = msgspec.msgpack.decode(msgspec.msgpack.encode(whole[k].position))
            rest = read(case, split, position)
            want, got = rows(case, whole[k + 1 :]), rows(case, rest)
            assert (got is None and want is None) or (got is not None and want is not None and got.equals(want)), (
                f"split {split.id} resumed after batch {k} of {len(whole)}: "
                f"{0 if got is None else got.num_rows} rows, expected {0 if want is None else want.num_rows}"
            )
            resumed_any |= want is not None
    assert resumed_any or len(case.expected) <= 1, "no split had a batch after another: nothing was resumed"


def test_an_empty_source_yields_nothing_and_ends(empty_case: SourceCase) -> None:
    started = time.monotonic()
    got = [b for split in planned(empty_case) for b in read(empty_case, split, None)]
    assert rows(empty_case, got) is None
    assert time.monotonic() - started < 60, "reading an empty source must end promptly"
