"""The ``file`` source through the command line: folders of Parquet, CSV (plain and gzip) and NDJSON files
loaded into Parquet and Postgres exactly; one large file read by several splits (row groups, byte ranges)
with ``--workers 2``; workers SIGKILLed mid-file (fault points) and the supervisor killed mid-backfill, both
ending exact; incremental reruns that load only new or changed files; bad input failing with one line that
names the file and the byte offset (or skipped and counted with ``on_bad_rows: skip``), nothing published.
"""

from __future__ import annotations

import gzip
import json
import random
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bizon_fast.errors import UserError
from native_bench.services import start_run
from tests.faults import committed_rows, fault_line, job_rows, kill_workers_randomly, run_log
from tests.services.postgres import PG_DSN

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64()), ("flag", pa.bool_())])


def rows(first: int, n: int, flag: bool = True) -> pa.Table:
    """Rows ``first..first+n-1``: values are functions of the id; ``flag`` only where the file has it."""
    ids = np.arange(first, first + n, dtype=np.int64)
    table = pa.table(
        {
            "id": ids,
            "name": pc.binary_join_element_wise("n", pa.array(ids).cast(pa.string()), ""),
            "amount": ids * 0.25,
        }
    )
    if flag:
        table = table.append_column("flag", pa.array(ids % 3 == 0))
    return table


def write_csv(table: pa.Table, path: Path) -> None:
    if path.suffix == ".gz":
        sink = pa.BufferOutputStream()
        pcsv.write_csv(table, sink)
        path.write_bytes(gzip.compress(sink.getvalue().to_pybytes()))
    else:
        pcsv.write_csv(table, path)


def write_ndjson(table: pa.Table, path: Path) -> None:
    with path.open("w") as fh:
        for row in table.to_pylist():
            fh.write(json.dumps(row) + "\n")


def expected(*parts: pa.Table) -> pa.Table:
    """What the stream holds: the parts in the unified schema (a column a file lacks is null), by id."""
    full = [
        p.append_column("flag", pa.nulls(p.num_rows, pa.bool_())) if "flag" not in p.column_names else p for p in parts
    ]
    return pa.concat_tables([p.select(SCHEMA.names).cast(SCHEMA) for p in full]).sort_by("id")


