"""The page -> batch conversion of bizon-style sources: one bulk encode, the same bytes as one encode per record.

``records_to_batch`` encodes a page's ``data`` values with one ``encode_lines`` call and cuts the text at its
newlines; these tests pin that the cut is exact (values with escaped newlines, unicode, nesting, empty
dicts), that a page mixing text and dicts still takes each value as it is, and the other columns' rules.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pyarrow as pa
import pytest

from bizon_fast.compat.bizon.source.models import SourceRecord
from bizon_fast.source.records import SOURCE_RECORDS_SCHEMA, records_to_batch
from tests.fixtures.inline_source import write_source

TRICKY = [
    {"id": 1, "name": "line\nbreak", "note": "tab\tand \\ backslash"},
    {},
    {"nested": {"list": [1, 2.5, None, True], "text": "é漢字🙂"}, "sep": "\u2028\u2029"},
    {"quote": '"}\n{"', "crlf": "a\r\nb"},
    {"big": 2**62, "neg": -0.0, "exp": 1e300},
]


def _reference(data: object) -> str:
    """One record's ``data`` text as the per-record path wrote it (msgspec, compact)."""
    if isinstance(data, str):
        return data
    if isinstance(data, bytes):
        return data.decode()
    return msgspec.json.encode(data).decode()


def test_bulk_encoded_data_equals_one_encode_per_record() -> None:
    records = [SourceRecord(id=i, data=d) for i, d in enumerate(TRICKY * 300)]  # 1500 records, one page
    batch = records_to_batch(records)
    assert batch.schema == SOURCE_RECORDS_SCHEMA
    assert batch.column("data").to_pylist() == [_reference(d) for d in TRICKY * 300]
    assert batch.column("id").to_pylist() == [str(i) for i in range(1500)]
    assert batch.column("destination_id").null_count == 1500
    stamps = set(batch.column("timestamp").to_pylist())
    assert len(stamps) == 1  # records without a timestamp get the page's extraction time
    assert abs(stamps.pop() - datetime.now(UTC)) < timedelta(minutes=1)


def test_a_page_mixing_text_and_dicts_keeps_each_value() -> None:
    datas = ['{"already": "json"}', b'{"raw": 1}', {"a": "x\ny"}, [1, 2], 7]
    batch = records_to_batch([{"id": f"r{i}", "data": d} for i, d in enumerate(datas)])
    assert batch.column("data").to_pylist() == ['{"already": "json"}', '{"raw": 1}', '{"a":"x\\ny"}', "[1,2]", "7"]


def test_given_timestamps_and_destination_ids_are_kept() -> None:
    paris = timezone(timedelta(hours=1))
    records = [
        SourceRecord(id="a", data={}, timestamp=datetime(2024, 1, 1, 12, tzinfo=paris), destination_id="t1"),
        SourceRecord(id="b", data={}, timestamp=datetime(2024, 1, 1, 12)),  # naive: taken as UTC
        SourceRecord(id="c", data={}),
    ]
    batch = records_to_batch(records)
    stamps = batch.column("timestamp").to_pylist()
    assert stamps[0] == datetime(2024, 1, 1, 11, tzinfo=UTC)
    assert stamps[1] == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert batch.column("destination_id").to_pylist() == ["t1", None, None]


def test_dict_records_and_bad_values_fail_as_before() -> None:
    batch = records_to_batch([{"id": 5, "data": {"k": 1}, "destination_id": 3}])
    assert batch.to_pylist()[0]["id"] == "5" and batch.column("destination_id").to_pylist() == ["3"]
    with pytest.raises(ValueError, match="without an id"):
        records_to_batch([{"id": None, "data": {}}])
    with pytest.raises(TypeError, match="must be a datetime"):
        records_to_batch([{"id": "x", "data": {}, "timestamp": "yesterday"}])
    with pytest.raises(TypeError):
        records_to_batch([{"id": "x", "data": {"unencodable": object()}}])


def test_empty_page() -> None:
    batch = records_to_batch([])
    assert batch.num_rows == 0 and batch.schema == SOURCE_RECORDS_SCHEMA
    assert isinstance(batch.column("data"), pa.StringArray)


@pytest.fixture
def plain(monkeypatch) -> None:
    """``SourceRecord.__bizon_fast_plain__`` is sticky for a process: start each such test with it on."""
    monkeypatch.setattr(SourceRecord, "__bizon_fast_plain__", True)


