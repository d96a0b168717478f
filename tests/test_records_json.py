"""Source-records batches (bizon custom sources) as bizon NDJSON: the Arrow-joined lines are the very bytes polars'
``write_ndjson`` of ``envelope`` wrote before, over ids and data that need every kind of escaping, timestamps
with no, millisecond and microsecond fractions, and through the file destination."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from bizon_fast.connectors.destinations.envelope import envelope, envelope_lines, records_as_text
from bizon_fast.connectors.destinations.file.config import FileDestinationDetails
from bizon_fast.connectors.destinations.file.destination import FileDestination
from bizon_fast.connectors.destinations.jsontext import autosi_timestamps, escaped
from bizon_fast.destination.base import DestinationContext
from bizon_fast.source.records import SOURCE_RECORDS_SCHEMA, records_to_batch, with_extracted_at

EXTRACTED = datetime(2024, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)  # a millisecond fraction: ".890"
LOADED = datetime(2024, 3, 4, 5, 6, 8, 123, tzinfo=UTC)
T = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
CONTROLS = "".join(chr(c) for c in range(0x20))
RECORDS = [
    {"id": "plain-1", "data": {"a": 1}, "timestamp": T},
    {"id": 'q"uo\\te', "data": {"s": 'x"y\\z', "u": "é😀\u2028\x7f"}, "timestamp": T + timedelta(microseconds=1)},
    {"id": "ctl" + CONTROLS, "data": {"c": CONTROLS, "n": [1, {"k": None}, 2.5]}, "timestamp": T},
    {"id": "nl\n\t\r", "data": '{\n\t"raw": "pretty"\r\n}', "timestamp": T + timedelta(milliseconds=100)},
    {"id": "bell\x07", "data": '{"v":"\\u0007"}', "timestamp": datetime(1, 1, 1, tzinfo=UTC), "destination_id": "d"},
    {"id": "", "data": "[]", "timestamp": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)},
    {"id": "old", "data": "null", "timestamp": datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)},
]
#: two lines written by the polars path before this one: a plain record and one full of escapes
PINNED_0 = (
    '{"bizon_id":"%s","bizon_extracted_at":"2024-03-04T05:06:07.890+00:00",'
    '"bizon_loaded_at":"2024-03-04T05:06:08.000123+00:00","source_record_id":"plain-1",'
    '"source_timestamp":"2024-01-02T03:04:05+00:00","source_data":"{\\"a\\":1}"}\n'
)
PINNED_1_TAIL = (
    '"source_record_id":"q\\"uo\\\\te","source_timestamp":"2024-01-02T03:04:05.000001+00:00",'
    '"source_data":"{\\"s\\":\\"x\\\\\\"y\\\\\\\\z\\",\\"u\\":\\"é😀\u2028\x7f\\"}"}\n'
)


def polars_bytes(batch: pa.RecordBatch, seq: int = 3, row_offset: int = 0) -> bytes:
    """What the file destination wrote for a source-records batch before: polars' NDJSON of ``envelope``."""
    out = io.BytesIO()
    envelope(batch, job_id="job", split_id="sp", seq=seq, loaded_at=LOADED, row_offset=row_offset).write_ndjson(out)
    return out.getvalue()


def arrow_lines(batch: pa.RecordBatch, seq: int = 3, row_offset: int = 0) -> list[str]:
    return envelope_lines(
        batch, job_id="job", split_id="sp", seq=seq, loaded_at=LOADED, row_offset=row_offset
    ).to_pylist()


def batch_of(records: list[dict]) -> pa.RecordBatch:
    return with_extracted_at(records_to_batch(records), EXTRACTED)


def test_lines_are_the_bytes_polars_wrote() -> None:
    batch = batch_of(RECORDS)
    assert records_as_text(batch.schema)
    lines = arrow_lines(batch, row_offset=5)
    assert len(lines) == len(RECORDS)
    assert "".join(lines).encode() == polars_bytes(batch, row_offset=5)
    bizon_id = json.loads(lines[0])["bizon_id"]
    assert lines[0] == PINNED_0 % bizon_id
    assert lines[1].endswith(PINNED_1_TAIL)
    for line, record in zip(lines, RECORDS, strict=True):
        parsed = json.loads(line)
        assert parsed["source_record_id"] == record["id"]
        data = record["data"]
        assert json.loads(parsed["source_data"]) == (json.loads(data) if isinstance(data, str) else data)


