"""The built-in sources: synthetic (generated, resumable) and dummy (bizon's fixture), and the records layout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.registry import source_class
from bizon_fast.connectors.sources.dummy.source import DummySource
from bizon_fast.connectors.sources.synthetic.source import (
    CATEGORIES,
    SCHEMA,
    TS_BASE_US,
    TS_STEP_US,
    SyntheticSource,
)
from bizon_fast.errors import ConfigError
from bizon_fast.source.base import Split
from bizon_fast.source.records import (
    EXTRACTED_AT_KEY,
    SOURCE_RECORDS_SCHEMA,
    extracted_at_of,
    is_source_records,
    records_to_batch,
    with_extracted_at,
)


def synthetic(**kw) -> SyntheticSource:
    return SyntheticSource(SourceConfig(name="synthetic", stream="events", **kw))


def dummy(stream: str = "creatures", **kw) -> DummySource:
    kw.setdefault("authentication", {"type": "api_key", "params": {"token": "secret"}})
    return DummySource(SourceConfig(name="dummy", stream=stream, **kw))


# ---------------------------------------------------------------- synthetic


def test_registry_finds_both_sources() -> None:
    assert source_class("synthetic", "events") is SyntheticSource
    assert source_class("dummy", "plants") is DummySource


def test_synthetic_ids_unique_and_complete_across_splits() -> None:
    src = synthetic(rows=100_003, splits=7, batch_rows=4096, payload_bytes=8)
    splits = src.splits()
    assert len(splits) == 7
    assert splits[0].params["start"] == 0 and splits[-1].params["stop"] == 100_003
    for left, right in zip(splits, splits[1:], strict=False):
        assert left.params["stop"] == right.params["start"]
    assert sum(s.total_rows for s in splits) == src.total_rows() == 100_003
    assert [s.id for s in splits] == sorted(s.id for s in splits)  # zero-padded: string order is id order
    ids = np.concatenate([b.batch.column("id").to_numpy() for s in splits for b in src.read(s, None)])
    assert np.array_equal(np.sort(ids), np.arange(100_003))


def test_synthetic_batches_align_to_split_start_and_positions_are_next_ids() -> None:
    src = synthetic(rows=10_000, splits=3, batch_rows=1000)
    split = src.splits()[1]  # ids 3333..6666
    got = list(src.read(split, None))
    assert [b.batch.num_rows for b in got] == [1000, 1000, 1000, 333]
    assert [b.position for b in got] == [4333, 5333, 6333, 6666]
    assert got[0].batch.column("id")[0].as_py() == 3333


def test_synthetic_resume_regenerates_identical_batches() -> None:
    src = synthetic(rows=50_000, splits=2, batch_rows=4096, seed=7)
    split = src.splits()[1]
    full = list(src.read(split, None))
    resumed = list(synthetic(rows=50_000, splits=2, batch_rows=4096, seed=7).read(split, full[2].position))
    assert len(resumed) == len(full) - 3
    for a, b in zip(full[3:], resumed, strict=True):
        assert a.position == b.position
        assert a.batch.equals(b.batch)
    # a position inside a batch: the first batch ends on the next aligned boundary, values unchanged
    mid = full[1].position + 100
    partial = list(src.read(split, mid))
    assert partial[0].position == full[2].position
    assert partial[0].batch.equals(full[2].batch.slice(100))
    assert partial[1].batch.equals(full[3].batch)


def test_synthetic_schema_and_value_ranges() -> None:
    src = synthetic(rows=20_000, splits=1, batch_rows=8192, payload_bytes=24)
    batch = pa.Table.from_batches([b.batch for b in src.read(src.splits()[0], None)]).combine_chunks()
    assert batch.schema.equals(SCHEMA)
    ids = batch.column("id").to_numpy()
    ts = batch.column("ts").cast(pa.int64()).to_numpy()
    assert np.array_equal(ts, TS_BASE_US + ids * TS_STEP_US)
    assert set(batch.column("category").to_pylist()) == set(CATEGORIES)
    quantity = batch.column("quantity").to_numpy()
    assert quantity.min() >= 1 and quantity.max() <= 100
    amount = batch.column("amount").to_numpy()
    assert amount.min() >= 0 and amount.max() < 10_000
    assert np.allclose(amount * 100, np.round(amount * 100))
    users = batch.column("user_id").to_numpy()
    assert users.min() >= 0 and users.max() < 1_000_000 and len(np.unique(users)) > 15_000
    payloads = batch.column("payload").to_pylist()
    assert {len(p) for p in payloads} == {24}
    assert all(p.isalnum() and p.isascii() for p in payloads[:500])
    assert len(set(payloads)) == len(payloads)


def test_synthetic_values_depend_on_seed_only_through_the_hash() -> None:
    split = Split(id="x", params={"start": 500, "stop": 900})
    a = next(synthetic(seed=1).read(split, None)).batch
    b = next(synthetic(seed=2).read(split, None)).batch
    assert a.column("id").equals(b.column("id")) and a.column("ts").equals(b.column("ts"))
    assert not a.column("user_id").equals(b.column("user_id"))
    assert not a.column("payload").equals(b.column("payload"))


def test_synthetic_streams_ids_near_ten_billion() -> None:
    split = Split(id="far", params={"start": 10**10 - 1500, "stop": 10**10})
    batches = [b.batch for b in synthetic(batch_rows=1000).read(split, None)]
    ids = np.concatenate([b.column("id").to_numpy() for b in batches])
    assert ids[0] == 10**10 - 1500 and ids[-1] == 10**10 - 1


def test_synthetic_memory_stays_flat() -> None:
    import psutil

    src = synthetic(rows=3_000_000, splits=1, batch_rows=65_536)
    proc = psutil.Process()
    batches = src.read(src.splits()[0], None)
    for _ in range(5):
        next(batches)
    before = proc.memory_info().rss
    rows = sum(b.batch.num_rows for b in batches)
    assert rows == 3_000_000 - 5 * 65_536
    assert proc.memory_info().rss - before < 64 << 20


def test_synthetic_edge_configs() -> None:
    empty = synthetic(rows=0)
    assert [list(empty.read(s, None)) for s in empty.splits()] == [[]]
    tiny = synthetic(rows=3, splits=16)
    assert len(tiny.splits()) == 3
    no_payload = synthetic(rows=10, splits=1, payload_bytes=0)
    batch = next(no_payload.read(no_payload.splits()[0], None)).batch
    assert batch.column("payload").to_pylist() == [""] * 10
    with pytest.raises(ConfigError, match="batch_rows"):
        synthetic(batch_rows=1 << 20, payload_bytes=1 << 12)
    with pytest.raises(ValueError, match="outside split"):
        list(tiny.read(tiny.splits()[0], 99))


def test_synthetic_batches_do_not_share_output_memory() -> None:
    src = synthetic(rows=4000, splits=1, batch_rows=1000)
    batches = [b.batch for b in src.read(src.splits()[0], None)]
    again = [b.batch for b in src.read(src.splits()[0], None)]
    for a, b in zip(batches, again, strict=True):
        assert a.equals(b)  # the first list was not overwritten by later generation


# ---------------------------------------------------------------- dummy

BIZON_PAGES = {
    "creatures": [
        [(9898, "bizon", 26), (88787, "croco", 23)],
        [(98, "froggy", 26), (3333, "turtle", 23)],
        [(56565, "poulpo", 26)],
    ],
    "plants": [
        [(9898, "tree", 26), (88787, "flower", 23)],
        [(98, "cactus", 26), (3333, "bamboo", 23)],
        [(56565, "rose", 26)],
    ],
}


@pytest.mark.parametrize("stream", ["creatures", "plants"])
def test_dummy_pages_are_bizons(stream: str) -> None:
    import json

    src = dummy(stream)
    (split,) = src.splits()
    before = datetime.now(UTC)
    pages = list(src.read(split, None))
    assert [p.position for p in pages] == [{"cursor": "vfvfvuhfefpeiduzhihxb"}, {"cursor": "final-cursor"}, {}]
    assert src.total_rows() == 5
    for page, expected in zip(pages, BIZON_PAGES[stream], strict=True):
        assert is_source_records(page.batch.schema)
        rows = page.batch.to_pylist()
        assert [r["id"] for r in rows] == [str(e[0]) for e in expected]
        assert [json.loads(r["data"]) for r in rows] == [{"id": i, "name": n, "age": a} for i, n, a in expected]
        for r in rows:
            assert before <= r["timestamp"] <= datetime.now(UTC) + timedelta(seconds=1)
            assert r["destination_id"] is None


def test_dummy_resumes_from_bizon_pagination() -> None:
    src = dummy()
    (split,) = src.splits()
    rest = list(src.read(split, {"cursor": "vfvfvuhfefpeiduzhihxb"}))
    assert [r["id"] for p in rest for r in p.batch.to_pylist()] == ["98", "3333", "56565"]
    last = list(src.read(split, {"cursor": "final-cursor"}))
    assert [r["id"] for r in last[0].batch.to_pylist()] == ["56565"] and last[0].position == {}
    assert list(src.read(split, {})) == []  # {} after a page: exhausted


def test_dummy_stream_mode_routes_like_bizon() -> None:
    src = dummy(sync_mode="stream")
    pages = list(src.read(src.splits()[0], None))
    assert [p.batch.column("destination_id").to_pylist() for p in pages] == [
        ["creatures", "creatures"],
        ["routed", "routed"],
        ["creatures"],
    ]


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, "source.authentication is required"),
        ({"type": "basic"}, "source.authentication"),
        ({"type": "api_key", "params": {}}, "source.authentication.params.token"),
    ],
)
def test_dummy_requires_authentication(auth: dict | None, message: str) -> None:
    kw = {} if auth is None else {"authentication": auth}
    with pytest.raises(ConfigError, match=message):
        DummySource(SourceConfig(name="dummy", stream="creatures", **kw))


def test_dummy_accepts_oauth_and_sleep() -> None:
    src = dummy(authentication={"type": "oauth", "params": {"client_id": "x"}}, sleep=0.01)
    assert sum(p.batch.num_rows for p in src.read(src.splits()[0], None)) == 5


# ---------------------------------------------------------------- records layout


def test_records_to_batch_from_dicts_and_objects() -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    batch = records_to_batch(
        [
            {"id": 1, "data": {"a": [1, "é"]}, "timestamp": at, "destination_id": "t"},
            SimpleNamespace(id="x", data='{"raw":true}', timestamp=datetime(2024, 1, 1), destination_id=None),
        ]
    )
    assert batch.schema.equals(SOURCE_RECORDS_SCHEMA, check_metadata=True)
    assert batch.to_pylist() == [
        {"id": "1", "data": '{"a":[1,"é"]}', "timestamp": at, "destination_id": "t"},
        {"id": "x", "data": '{"raw":true}', "timestamp": datetime(2024, 1, 1, tzinfo=UTC), "destination_id": None},
    ]
    assert records_to_batch([]).num_rows == 0


def test_is_source_records_and_extracted_at() -> None:
    batch = records_to_batch([{"id": 1, "data": {}}])
    assert is_source_records(batch.schema)
    assert is_source_records(batch.schema.remove_metadata())  # layout survives a metadata-dropping transform
    assert not is_source_records(SCHEMA)
    at = datetime(2023, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    stamped = with_extracted_at(batch, at)
    assert stamped.schema.metadata[EXTRACTED_AT_KEY] == b"1683356889123456"
    assert extracted_at_of(stamped.schema) == at
    assert abs(extracted_at_of(SCHEMA) - datetime.now(UTC)) < timedelta(seconds=5)
