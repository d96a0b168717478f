"""The example pipelines are real: every one validates, the cheap ones run, and their paths follow the YAML.

``configs/`` and each connector folder's ``example.yml`` are what users copy first, so each must load
against this install's connectors (with the environment variables its comment asks for). Those that
need no service or only the local Postgres run through the CLI from a copy in a temporary folder,
with the working directory elsewhere: their relative paths must land beside the YAML.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest
import yaml

from bizon_fast.connectors.pipeline import load_config, parse_config
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
EXAMPLES = sorted(CONFIGS.glob("*.yml")) + sorted((REPO / "bizon_fast" / "connectors").glob("*/*/example.yml"))
#: what the examples' comments ask the user to export
EXAMPLE_ENV = {"PG_PASSWORD": "secret"}


def test_there_is_an_example_for_each_connector_and_mode() -> None:
    """configs/ covers every connector folder, each queue, each checkpoint backend and each sync mode."""
    raw = [yaml.safe_load(p.read_text()) for p in CONFIGS.glob("*.yml")]
    sources = {c["source"]["name"] for c in raw}
    destinations = {c["destination"]["name"] for c in raw}
    engine = [c.get("engine") or {} for c in raw]
    backends = {(e.get("backend") or {}).get("type", "sqlite") for e in engine}
    queues = {(e.get("queue") or {}).get("type", "shm") for e in engine}
    modes = {c["source"].get("sync_mode", "full_refresh") for c in raw}
    connectors = REPO / "bizon_fast" / "connectors"
    assert {p.name for p in (connectors / "sources").iterdir() if (p / "config.py").exists()} <= sources | {"numbers"}
    assert {"file", "postgres", "bigquery", "noop", "logger"} <= destinations
    assert {"sqlite", "postgres"} <= backends and {"shm", "kafka", "rabbitmq"} <= queues
    assert {"full_refresh", "incremental"} <= modes
    assert any(c.get("transforms") for c in raw) and any(c["source"].get("source_file_path") for c in raw)
    for path in CONFIGS.glob("*.yml"):
        assert path.read_text().startswith("#"), f"{path.name}: start with a comment saying what it does"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_example_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(path)
    assert cfg.name and cfg.source.name and cfg.destination.name
    if cfg.destination.name == "file":  # its output lands beside the YAML, wherever the command runs
        assert cfg.destination.config.target_path(cfg.source.stream).is_relative_to(path.parent)


# ---------------------------------------------------------------- paths relative to the YAML


def test_relative_paths_in_a_pipeline_file_follow_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "p.yml").write_text(
        """