def test_slices_large_strings_and_a_batch_without_escapes() -> None:
    batch = batch_of(RECORDS * 3)
    sliced = batch.slice(4, 9)  # offsets into shared buffers
    assert "".join(arrow_lines(sliced, row_offset=4)).encode() == polars_bytes(sliced, row_offset=4)
    large = pa.RecordBatch.from_arrays(
        [batch.column(0).cast(pa.large_string()), batch.column(1).cast(pa.large_string()), *batch.columns[2:]],
        names=batch.schema.names,
    ).replace_schema_metadata(batch.schema.metadata)
    assert "".join(arrow_lines(large)).encode() == polars_bytes(batch)
    plain = batch_of([{"id": str(i), "data": f"[{i}]", "timestamp": T + timedelta(seconds=i)} for i in range(50)])
    assert "".join(arrow_lines(plain, seq=0)).encode() == polars_bytes(plain, seq=0)


def test_escaped_matches_msgspec_and_keeps_plain_arrays() -> None:
    import msgspec

    values = ["plain", 'a"b', "c\\d", CONTROLS, "x\ny", "é\u2028", "", '\x00\x1f\\"\n']
    out = escaped(pa.array(values)).to_pylist()
    assert out == [msgspec.json.encode(v).decode()[1:-1] for v in values]
    plain = pa.array(["a", "b-c", "é"])
    assert escaped(plain) is plain  # nothing to escape: the very array, no copy


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05+00:00"),
        (datetime(2024, 1, 2, 3, 4, 5, 100000, tzinfo=UTC), "2024-01-02T03:04:05.100+00:00"),
        (datetime(2024, 1, 2, 3, 4, 5, 1000, tzinfo=UTC), "2024-01-02T03:04:05.001+00:00"),
        (datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=UTC), "2024-01-02T03:04:05.000001+00:00"),
        (datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "1969-12-31T23:59:59.999999+00:00"),
    ],
)
def test_timestamps_as_chrono_writes_them(at: datetime, text: str) -> None:
    micros = int((at - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    assert autosi_timestamps(pa.array([micros]).to_numpy()).to_pylist() == [text]


def test_other_column_types_behind_the_flag_take_the_polars_path() -> None:
    schema = SOURCE_RECORDS_SCHEMA.set(2, pa.field("timestamp", pa.timestamp("ms", tz="UTC")))
    assert not records_as_text(schema)


def test_file_destination_writes_the_same_bytes(tmp_path: Path) -> None:
    batch = batch_of(RECORDS * 3000)  # 21k rows: more than one formatting chunk
    context = DestinationContext(
        job_id="job", pipeline="p", source_name="generator", stream="records", sync_mode="full_refresh", worker="c0"
    )
    d = FileDestination(FileDestinationDetails(destination_id=str(tmp_path / "out"), format="json"), context)
    d.prepare({})
    d.write("sp", 3, 3, [batch])
    d.close()
    d.publish()
    loaded = re.compile(rb'"bizon_loaded_at":"[^"]*"')
    expected = polars_bytes(batch)
    assert loaded.sub(b"L", d.target.read_bytes()) == loaded.sub(b"L", expected)
    assert d.target.read_bytes().count(b"\n") == len(RECORDS) * 3000


@pytest.mark.parametrize("fraction", [0, 250_000, 7])
def test_a_page_sharing_one_timestamp_writes_it_as_polars_did(fraction: int) -> None:
    at = T.replace(microsecond=fraction)
    page = batch_of([{"id": f"r{i}", "data": {"i": i}, "timestamp": at} for i in range(20)])
    assert "".join(arrow_lines(page)).encode() == polars_bytes(page)