def folder(tmp_path: Path, scale: int = 1) -> tuple[Path, pa.Table]:
    """A folder of every kind: Parquet with several row groups, CSV plain and gzip, NDJSON, and a hidden file."""
    data = tmp_path / "data"
    (data / "day=2").mkdir(parents=True)
    sizes = [n * scale for n in (60_000, 5_000, 40_000, 20_000, 15_000)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    big = rows(starts[0], sizes[0])
    pq.write_table(big, data / "a.parquet", row_group_size=4_000)
    small = rows(starts[1], sizes[1])
    pq.write_table(small, data / "day=2" / "b.parquet", row_group_size=1_000)
    plain = rows(starts[2], sizes[2], flag=False)
    write_csv(plain, data / "c.csv")
    zipped = rows(starts[3], sizes[3], flag=False)
    write_csv(zipped, data / "day=2" / "d.csv.gz")
    lines = rows(starts[4], sizes[4])
    write_ndjson(lines, data / "e.ndjson")
    (data / "_SUCCESS").write_text("")
    return data, expected(big, small, plain, zipped, lines)


def pipeline(tmp_path: Path, source: str, destination: str = "", name: str = "files", engine: str = "") -> str:
    destination = destination or "{name: file, config: {destination_id: out/events, format: parquet, buffer_size: 0}}"
    (tmp_path / "p.yml").write_text(
        f"name: {name}\nsource: {{name: file, stream: events, {source}}}\ndestination: {destination}\n{engine}"
    )
    return "p.yml"


def output(tmp_path: Path) -> pa.Table:
    table = ds.dataset(tmp_path / "out" / "events", format="parquet").to_table()
    return expected(table)


def assert_exact(got: pa.Table, want: pa.Table) -> None:
    assert got.num_rows == want.num_rows, f"{got.num_rows} rows, expected {want.num_rows}"
    assert pc.count_distinct(got["id"]).as_py() == got.num_rows, "a row was loaded twice"
    assert got.equals(want), "values differ from the files'"


def splits_of(tmp_path: Path) -> dict[str, int]:
    """Rows committed per split of the last job (split ids start with the file's path)."""
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as conn:
        job = conn.execute("SELECT id FROM bizon_fast_jobs ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        return dict(conn.execute("SELECT split_id, rows FROM bizon_fast_cursors WHERE job_id = ?", (job,)).fetchall())


def parts_of(splits: dict[str, int], name: str) -> dict[str, int]:
    return {sid: n for sid, n in splits.items() if sid.split("@")[0].endswith(name)}


# ---------------------------------------------------------------- whole folders, exact


def test_a_folder_of_parquet_csv_and_ndjson_to_parquet_with_two_workers(tmp_path: Path, cli) -> None:
    data, want = folder(tmp_path)
    config = pipeline(tmp_path, f'path: "{data}", split_size_mb: 0.25, chunk_mb: 0.1')
    result = cli("run", config, "--workers", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert_exact(output(tmp_path), want)
    splits = splits_of(tmp_path)
    # the large files are read by several splits each, every one of which read rows
    for name, least in (("a.parquet", 3), ("c.csv", 3), ("e.ndjson", 2)):
        parts = parts_of(splits, name)
        assert len(parts) >= least and all(parts.values()), f"{name}: {parts}"
    assert sum(parts_of(splits, "a.parquet").values()) == 60_000
    assert len(parts_of(splits, "d.csv.gz")) == 1, "a compressed file is one split"
    assert not any("_SUCCESS" in s for s in splits)


def test_a_glob_picks_files_and_format_by_extension(tmp_path: Path, cli) -> None:
    data, _ = folder(tmp_path)
    config = pipeline(tmp_path, f'path: "{data}/**/*.csv*"')
    result = cli("run", config, "--quiet")
    assert result.returncode == 0, result.stderr
    got = ds.dataset(tmp_path / "out" / "events", format="parquet").to_table().sort_by("id")
    assert got.column_names == ["id", "name", "amount"]  # only the CSV files' columns
    assert got.num_rows == 60_000 and got["id"][0].as_py() == 65_000


def test_csv_options_and_column_types(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("1;'a;b';NA;2024-01-02\n2;'c';3.5;NA\n", encoding="latin-1")
    (data / "y.txt").write_text("3;'\xe9';4;2024-03-04\n", encoding="latin-1")
    csv = "{delimiter: ';', header: false, quote_char: \"'\", encoding: latin-1, null_values: ['NA']}"
    types = "{f0: int32, f2: 'decimal128(6, 2)', f3: date32}"
    config = pipeline(tmp_path, f'path: "{data}", format: csv, csv: {csv}, column_types: {types}')
    result = cli("run", config, "--quiet")
    assert result.returncode == 0, result.stderr
    got = ds.dataset(tmp_path / "out" / "events", format="parquet").to_table().sort_by("f0")
    assert got.schema.field("f0").type == pa.int32() and got.schema.field("f2").type == pa.decimal128(6, 2)
    assert got["f1"].to_pylist() == ["a;b", "c", "\xe9"]
    assert got["f2"].to_pylist()[1:] == [pytest.approx(3.5), 4] and got["f2"][0].as_py() is None
    assert [str(d) if d else None for d in got["f3"].to_pylist()] == ["2024-01-02", None, "2024-03-04"]


def test_zstd_and_bz2_ndjson(tmp_path: Path, cli) -> None:
    import bz2

    data = tmp_path / "data"
    data.mkdir()
    part = [rows(0, 3_000), rows(3_000, 3_000)]
    for table, name in zip(part, ("a.jsonl", "b.json"), strict=True):
        write_ndjson(table, data / name)
    (data / "a.jsonl.bz2").write_bytes(bz2.compress((data / "a.jsonl").read_bytes()))
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write((data / "b.json").read_bytes())
    (data / "b.json.zst").write_bytes(sink.getvalue().to_pybytes())
    for name in ("a.jsonl", "b.json"):
        (data / name).unlink()
    result = cli("run", pipeline(tmp_path, f'path: "{data}"'), "--quiet")
    assert result.returncode == 0, result.stderr
    assert_exact(output(tmp_path), expected(*part))


@pytest.mark.service
def test_a_folder_to_postgres_with_two_workers(tmp_path: Path, cli, pg_admin, pg_schema: str) -> None:
    data, want = folder(tmp_path)
    dest = f'{{name: postgres, config: {{dsn: "{PG_DSN}", destination_id: {pg_schema}.events}}}}'
    config = pipeline(tmp_path, f'path: "{data}", split_size_mb: 0.25', dest)
    result = cli("run", config, "--workers", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    fetched = pg_admin.execute(f"SELECT id, name, amount, flag FROM {pg_schema}.events ORDER BY id").fetchall()
    got = pa.table(list(zip(*fetched, strict=True)), schema=SCHEMA)
    assert_exact(got, want)


# ---------------------------------------------------------------- crashes


def big_csv(tmp_path: Path) -> tuple[Path, pa.Table]:
    data = tmp_path / "data"
    data.mkdir()
    table = rows(0, 120_000, flag=False)
    write_csv(table, data / "big.csv")
    return data, expected(table)


FAULT_ENGINE = "engine: {queue: {config: {batch_size_mb: 0.2}}, runner: {config: {producers: 1, consumers: 1}}}\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "role"), [("producer.after_fill@3", "producer"), ("consumer.after_write@3", "consumer")]
)
def test_a_worker_killed_mid_file_resumes_exactly(tmp_path: Path, monkeypatch, point: str, role: str) -> None:
    data, want = big_csv(tmp_path)
    config = pipeline(tmp_path, f'path: "{data}", split_size_mb: 1, chunk_mb: 0.05', engine=FAULT_ENGINE)
    monkeypatch.setenv("BIZON_FAST_FAULT", point)
    monkeypatch.setenv("BIZON_FAST_FAULT_MARK", str(tmp_path / "fault.mark"))
    proc = start_run(tmp_path, config)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    log = run_log(tmp_path, proc.pid)
    who, _ = fault_line(log, point.partition("@")[0])
    assert who.startswith(f"{role}-") and f"{who} working again" in log, log
    assert_exact(output(tmp_path), want)
    assert len(splits_of(tmp_path)) >= 3, "the file was read by byte ranges"
    [(_, status, attempt, _)] = job_rows(tmp_path)
    assert (status, attempt) == ("succeeded", 1)


@pytest.mark.slow
def test_the_supervisor_killed_mid_backfill_resumes_inside_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    table = rows(0, 600_000)
    pq.write_table(table, data / "big.parquet", row_group_size=10_000)
    engine = "engine: {queue: {config: {batch_size_mb: 0.2}}, runner: {config: {producers: 1, consumers: 1}}}\n"
    config = pipeline(tmp_path, f'path: "{data}", split_size_mb: 1, chunk_mb: 0.05', engine=engine)
    proc = start_run(tmp_path, config)
    deadline = time.monotonic() + 120
    while committed_rows(tmp_path) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    first = committed_rows(tmp_path)
    assert 0 < first < table.num_rows, f"killed with {first} rows committed: not mid-backfill"
    rerun = start_run(tmp_path, config)
    _, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    assert "resuming job" in run_log(tmp_path, rerun.pid)
    assert_exact(output(tmp_path), expected(table))
    [(_, status, attempt, _)] = job_rows(tmp_path)
    assert (status, attempt) == ("succeeded", 2)


@pytest.mark.slow
def test_workers_killed_at_random_during_a_backfill_of_every_format(tmp_path: Path) -> None:
    data, want = folder(tmp_path, scale=12)
    engine = "engine: {queue: {config: {batch_size_mb: 0.1}}, runner: {config: {max_restarts: 20}}}\n"
    config = pipeline(tmp_path, f'path: "{data}", split_size_mb: 1, chunk_mb: 0.05', engine=engine)
    proc = start_run(tmp_path, config, "--workers", "2")
    killed = kill_workers_randomly(proc, 3, random.Random(17))
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert killed, "no worker was killed: the run ended first"
    assert_exact(output(tmp_path), want)


# ---------------------------------------------------------------- incremental


def test_an_incremental_rerun_loads_only_new_and_changed_files(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(rows(0, 1_000), data / "a.parquet")
    write_ndjson(rows(1_000, 1_000), data / "b.ndjson")
    config = pipeline(tmp_path, f'path: "{data}", sync_mode: incremental')
    assert cli("run", config, "--quiet").returncode == 0
    assert output(tmp_path).num_rows == 2_000
    again = cli("run", config, "--quiet")
    assert again.returncode == 0, again.stderr
    assert output(tmp_path).num_rows == 2_000, "a rerun without new files loads nothing"
    assert sum(splits_of(tmp_path).values()) == 0
    write_csv(rows(2_100, 500, flag=False), data / "c.csv")  # a new file
    write_ndjson(rows(1_000, 1_100), data / "b.ndjson")  # a changed one (size and mtime): read again, whole
    third = cli("run", config, "--quiet")
    assert third.returncode == 0, third.stderr
    loaded = {sid.split("@")[0].rsplit("/", 1)[-1]: n for sid, n in splits_of(tmp_path).items() if n}
    assert loaded == {"b.ndjson": 1_100, "c.csv": 500}
    got = output(tmp_path)
    assert got.num_rows == 2_000 + 1_600
    # full_refresh reads every file and replaces the output
    refresh = cli("run", pipeline(tmp_path, f'path: "{data}"'), "--quiet")
    assert refresh.returncode == 0, refresh.stderr
    assert_exact(output(tmp_path), expected(rows(0, 1_000), rows(1_000, 1_100), rows(2_100, 500, flag=False)))


# ---------------------------------------------------------------- bad input


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_csv_row_with_a_wrong_field_count_fails_naming_file_and_offset(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    good = "id,name\n" + "".join(f"{i},n{i}\n" for i in range(5_000))
    bad_at = len(good.encode())
    (data / "a.csv").write_text(good + "5000,n5000,extra\n5001,n5001\n")
    result = cli("run", pipeline(tmp_path, f'path: "{data}", chunk_mb: 0.01'), "--quiet")
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert f"{data / 'a.csv'}: byte offset {bad_at}: expected 2 fields, got 3" in line, line
    assert not (tmp_path / "out" / "events").exists() or not list((tmp_path / "out" / "events").glob("*.parquet"))


def test_bad_lines_are_skipped_and_counted_when_asked(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    good = [f"{i},n{i}\n" for i in range(3_000)]
    body = good[:1000] + ["1000x,bad,too,many\n"] + good[1000:2000] + ["oops,n\n"] + good[2000:]
    (data / "a.csv").write_text("id,name\n" + "".join(body))
    write_ndjson(rows(3_000, 100).select(["id", "name"]), data / "b.ndjson")
    with (data / "b.ndjson").open("a") as fh:
        fh.write('{"id": 3100, "name": \n{"id": "x"}\n')
    # "oops" would make id a string column: declared, it is a value that does not convert (a bad line)
    config = pipeline(tmp_path, f'path: "{data}", on_bad_rows: skip, chunk_mb: 0.01, column_types: {{id: int64}}')
    result = cli("run", config, "--quiet")
    assert result.returncode == 0, result.stderr
    got = ds.dataset(tmp_path / "out" / "events", format="parquet").to_table()
    assert sorted(got["id"].to_pylist()) == list(range(3_100))
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert log.count("skipped a bad line") == 4, log
    assert "expected 2 fields, got 4" in log and "byte offset" in log


def test_a_bad_ndjson_line_fails_naming_file_and_offset(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    good = "".join(json.dumps({"id": i}) + "\n" for i in range(2_000))
    (data / "a.ndjson").write_text(good + '{"id": oops}\n')
    result = cli("run", pipeline(tmp_path, f'path: "{data}"'), "--quiet")
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert f"{data / 'a.ndjson'}: byte offset {len(good)}:" in line, line


def test_a_corrupt_parquet_footer_fails_naming_the_file(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(rows(0, 100), data / "a.parquet")
    (data / "b.parquet").write_bytes((data / "a.parquet").read_bytes()[:-20])
    result = cli("run", pipeline(tmp_path, f'path: "{data}"'), "--quiet")
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert f"{data / 'b.parquet'}: not a readable Parquet file" in line, line
    assert not (tmp_path / "out").exists()


def test_an_unreadable_compressed_file_fails_naming_the_file(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_csv(rows(0, 100, flag=False), data / "a.csv.gz")
    (data / "b.csv.gz").write_bytes(b"\x1f\x8b\x08\x00 not gzip at all" * 10)
    result = cli("run", pipeline(tmp_path, f'path: "{data}"'), "--quiet")
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert f"{data / 'b.csv.gz'}: cannot read" in line, line


def test_config_errors_name_the_key(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(rows(0, 10), data / "a.parquet")
    for source, key in (
        (f'path: "{data}", column_types: {{id: int6}}', "source.column_types.id"),
        (f'path: "{data}", sync_mode: incremental, cursor_field: id', "cursor_field"),
        (f'path: "{data}/*.csv"', "no files match"),
        (f'path: "{data}", csv: {{delimiter: ";;"}}', "source.csv.delimiter"),
    ):
        result = cli("run", pipeline(tmp_path, source), "--quiet")
        assert result.returncode != 0
        assert key in result.stderr, (source, result.stderr)


def test_quoted_line_breaks_escapes_and_resuming_inside_such_a_file(tmp_path: Path, cli) -> None:
    """``newlines_in_values``: no line break is a safe cut, so the file is one split read by one stream, and a
    resume re-reads it and drops the rows already delivered."""
    from bizon_fast.connectors.sources.file.config import FileSourceConfig
    from bizon_fast.connectors.sources.file.source import FileSource

    data = tmp_path / "data"
    data.mkdir()
    n = 3_000
    text = "id,note\n" + "".join(f'{i},"line {i}\nsays \\"hi\\""\n' for i in range(n))
    (data / "notes.csv").write_text(text)
    csv = "{newlines_in_values: true, escape_char: '\\', double_quote: false}"
    source = f'path: "{data}", csv: {csv}, split_size_mb: 0.01, chunk_mb: 0.01'
    result = cli("run", pipeline(tmp_path, source), "--quiet")
    assert result.returncode == 0, result.stderr
    got = ds.dataset(tmp_path / "out" / "events", format="parquet").to_table().sort_by("id")
    assert got["id"].to_pylist() == list(range(n))
    assert got["note"].to_pylist() == [f'line {i}\nsays "hi"' for i in range(n)]
    assert len(splits_of(tmp_path)) == 1

    config = FileSourceConfig.model_validate(
        {
            "name": "file",
            "stream": "s",
            "path": str(data),
            "chunk_mb": 0.01,
            "csv": {"newlines_in_values": True, "escape_char": "\\", "double_quote": False},
        }
    )
    [split] = FileSource(config).splits()
    whole = list(FileSource(config).read(split, None))
    assert len(whole) > 2
    k = len(whole) // 2
    rest = [i for b, _ in FileSource(config).read(split, whole[k].position) for i in b.column("id").to_pylist()]
    assert rest == [i for b, _ in whole[k + 1 :] for i in b.column("id").to_pylist()]


def test_a_file_that_changed_since_planning_fails_the_job(tmp_path: Path) -> None:
    from bizon_fast.connectors.sources.file.config import FileSourceConfig
    from bizon_fast.connectors.sources.file.source import FileSource

    data = tmp_path / "data"
    data.mkdir()
    write_ndjson(rows(0, 100), data / "a.ndjson")
    config = FileSourceConfig.model_validate({"name": "file", "stream": "s", "path": str(data)})
    [split] = FileSource(config).splits()
    write_ndjson(rows(0, 200), data / "a.ndjson")  # a writer still appending
    with pytest.raises(UserError, match=r"a.ndjson: the file changed since the job was planned \(\d+ -> \d+ bytes\)"):
        list(FileSource(config).read(split, None))


@pytest.mark.parametrize(("split_mb", "gz"), [(0.003, False), (0.05, False), (0.3, False), (0.003, True)])
def test_byte_ranges_own_each_line_once_whatever_the_cut_points(tmp_path: Path, split_mb: float, gz: bool) -> None:
    """Lines longer than a chunk and than the line-start probe, cut points inside them, a last line without
    a line break: every line is read by exactly one range, resumable after any of its batches."""
    import msgspec

    from bizon_fast.connectors.sources.file.config import FileSourceConfig
    from bizon_fast.connectors.sources.file.source import FileSource

    data = tmp_path / "data"
    data.mkdir()
    sizes = [5, 200_000, 3, 70_000, 1, 9_000, 150_000] * 3 + [1_500_000, 2]  # one line over a JSON block
    text = "\n".join(json.dumps({"id": i, "pad": "x" * n}) for i, n in enumerate(sizes))  # no final line break
    if gz:  # one split, read as a stream
        (data / "a.ndjson.gz").write_bytes(gzip.compress(text.encode()))
    else:
        (data / "a.ndjson").write_text(text)
    config = FileSourceConfig.model_validate(
        {"name": "file", "stream": "s", "path": str(data), "split_size_mb": split_mb, "chunk_mb": 0.01}
    )
    splits = FileSource(config).splits()
    seen: list[int] = []
    for split in splits:
        whole = list(FileSource(config).read(split, None))
        ids = [i for b, _ in whole for i in b.column("id").to_pylist()]
        seen += ids
        for k in range(len(whole)):
            position = msgspec.msgpack.decode(msgspec.msgpack.encode(whole[k].position))
            rest = [i for b, _ in FileSource(config).read(split, position) for i in b.column("id").to_pylist()]
            assert rest == [i for b, _ in whole[k + 1 :] for i in b.column("id").to_pylist()]
    assert sorted(seen) == list(range(len(sizes)))
    assert len(splits) == (1 if gz else -(-len(text) // int(split_mb * (1 << 20))))


def test_schemas_unify_across_files_and_a_conflict_names_both_files(tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(
        pa.table({"id": pa.array([1, 2], pa.int32()), "amount": pa.array([10, 20], pa.int64())}), data / "a.parquet"
    )
    write_ndjson(pa.table({"id": [3], "amount": [2.5], "note": ["n"]}), data / "b.ndjson")
    pq.write_table(pa.table({"id": pa.array([4], pa.int64()), "extra": [True]}), data / "c.parquet")
    result = cli("run", pipeline(tmp_path, f'path: "{data}"'), "--quiet")
    assert result.returncode == 0, result.stderr
    got = ds.dataset(tmp_path / "out" / "events", format="parquet").to_table().sort_by("id")
    assert got.schema.names == ["id", "amount", "note", "extra"]
    assert [got.schema.field(n).type for n in got.schema.names] == [pa.int64(), pa.float64(), pa.string(), pa.bool_()]
    assert got.to_pylist() == [
        {"id": 1, "amount": 10.0, "note": None, "extra": None},
        {"id": 2, "amount": 20.0, "note": None, "extra": None},
        {"id": 3, "amount": 2.5, "note": "n", "extra": None},
        {"id": 4, "amount": None, "note": None, "extra": True},
    ]
    write_ndjson(pa.table({"id": ["five"]}), data / "d.ndjson")
    result = cli("run", pipeline(tmp_path, f'path: "{data}"'), "--quiet")
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert (
        f"column 'id' is int64 in the files before ({data / 'a.parquet'}...) but string in {data / 'd.ndjson'}" in line
    )
