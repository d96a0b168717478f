"""What a run really wrote: its rows and distinct ids, read back from the output before a rate is reported.

Why: a rate of nominal rows over wall time, counted on the exit code alone, would report a run that
wrote half its rows (or every row twice) at full speed. Every pipeline benchmark reads its output back
after the timed run (outside the timing) and a run whose rows or distinct ids differ from what it was
asked to move is a failed run, with the counts in its failure line; rates come from the rows read back.

Where the rows are read: Parquet files (pyarrow dataset: rows and ``count_distinct`` of ``id``), NDJSON
files (polars: lines and distinct ``source_record_id``, else ``id``), a Postgres table (``count(*)``,
``count(DISTINCT id)``) and, for ``noop`` (which keeps nothing), the rows the checkpoint committed for
the run's job (no ids there: a noop run is checked on its count only).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from native_bench.proctree import RunStats

#: every verification failure of this process, in order: the suite fails a benchmark that had any
FAILURES: list[str] = []


@dataclass(frozen=True)
class Written:
    """Rows read back from a run's output; ``distinct_ids`` None where the output keeps no ids (noop)."""

    rows: int
    distinct_ids: int | None
    where: str


def _data_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Output files under ``root``, skipping staging (``.``) and bookkeeping (``_``, e.g. dlt's ``_dlt_loads``)."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if path.is_file() and path.name.endswith(suffixes) and not any(p.startswith((".", "_")) for p in parts):
            found.append(path)
    return found


def parquet(files: list[Path], where: str) -> Written:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    ids = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["id"]).column("id")
    return Written(len(ids), pc.count_distinct(ids).as_py(), where)


def ndjson(files: list[Path], where: str) -> Written:
    import polars as pl

    frame = pl.scan_ndjson([str(f) for f in files], infer_schema_length=100)
    names = frame.collect_schema().names()
    key = "source_record_id" if "source_record_id" in names else "id"
    rows, distinct = frame.select(pl.len(), pl.col(key).n_unique()).collect().row(0)
    return Written(rows, distinct, where)


def files_under(root: Path) -> Written | None:
    """Rows in the Parquet (else NDJSON) files under ``root``; None when there are none."""
    if files := _data_files(root, (".parquet",)):
        return parquet(files, f"{len(files)} Parquet files")
    if files := _data_files(root, (".json", ".jsonl", ".ndjson")):
        return ndjson(files, f"{len(files)} NDJSON files")
    return None


def postgres_table(table: str, **connect: Any) -> Written:
    """``count(*)`` and ``count(DISTINCT id)`` of ``table`` (``connect``: psycopg.connect's arguments)."""
    import psycopg

    with psycopg.connect(**connect) as conn:
        rows, distinct = conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
    return Written(rows, distinct, f"table {table}")


def _pg_connect(details: dict[str, Any]) -> dict[str, Any]:
    if details.get("dsn"):
        return {"conninfo": details["dsn"]}
    keys = {"host": "host", "port": "port", "database": "dbname", "username": "user", "password": "password"}
    return {arg: details[key] for key, arg in keys.items() if details.get(key) is not None}


def checkpoint_rows(folder: Path, config: dict[str, Any]) -> Written:
    """Rows the checkpoint committed for the pipeline's latest job (sqlite file in ``folder`` or Postgres)."""
    backend = (config.get("engine") or {}).get("backend") or {}
    details = backend.get("config") or {}
    kind = backend.get("type", "sqlite")
    job = "(SELECT id FROM {s}bizon_fast_jobs WHERE name = {p} ORDER BY created_at DESC LIMIT 1)"
    if kind == "postgres":
        import psycopg

        schema = details.get("schema") or "public"
        query = f"SELECT COALESCE(SUM(rows), 0) FROM {schema}.bizon_fast_cursors WHERE job_id = " + job.format(
            s=f"{schema}.", p="%s"
        )
        with psycopg.connect(**_pg_connect(details)) as conn:
            [rows] = conn.execute(query, (config["name"],)).fetchone()
        return Written(int(rows), None, f"checkpoint {schema}.bizon_fast_cursors")
    if kind != "sqlite":
        raise ValueError(f"cannot read the committed rows of a {kind!r} backend")
    database = details.get("database") or "bizon"
    path = folder / (database if database.endswith((".sqlite3", ".db", ".sqlite")) else f"{database}.sqlite3")
    query = "SELECT COALESCE(SUM(rows), 0) FROM bizon_fast_cursors WHERE job_id = " + job.format(s="", p="?")
    with sqlite3.connect(path) as conn:
        [rows] = conn.execute(query, (config["name"],)).fetchone()
    return Written(int(rows), None, f"checkpoint {path.name}")


def pipeline_output(folder: Path, config: dict[str, Any]) -> Written:
    """What a ``bizon-fast run`` of ``config`` in ``folder`` wrote, read from where its destination writes."""
    dest = config["destination"]
    details = dest.get("config") or {}
    if dest["name"] == "noop":
        return checkpoint_rows(folder, config)
    if dest["name"] == "postgres":
        return postgres_table(details["destination_id"], **_pg_connect(details))
    found = files_under(folder / "out")
    if found is None:
        return Written(0, 0, "no output files under out/")
    return found


def require(name: str, expected: int, written: Written) -> int:
    """For benchmarks that time runs their own way: the rows written, or RuntimeError (the benchmark fails)."""
    if written.rows != expected or (written.distinct_ids is not None and written.distinct_ids != written.rows):
        message = (
            f"{name}: wrong output: {written.rows:,} rows ({written.where}), {written.distinct_ids} distinct ids;"
            f" expected {expected:,} rows, each id once"
        )
        FAILURES.append(message)
        print(f"native_bench: RUN FAILED VERIFICATION: {message}", flush=True)
        raise RuntimeError(message)
    return written.rows


def check(stats: RunStats, expected: int, written: Written | Exception) -> RunStats:
    """Record what ``stats``' run wrote; a run that wrote other than ``expected`` distinct rows fails, loudly.

    ``written`` is an exception when the output could not be read back: that fails the run too (a rate
    is never reported for rows nobody counted).
    """
    if not stats.ok:
        return stats
    if isinstance(written, Exception):
        stats.verify_error = f"output not verified: {type(written).__name__}: {written}"
    else:
        stats.rows_written = written.rows
        ids_ok = written.distinct_ids is None or written.distinct_ids == written.rows
        if written.rows != expected or not ids_ok:
            stats.verify_error = (
                f"wrong output: {written.rows:,} rows ({written.where}), "
                f"{'n/a' if written.distinct_ids is None else f'{written.distinct_ids:,}'} distinct ids; "
                f"expected {expected:,} rows, each id once"
            )
    if stats.verify_error:
        FAILURES.append(stats.verify_error)
        print(f"native_bench: RUN FAILED VERIFICATION: {' '.join(stats.cmd[-6:])}: {stats.verify_error}", flush=True)
    return stats