STAMP = datetime(2020, 5, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("touch", "column", "expected"),
    [
        (lambda r: setattr(r, "destination_id", "t9"), "destination_id", lambda r: "t9"),
        (lambda r: setattr(r, "timestamp", STAMP), "timestamp", lambda r: STAMP),
        (lambda r: r.timestamp, "timestamp", lambda r: r._timestamp),  # the lazy default, read: its own now
    ],
    ids=["destination_id set", "timestamp set", "timestamp read"],
)
def test_a_record_touched_after_construction_is_read_whole(plain, touch, column, expected) -> None:
    """Plain records (no timestamp nor destination_id ever) are read as ids and data only; the first record
    that gets either, however late, turns that off: its value reaches the batch."""
    records = [SourceRecord(id=i, data={"i": i}) for i in range(3)]
    assert SourceRecord.__bizon_fast_plain__ is True
    touch(records[1])
    assert SourceRecord.__bizon_fast_plain__ is False
    time.sleep(0.002)  # the page's own time (records 0 and 2) is later than a timestamp read now
    values = records_to_batch(records).column(column).to_pylist()
    assert values[1] == expected(records[1])
    assert values[0] != values[1]


def test_plain_records_take_the_page_time_and_no_destination(plain) -> None:
    records = [SourceRecord(id=i, data={"i": i}) for i in range(1000)]
    batch = records_to_batch(records)
    assert SourceRecord.__bizon_fast_plain__ is True  # building the batch read no timestamp
    assert batch.column("destination_id").null_count == 1000
    assert len(set(batch.column("timestamp").to_pylist())) == 1
    assert batch.column("data").to_pylist() == [f'{{"i":{i}}}' for i in range(1000)]
    given = SourceRecord(id="x", data={}, destination_id="t1")
    assert SourceRecord.__bizon_fast_plain__ is False
    assert records_to_batch([*records[:2], given]).column("destination_id").to_pylist() == [None, None, "t1"]


def test_ids_of_other_types_are_made_text_as_bizon_does() -> None:
    batch = records_to_batch([{"id": b"raw", "data": {}}, {"id": 7, "data": {}}, {"id": "s", "data": {}}])
    assert batch.column("id").to_pylist() == ["b'raw'", "7", "s"]
    assert records_to_batch([{"id": b"only-bytes", "data": {}}]).column("id").to_pylist() == ["b'only-bytes'"]
    with pytest.raises(ValueError, match="without an id"):
        records_to_batch([{"id": "a", "data": {}}, {"id": None, "data": {}}])


def test_a_str_subclass_value_is_encoded_whatever_else_the_page_holds() -> None:
    """Text values are taken as JSON text; a StrEnum member is a value like any other: quoted, with or
    without plain text values beside it on the page."""
    import enum

    class Color(enum.StrEnum):
        RED = "red"

    alone = records_to_batch([{"id": "a", "data": Color.RED}])
    mixed = records_to_batch([{"id": "a", "data": Color.RED}, {"id": "b", "data": '{"x":1}'}])
    assert alone.column("data").to_pylist() == ['"red"']
    assert mixed.column("data").to_pylist() == ['"red"', '{"x":1}']


def test_a_worker_runs_the_source_with_a_lazier_young_collection(tmp_path, cli) -> None:
    """The producer process calls get() with the young generation's threshold at ``GC_YOUNG_OBJECTS`` (the
    collector's default of 700 made a bizon source's own loop ~35% slower): the older generations' unchanged."""
    import gc
    import json

    from bizon_fast.engine.channel import GC_YOUNG_OBJECTS

    # one record: the collector's threshold in the process that ran get()
    write_source(
        tmp_path,
        "probe",
        """
        data = {"threshold": list(gc.get_threshold())}
        return SourceIteration(next_pagination={}, records=[SourceRecord(id="0", data=data)])
        """,
        imports="import gc",
    )
    (tmp_path / "probe.yml").write_text(
        "name: probe\nsource: {name: probe, stream: probe}\ndestination: {name: file, config: {destination_id: out}}\n"
    )
    res = cli("run", "probe.yml", "-q", "--custom-source", "probe_source.py")
    assert res.returncode == 0, res.stderr
    [line] = (tmp_path / "out.json").read_text().splitlines()
    seen = json.loads(json.loads(line)["source_data"])
    assert seen["threshold"] == [GC_YOUNG_OBJECTS, *gc.get_threshold()[1:]], seen
    assert gc.get_threshold()[0] < GC_YOUNG_OBJECTS, "this test's own process keeps the interpreter's default"
