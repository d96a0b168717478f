"""Destinations: noop, logger, and file (bizon's NDJSON envelope, Parquet datasets, staging and publish)."""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.destinations.envelope import ENVELOPE_COLUMNS, bizon_ids
from bizon_fast.connectors.destinations.file.config import FileDestinationDetails
from bizon_fast.connectors.destinations.file.destination import FileDestination, parse_part, part_name
from bizon_fast.connectors.destinations.file.file_io import file_label
from bizon_fast.connectors.destinations.jsontext import iso_timestamps
from bizon_fast.connectors.destinations.logger.config import LoggerDestinationDetails
from bizon_fast.connectors.destinations.logger.destination import LoggerDestination
from bizon_fast.connectors.destinations.noop.config import NoopDestinationDetails
from bizon_fast.connectors.destinations.noop.destination import NoopDestination
from bizon_fast.connectors.sources.dummy.source import DummySource
from bizon_fast.connectors.sources.synthetic.source import SyntheticSource
from bizon_fast.destination.base import DestinationContext
from bizon_fast.errors import UserError
from bizon_fast.source.base import Split
from bizon_fast.source.records import with_extracted_at

EXTRACTED = datetime(2024, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def context(job_id: str = "job-1", sync_mode: str = "full_refresh", worker: str = "consumer-0") -> DestinationContext:
    return DestinationContext(
        job_id=job_id, pipeline="p", source_name="dummy", stream="creatures", sync_mode=sync_mode, worker=worker
    )


def file_dest(tmp_path: Path, fmt: str = "json", job_id: str = "job-1", sync_mode: str = "full_refresh", **kw):
    kw.setdefault("destination_id", str(tmp_path / "out" / "creatures"))
    return FileDestination(FileDestinationDetails(format=fmt, **kw), context(job_id, sync_mode))


def dummy_pages() -> list[pa.RecordBatch]:
    src = DummySource(
        SourceConfig(name="dummy", stream="creatures", authentication={"type": "api_key", "params": {"token": "t"}})
    )
    return [with_extracted_at(p.batch, EXTRACTED) for p in src.read(src.splits()[0], None)]


def synthetic_batches(rows: int = 3000, batch_rows: int = 1000, start: int = 0) -> list[pa.RecordBatch]:
    src = SyntheticSource(SourceConfig(name="synthetic", stream="events", batch_rows=batch_rows, payload_bytes=16))
    split = Split(id="s", params={"start": start, "stop": start + rows})
    return [with_extracted_at(b.batch, EXTRACTED) for b in src.read(split, None)]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def staged(dest: FileDestination) -> list[str]:
    """Parquet: the part files; json: the resolved writes of the segments, named like the parts they replace."""
    if dest.config.format == "parquet":
        return sorted(os.listdir(dest.job_dir))
    return [part_name(e.label, e.first, e.last, "ndjson") for e in dest.staged_entries()]


def staged_lines(dest: FileDestination) -> list[dict]:
    """The json rows staged by the writes so far, in (split, seq) order."""
    out = []
    for e in dest.staged_entries():
        with open(e.path, "rb") as f:
            f.seek(e.start)
            out += [json.loads(line) for line in f.read(e.end - e.start).splitlines()]
    return out


def write_pages(dest: FileDestination, split: str = "creatures") -> None:
    for seq, batch in enumerate(dummy_pages()):
        dest.write(split, seq, seq, [batch])


# ---------------------------------------------------------------- noop and logger


def test_noop_counts_and_discards() -> None:
    dest = NoopDestination(NoopDestinationDetails(), context())
    batches = synthetic_batches(2500)
    dest.write("s", 0, 1, batches[:2])
    dest.write("s", 2, 2, batches[2:])
    assert (dest.rows, dest.batches, dest.writes) == (2500, 3, 2)
    dest.publish()
    dest.close()


def test_logger_logs_each_record_like_bizon(caplog: pytest.LogCaptureFixture) -> None:
    dest = LoggerDestination(LoggerDestinationDetails(), context(sync_mode="full_refresh"))
    with caplog.at_level(logging.INFO, logger="bizon_fast.destination.logger"):
        write_pages(dest)
        dest.write("s", 0, 0, synthetic_batches(2, batch_rows=2))
    records = [r for r in caplog.records if r.name == "bizon_fast.destination.logger"]
    assert all(r.levelno == logging.INFO for r in records)
    messages = [r.getMessage() for r in records]
    assert messages[:5] == [
        '[full_refresh] {"id":9898,"name":"bizon","age":26}',
        '[full_refresh] {"id":88787,"name":"croco","age":23}',
        '[full_refresh] {"id":98,"name":"froggy","age":26}',
        '[full_refresh] {"id":3333,"name":"turtle","age":23}',
        '[full_refresh] {"id":56565,"name":"poulpo","age":26}',
    ]
    typed = json.loads(messages[5].removeprefix("[full_refresh] "))
    assert typed["id"] == 0 and len(typed["payload"]) == 16


# ---------------------------------------------------------------- file: json envelope


def test_file_json_envelope_with_dummy(tmp_path: Path) -> None:
    dest = file_dest(tmp_path)
    dest.prepare({})
    before = datetime.now(UTC)
    write_pages(dest)
    dest.publish()
    target = tmp_path / "out" / "creatures.json"
    rows = lines(target)
    assert [list(r) for r in rows] == [list(ENVELOPE_COLUMNS)] * 5
    assert [r["source_record_id"] for r in rows] == ["9898", "88787", "98", "3333", "56565"]
    assert [json.loads(r["source_data"]) for r in rows][0] == {"id": 9898, "name": "bizon", "age": 26}
    assert isinstance(rows[0]["source_data"], str)
    for r in rows:
        assert HEX32.match(r["bizon_id"])
        assert r["bizon_extracted_at"] == "2024-03-04T05:06:07.890123+00:00"
        for key in ("bizon_loaded_at", "source_timestamp"):
            assert r[key].endswith("+00:00")
            assert datetime.fromisoformat(r[key]) >= before
    assert len({r["bizon_id"] for r in rows}) == 5
    assert not dest.staging_root.exists()


def test_file_json_replay_is_byte_identical_but_for_load_time(tmp_path: Path) -> None:
    pages = dummy_pages()
    a, b = file_dest(tmp_path / "a"), file_dest(tmp_path / "b")
    for dest in (a, b):
        dest.write("creatures", 0, 2, pages)
    strip = [{k: v for k, v in r.items() if k != "bizon_loaded_at"} for r in staged_lines(a)]
    assert strip == [{k: v for k, v in r.items() if k != "bizon_loaded_at"} for r in staged_lines(b)]
    # ids depend on (job, split, seq, row) only: the same rows written one seq per call get the same ids
    c = file_dest(tmp_path / "c")
    for seq, page in enumerate(pages):
        c.write("creatures", seq, seq, [page])
    ids_c = [r["bizon_id"] for r in staged_lines(c)]
    assert ids_c == [r["bizon_id"] for r in strip]
    assert bizon_ids("job-1", "creatures", 1, 2).to_pylist() == ids_c[2:4]
    assert bizon_ids("job-2", "creatures", 1, 2).to_pylist() != ids_c[2:4]


def test_file_json_typed_batches(tmp_path: Path) -> None:
    dest = file_dest(tmp_path, destination_id=str(tmp_path / "events.jsonl"))
    batches = synthetic_batches(2500)
    dest.write("s", 0, 2, batches)
    dest.publish()
    assert dest.target == tmp_path / "events.jsonl"  # suffix kept, not doubled
    rows = lines(dest.target)
    assert len(rows) == 2500 and list(rows[0]) == list(ENVELOPE_COLUMNS)
    expected = pa.Table.from_batches(batches).to_pylist()
    for row, record in zip(rows[::97], expected[::97], strict=True):
        data = json.loads(row["source_data"])
        assert row["source_record_id"] == str(record["id"])
        assert row["source_timestamp"] == row["bizon_extracted_at"] == "2024-03-04T05:06:07.890123+00:00"
        assert datetime.fromisoformat(data.pop("ts")) == record.pop("ts")
        assert data == record
    assert len({r["bizon_id"] for r in rows}) == 2500


def test_file_json_typed_without_id_column(tmp_path: Path) -> None:
    dest = file_dest(tmp_path)
    batch = with_extracted_at(pa.record_batch({"name": ["a", 'b"'], "n": [1.5, None]}), EXTRACTED)
    dest.write("sp", 4, 4, [batch])
    rows = staged_lines(dest)
    assert [r["source_record_id"] for r in rows] == ["sp:4:0", "sp:4:1"]
    assert [json.loads(r["source_data"]) for r in rows] == [{"name": "a", "n": 1.5}, {"name": 'b"', "n": None}]


def test_iso_timestamps_match_python() -> None:
    import numpy as np

    micros = np.array([0, -1, 951_782_400_123_456, 253_402_300_799_999_999, -62_135_596_800_000_000], np.int64)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    from datetime import timedelta

    expected = [(epoch + timedelta(microseconds=int(m))).isoformat(timespec="microseconds") for m in micros]
    assert iso_timestamps(micros).to_pylist() == expected
    assert iso_timestamps(micros[:1], utc=False).to_pylist() == ["1970-01-01T00:00:00.000000"]


def test_file_json_unnest(tmp_path: Path) -> None:
    schema = [{"name": "name", "type": "string"}, {"name": "id", "type": "string"}, {"name": "age", "type": "integer"}]
    did = str(tmp_path / "creatures")
    dest = file_dest(
        tmp_path, destination_id=did, unnest=True, record_schemas=[{"destination_id": did, "record_schema": schema}]
    )
    write_pages(dest)
    dest.publish()
    rows = [json.loads(line) for line in (tmp_path / "creatures.json").read_text().splitlines()]
    assert rows[0] == {"name": "bizon", "id": 9898, "age": 26}  # schema order; JSON values kept, like bizon
    assert [list(r) for r in rows] == [["name", "id", "age"]] * 5

    bad = file_dest(
        tmp_path / "bad",
        destination_id=did,
        unnest=True,
        record_schemas=[{"destination_id": did, "record_schema": schema[:2]}],
    )
    with pytest.raises(UserError, match="record_schemas"):
        bad.write("creatures", 0, 0, dummy_pages()[:1])
    with pytest.raises(UserError, match="record_schemas"):
        file_dest(tmp_path, unnest=True, record_schemas=[{"destination_id": "other", "record_schema": schema}])


def test_file_without_destination_id_writes_the_streams_name(tmp_path: Path) -> None:
    """bizon 0.6.4 accepts a file destination without destination_id (its file_incremental example)."""
    dest = FileDestination(FileDestinationDetails(base_dir=str(tmp_path)), context())
    assert dest.target == tmp_path / "creatures.json"


# ---------------------------------------------------------------- file: staging contract


def test_part_names_round_trip() -> None:
    name = part_name("ids-0/1-x", 3, 12, "ndjson")
    # readable and file-system safe: the unsafe "/" becomes "_", a hash of the id keeps the name its own
    assert name == f"part-ids-0_1-x.{file_label('ids-0/1-x')[-12:]}-0000000003-0000000012.ndjson"
    assert parse_part(name, "ndjson") == (file_label("ids-0/1-x"), 3, 12)
    assert file_label("ids-0/1-x") != file_label("ids-0_1-x") == "ids-0_1-x"  # a plain id is its own label
    assert part_name("key000:0:125000", 0, 0, "parquet").startswith("part-key000_0_125000.")
    # a part staged by an older version (percent-encoded id) is recognised as the same split's
    assert parse_part("part-ids-0%2F1-x-0000000003-0000000012.ndjson", "ndjson") == (file_label("ids-0/1-x"), 3, 12)
    assert parse_part(".tmp-" + name, "ndjson") is None
    assert parse_part(name, "parquet") is None


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_write_replaces_overlapping_parts_of_the_same_split(tmp_path: Path, fmt: str) -> None:
    dest = file_dest(tmp_path, fmt)
    ext = "ndjson" if fmt == "json" else "parquet"
    batches = synthetic_batches(8000)
    dest.write("a", 0, 5, batches[:6])  # a consumer wrote 0..5, then died before reporting
    dest.write("b", 0, 1, batches[:2])
    assert staged(dest) == [f"part-a-0000000000-0000000005.{ext}", f"part-b-0000000000-0000000001.{ext}"]
    dest.write("a", 0, 3, batches[:4])  # the replay groups differently
    dest.write("a", 4, 7, batches[4:8])
    dest.write("a", 4, 7, batches[4:8])  # the same range again: replaced, not duplicated
    assert staged(dest) == [
        f"part-a-0000000000-0000000003.{ext}",
        f"part-a-0000000004-0000000007.{ext}",
        f"part-b-0000000000-0000000001.{ext}",
    ]
    dest.write("a", 8, 8, [batches[0].slice(0, 0)])  # nothing to write: no empty part
    assert len(staged(dest)) == 3


def test_consumers_share_a_split_without_shared_state(tmp_path: Path) -> None:
    batches = synthetic_batches(4000)
    one = FileDestination(FileDestinationDetails(destination_id=str(tmp_path / "e")), context(worker="consumer-1"))
    two = FileDestination(FileDestinationDetails(destination_id=str(tmp_path / "e")), context(worker="consumer-2"))
    one.write("s", 0, 1, batches[:2])
    two.write("s", 2, 3, batches[2:])
    sup = FileDestination(FileDestinationDetails(destination_id=str(tmp_path / "e")), context(worker="supervisor"))
    sup.publish()
    assert [r["source_record_id"] for r in lines(tmp_path / "e.json")] == [str(i) for i in range(4000)]


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_prepare_drops_uncommitted_temporary_and_foreign_staging(tmp_path: Path, fmt: str) -> None:
    batches = synthetic_batches(1000, batch_rows=100)
    old = file_dest(tmp_path, fmt, job_id="old-job")
    old.write("a", 0, 0, batches[:1])
    dest = file_dest(tmp_path, fmt)
    dest.write("a", 0, 3, batches[:4])
    dest.write("a", 4, 7, batches[4:8])
    dest.write("a", 8, 9, batches[8:])
    dest.write("b", 0, 1, batches[:2])
    (dest.job_dir / ".tmp-part-a-0000000010-0000000011.x-123").write_bytes(b"torn")
    dest.prepare({"a": 7})
    ext = dest.ext
    assert staged(dest) == [f"part-a-0000000000-0000000003.{ext}", f"part-a-0000000004-0000000007.{ext}"]
    assert sorted(os.listdir(dest.staging_root)) == ["job-1"]


def read_ids(dest: FileDestination) -> list[int]:
    if dest.config.format == "parquet":
        return sorted(ds.dataset(dest.target).to_table(columns=["id"]).column("id").to_pylist())
    return [int(r["source_record_id"]) for r in lines(dest.target)]


def test_json_publish_interrupted_before_the_swap_publishes_once(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "creatures.json").write_text('{"old": 1}')  # no trailing newline
    dest = file_dest(tmp_path, sync_mode="incremental")
    write_pages(dest)
    real_replace = os.replace

    def crash_on_target(src, dst):
        if Path(dst) == dest.target:
            raise OSError("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_target)
    with pytest.raises(OSError, match="killed"):
        dest.publish()
    monkeypatch.setattr(os, "replace", real_replace)
    assert dest.ready.exists() and not dest.job_dir.exists()
    rerun = file_dest(tmp_path, sync_mode="incremental", job_id="job-1")
    rerun.prepare({"creatures": 2})
    rerun.publish()
    rerun.publish()
    rows = lines(dest.target)
    assert rows[0] == {"old": 1} and len(rows) == 6


def test_parquet_full_refresh_interrupted_mid_swap(tmp_path: Path, monkeypatch) -> None:
    first = file_dest(tmp_path, "parquet", job_id="j1")
    first.write("s", 0, 0, synthetic_batches(100, batch_rows=100))
    first.publish()
    dest = file_dest(tmp_path, "parquet", job_id="j2")
    dest.write("s", 0, 0, synthetic_batches(50, batch_rows=50, start=1000))
    real_replace = os.replace

    def crash_on_swap_in(src, dst):
        if Path(src) == dest.job_dir:
            raise OSError("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_swap_in)
    with pytest.raises(OSError, match="killed"):
        dest.publish()
    monkeypatch.setattr(os, "replace", real_replace)
    assert not dest.target.exists() and dest.aside.exists()
    dest.prepare({"s": 0})
    dest.publish()
    assert read_ids(dest) == list(range(1000, 1050))
    assert not dest.staging_root.exists()


def test_parquet_dataset_of_dummy_and_synthetic(tmp_path: Path) -> None:
    dummy_dest = file_dest(tmp_path, "parquet", fsync=True)
    dummy_dest.prepare({})
    write_pages(dummy_dest)
    dummy_dest.publish()
    table = ds.dataset(dummy_dest.target).to_table()
    assert table.column_names == list(ENVELOPE_COLUMNS)
    assert table.schema.field("bizon_extracted_at").type == pa.timestamp("us", tz="UTC")
    assert sorted(table.column("source_record_id").to_pylist()) == sorted(["9898", "88787", "98", "3333", "56565"])

    typed = file_dest(tmp_path, "parquet", destination_id=str(tmp_path / "events"))
    batches = synthetic_batches(5000)
    typed.write("s1", 0, 2, batches[:3])
    typed.write("s2", 0, 1, batches[3:])
    typed.publish()
    dataset = ds.dataset(typed.target)
    assert sorted(os.path.basename(f) for f in dataset.files) == [
        "part-s1-0000000000-0000000002.parquet",
        "part-s2-0000000000-0000000001.parquet",
    ]
    got = dataset.to_table().sort_by("id")
    assert got.equals(pa.Table.from_batches([b.replace_schema_metadata(None) for b in batches]))


def test_parquet_unnest_casts_declared_types(tmp_path: Path) -> None:
    schema = [{"name": "id", "type": "STRING"}, {"name": "name", "type": "string"}, {"name": "age", "type": "FLOAT"}]
    did = str(tmp_path / "creatures")
    dest = file_dest(
        tmp_path,
        "parquet",
        destination_id=did,
        unnest=True,
        record_schemas=[{"destination_id": did, "record_schema": schema}],
    )
    write_pages(dest)
    dest.publish()
    table = ds.dataset(dest.target).to_table()
    assert table.column_names == ["id", "name", "age"]
    assert table.schema.field("age").type == pa.float64()
    assert sorted(table.column("id").to_pylist()) == sorted(["9898", "88787", "98", "3333", "56565"])