name: paths
source: {name: file, stream: s, path: data/*.csv, credentials: keys/gcs.json}
destination: {name: file, config: {destination_id: out/s, format: parquet}}
engine: {backend: {type: sqlite, config: {database: state/ckpt}}}
"""
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../jobs/p.yml")
    assert cfg.source.path == str(folder / "data" / "*.csv")
    assert cfg.source.credentials == str(folder / "keys" / "gcs.json")
    assert cfg.engine.backend.config.database == str(folder / "state" / "ckpt")
    assert cfg.destination.config.destination_id == "out/s"  # the id is kept: record_schemas match on it
    assert cfg.destination.config.target_path("s") == folder / "out" / "s"

    # URIs, inline JSON keys, absolute paths and ~ are not relative to the file
    (folder / "q.yml").write_text(
        f"""
name: uris
source: {{name: file, stream: s, path: "s3://bucket/x/*.csv", credentials: '{{"type": "service_account"}}'}}
destination: {{name: file, config: {{destination_id: {tmp_path}/abs, base_dir: sub, format: parquet}}}}
engine: {{backend: {{type: sqlite, config: {{database: ~/ckpt}}}}}}
"""
    )
    cfg = load_config(folder / "q.yml")
    assert cfg.source.path == "s3://bucket/x/*.csv" and cfg.source.credentials == '{"type": "service_account"}'
    assert cfg.destination.config.target_path("s") == tmp_path / "abs"
    assert cfg.destination.config.base_dir == str(folder / "sub")
    assert cfg.engine.backend.config.database == str(Path.home() / "ckpt")

    # a config that was not read from a file keeps its paths as written: relative to the working directory
    raw = yaml.safe_load((folder / "p.yml").read_text())
    cfg = parse_config(raw)
    assert (cfg.source.path, cfg.engine.backend.config.database) == ("data/*.csv", "state/ckpt")
    assert cfg.destination.config.target_path("s") == elsewhere / "out" / "s"


def test_custom_source_path_follows_the_file_and_the_option_follows_the_working_directory(tmp_path: Path) -> None:
    """source_file_path in the YAML is relative to it; --custom-source on the command line to the cwd."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    shutil.copy(CONFIGS / "custom_source.yml", folder)
    shutil.copy(CONFIGS / "custom_source.py", folder)
    res = run_cli("run", "jobs/custom_source.yml", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (folder / "out" / "numbers.json").read_text().splitlines()]
    data = sorted((json.loads(r["source_data"]) for r in rows), key=lambda d: d["n"])
    assert data == [{"n": n, "square": n * n} for n in range(1000)]
    assert not (tmp_path / "out").exists(), "output went to the working directory"
    assert (folder / "bizon.sqlite3").exists() and not (tmp_path / "bizon.sqlite3").exists()

    (tmp_path / "tools").mkdir()
    shutil.move(folder / "custom_source.py", tmp_path / "tools" / "numbers.py")
    missing = run_cli("run", "jobs/custom_source.yml", "--quiet", cwd=tmp_path)
    assert missing.returncode == 2 and str(folder / "custom_source.py") in missing.stderr
    given = run_cli("run", "jobs/custom_source.yml", "--quiet", "--custom-source", "tools/numbers.py", cwd=tmp_path)
    assert given.returncode == 0, given.stderr


# ---------------------------------------------------------------- the cheap examples, run


def _copy(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(CONFIGS / name, folder))


def test_quickstart_runs(tmp_path: Path) -> None:
    """README's first command, from another folder: the dataset lands in out/ beside the YAML."""
    _copy("quickstart.yml", tmp_path / "configs")
    res = run_cli("run", "configs/quickstart.yml", "--quiet", "--workers", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    dataset = ds.dataset(tmp_path / "configs" / "out" / "quickstart_events", format="parquet")
    assert dataset.count_rows() == 2_000_000
    assert len(pc.unique(dataset.to_table(columns=["id"]).column("id"))) == 2_000_000
    assert all("%" not in Path(f).name for f in dataset.files), "part names are readable"


def test_transforms_example_runs(tmp_path: Path) -> None:
    _copy("dummy_transforms_to_file.yml", tmp_path)
    res = run_cli("run", "dummy_transforms_to_file.yml", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "out" / "creatures_transformed.json").read_text().splitlines()
    data = sorted((json.loads(json.loads(line)["source_data"]) for line in lines), key=lambda d: d["id"])
    # the python transform upper-cased the names, then the sql one kept the creatures aged 25 or more
    assert [(d["id"], d["name"]) for d in data] == [(98, "FROGGY"), (9898, "BIZON"), (56565, "POULPO")]


def test_csv_files_example_runs_incrementally(tmp_path: Path) -> None:
    """The glob is relative to the YAML; a second run reads only the new file."""
    folder = tmp_path / "configs"
    _copy("files_to_parquet.yml", folder)
    sales = folder / "data" / "sales"
    sales.mkdir(parents=True)

    def write_csv(name: str, ids: range) -> None:
        table = pa.table({"id": list(ids), "amount": [f"{i}.25" for i in ids], "region": ["eu"] * len(ids)})
        pacsv.write_csv(table, sales / name)

    write_csv("2024-01.csv", range(0, 100))
    assert run_cli("run", "configs/files_to_parquet.yml", "--quiet", cwd=tmp_path).returncode == 0
    write_csv("2024-02.csv", range(100, 150))
    res = run_cli("run", "configs/files_to_parquet.yml", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    table = ds.dataset(folder / "out" / "sales", format="parquet").to_table().sort_by("id")
    assert table.column("id").to_pylist() == list(range(150)), "each row once: the first file was not read again"
    assert table.schema.field("amount").type == pa.decimal128(12, 2)


def test_incremental_postgres_example_runs(tmp_path: Path, pg_admin, pg_schema: str) -> None:  # noqa: ANN001
    """The incremental example against the test database: the second run appends only the rows past the watermark."""
    table = f"{pg_schema}.orders_{secrets.token_hex(3)}"
    pg_admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, amount float8, updated_at timestamptz NOT NULL)")
    pg_admin.execute(
        f"INSERT INTO {table} SELECT i, i * 1.5, timestamptz '2024-01-01' + i * interval '1 minute' "
        "FROM generate_series(1, 500) i"
    )
    config = yaml.safe_load((CONFIGS / "postgres_incremental_to_parquet.yml").read_text())
    assert (config["source"]["sync_mode"], config["source"]["cursor_field"]) == ("incremental", "updated_at")
    del config["source"]["password"]  # the test database trusts local connections
    config["source"].update(host="127.0.0.1", database="test", stream=table)
    config["engine"]["backend"] = {"type": "sqlite", "config": {"database": "ckpt"}}
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "p.yml").write_text(yaml.safe_dump(config))

    assert run_cli("run", "jobs/p.yml", "--quiet", cwd=tmp_path).returncode == 0
    pg_admin.execute(f"UPDATE {table} SET amount = -1, updated_at = now() WHERE id <= 10")
    pg_admin.execute(f"INSERT INTO {table} SELECT i, i * 1.5, now() FROM generate_series(501, 520) i")
    res = run_cli("run", "jobs/p.yml", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr

    got = ds.dataset(tmp_path / "jobs" / "out" / "orders_incremental", format="parquet").to_table()
    ids = sorted(got.column("id").to_pylist())
    # first run: 1..500; second: the 10 updated rows and the 20 new ones, appended
    assert ids == sorted([*range(1, 521), *range(1, 11)])
    names = [Path(f).name for f in ds.dataset(tmp_path / "jobs" / "out" / "orders_incremental").files]
    # readable part names: the split "key000:0:62" appears as key000_0_62 (and a hash keeps the name its own)
    assert all(
        re.fullmatch(r"part-[0-9A-Za-z_-]+-key00\d_\d+_\d+\.[0-9a-f]{12}-\d{10}-\d{10}\.parquet", n) for n in names
    )
    assert (tmp_path / "jobs" / "ckpt.sqlite3").exists()


def test_incremental_merge_examples_run(tmp_path: Path, pg_admin, pg_schema: str) -> None:  # noqa: ANN001
    """The merge examples against the test database: the second run upserts the updated rows, no key twice."""
    table = f"{pg_schema}.orders_{secrets.token_hex(3)}"
    pg_admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, amount float8, updated_at timestamptz NOT NULL)")
    pg_admin.execute(
        f"INSERT INTO {table} SELECT i, i * 1.5, timestamptz '2024-01-01' + i * interval '1 minute' "
        "FROM generate_series(1, 500) i"
    )
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    parquet = yaml.safe_load((CONFIGS / "postgres_incremental_merge_to_parquet.yml").read_text())
    pg = yaml.safe_load((CONFIGS / "postgres_incremental_merge.yml").read_text())
    (tmp_path / "jobs").mkdir()
    for name, config in (("parquet", parquet), ("pg", pg)):
        assert config["destination"]["config"]["write_disposition"] == "merge"
        del config["source"]["password"]  # the test database trusts local connections
        config["source"].update(host="127.0.0.1", database="test", stream=table)
        config["engine"]["backend"] = {"type": "sqlite", "config": {"database": f"ckpt_{name}"}}
    pg["destination"]["config"].update(dsn=dsn, destination_id=f"{pg_schema}.orders_merged")
    for name, config in (("parquet", parquet), ("pg", pg)):
        (tmp_path / "jobs" / f"{name}.yml").write_text(yaml.safe_dump(config))
        assert run_cli("run", f"jobs/{name}.yml", "--quiet", cwd=tmp_path).returncode == 0
    pg_admin.execute(f"UPDATE {table} SET amount = -1, updated_at = now() WHERE id <= 10")
    pg_admin.execute(f"INSERT INTO {table} SELECT i, i * 1.5, now() FROM generate_series(501, 520) i")
    for name in ("parquet", "pg"):
        res = run_cli("run", f"jobs/{name}.yml", "--quiet", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    got = ds.dataset(tmp_path / "jobs" / "out" / "orders_merged", format="parquet").to_table().sort_by("id")
    assert got.column("id").to_pylist() == list(range(1, 521))  # each key once: updated, not appended again
    assert got.column("amount").to_pylist()[:11] == [-1.0] * 10 + [16.5]
    merged = pg_admin.execute(
        f"SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE amount = -1) FROM {pg_schema}.orders_merged"
    ).fetchone()
    assert merged == (520, 520, 10)
