"""Against the alternatives, same workloads, same run. Records -> NDJSON: bizon 0.6.4 with a generator custom
source (1000 records a page of {id, name, age}) vs bizon-fast running that very file via ``--custom-source``
(or, when that cannot run, bizon-fast synthetic -> json with narrow rows as the reference point);
target >= 100x bizon. Synthetic -> Parquet: dlt (an Arrow resource of the same synthetic batches to its
filesystem destination) vs bizon-fast vs a hand-written single-process pyarrow loop; target: ahead of dlt.

bizon and dlt run from their own venvs (``native_bench/.venvs``, created on demand). Rates are rows
over the wall time of the whole command, startup included, for every contender alike; bizon gets
fewer rows (it does ~40k rows/s) and the rates are compared.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from native_bench import pipelines, venvs
from native_bench.context import Context
from native_bench.proctree import RunStats, measure
from native_bench.result import BenchResult, Target, fmt, ratio, table
from native_bench.rounds import interleave, summarize

NAME = "alternatives"
TITLE = "Against the alternatives: bizon, dlt, a single-process pyarrow loop"
CUSTOM_SOURCE = pipelines.FIXTURES / "bizon_generator_source.py"
DLT_SCRIPT = pipelines.FIXTURES / "dlt_synthetic.py"
BIZON_REQUIREMENTS = ["bizon==0.6.4"]
DLT_REQUIREMENTS = ["dlt[parquet]==1.31.0", "numpy", "msgspec", "pydantic"]
BIZON_TARGET = 100.0
DLT_TARGET = 1.0
PAGE_SIZE = 1_000
PROBE_ROWS = 10_000


def records_pipeline(name: str, rows: int) -> dict:
    """bizon's YAML for the generator custom source -> file (NDJSON); accepted by both engines as is."""
    return {
        "name": name,
        "source": {"name": "generator", "stream": "records", "rows": rows, "page_size": PAGE_SIZE},
        "destination": {"name": "file", "config": {"destination_id": f"out/{name}", "format": "json"}},
    }


def _bizon(venv: venvs.Venv, rows: int, ctx: Context) -> RunStats:
    def body(folder: Path) -> RunStats:
        (folder / "out").mkdir()
        (folder / "pipeline.yml").write_text(yaml.safe_dump(records_pipeline("bizon_records", rows)))
        bizon = Path(venv.python).parent / "bizon"
        return measure([str(bizon), "run", "pipeline.yml", "--custom-source", str(CUSTOM_SOURCE)], cwd=folder)

    return pipelines.in_fresh_dir(ctx.scratch, body)


def _custom_source_run(rows: int, ctx: Context) -> RunStats:
    return pipelines.run_bizon_fast(
        records_pipeline("bf_records", rows),
        workers=ctx.cores,
        scratch=ctx.scratch,
        extra_args=("--custom-source", str(CUSTOM_SOURCE)),
    )


def run(ctx: Context) -> BenchResult:
    notes: list[str] = []
    bizon_rows = ctx.size(200_000, 50_000)
    json_rows = ctx.size(2_000_000, 200_000)
    parquet_rows = ctx.size(4_000_000, 500_000)

    bizon_venv = venvs.ensure("bizon", BIZON_REQUIREMENTS, "import bizon.cli.main")
    dlt_venv = venvs.ensure("dlt", DLT_REQUIREMENTS, "import dlt, pyarrow, numpy, msgspec, pydantic")
    for venv in (bizon_venv, dlt_venv):
        if venv.problem:
            notes.append(f"{venv.name} skipped: {venv.problem}")
        elif venv.created_s:
            notes.append(f"created the {venv.name} venv in {venv.created_s:.0f} s (once; not part of any timing)")

    # bizon-fast on bizon's own custom source, if the compatibility layer can load it; probed once, small.
    probe = _custom_source_run(PROBE_ROWS, ctx)
    custom_ok = probe.ok
    if not custom_ok:
        notes.append(
            "bizon-fast --custom-source on the bizon source file failed, so the JSON comparison uses bizon-fast "
            f"synthetic -> json (payload_bytes 0) instead: {probe.failure()}"
        )

    json_cfg = pipelines.synthetic_pipeline(
        "bf_json", json_rows, "file", {"format": "json"}, splits=16, source={"payload_bytes": 0}
    )
    parquet_cfg = pipelines.with_rows(pipelines.example("synthetic_to_parquet.yml"), parquet_rows, "bf_parquet")
    buffer_mib = parquet_cfg["destination"]["config"].get("buffer_size", 50)
    loop_args = ["-m", "native_bench.baseline", "--rows", str(parquet_rows), "--out", "out/loop"]
    loop_args += ["--buffer-mib", str(buffer_mib)]

    # (label, workload, rows, payload bytes for MB/s or None, runner)
    cases: list[tuple[str, str, int, float | None, Callable[[], RunStats]]] = []
    if bizon_venv.python:
        cases.append(
            ("bizon 0.6.4 (custom source)", "json", bizon_rows, None, lambda: _bizon(bizon_venv, bizon_rows, ctx))
        )
    if custom_ok:
        cases.append(
            ("bizon-fast (same custom source)", "json", json_rows, None, lambda: _custom_source_run(json_rows, ctx))
        )
    cases.append(
        (
            "bizon-fast synthetic -> json",
            "json",
            json_rows,
            pipelines.synthetic_bytes(json_cfg),
            lambda: pipelines.run_bizon_fast(json_cfg, workers=ctx.cores, scratch=ctx.scratch),
        )
    )
    if dlt_venv.python:
        dlt_args = [str(DLT_SCRIPT), str(parquet_rows), "out"]
        cases.append(
            (
                "dlt (Arrow resource -> filesystem parquet)",
                "parquet",
                parquet_rows,
                pipelines.synthetic_bytes(parquet_cfg),
                lambda: pipelines.run_python(dlt_venv.python, dlt_args, scratch=ctx.scratch),
            )
        )
    cases.append(
        (
            "bizon-fast synthetic -> parquet",
            "parquet",
            parquet_rows,
            pipelines.synthetic_bytes(parquet_cfg),
            lambda: pipelines.run_bizon_fast(parquet_cfg, workers=ctx.cores, scratch=ctx.scratch),
        )
    )
    cases.append(
        (
            "pyarrow loop, one process -> parquet",
            "parquet",
            parquet_rows,
            pipelines.synthetic_bytes(parquet_cfg),
            lambda: pipelines.run_python(sys.executable, loop_args, scratch=ctx.scratch),
        )
    )

    runs = interleave({label: runner for label, _, _, _, runner in cases}, ctx.rounds)
    rows = []
    for label, workload, n, nbytes, _ in cases:
        summary = summarize(runs[label], n, nbytes)
        if "failure" in summary:
            notes.append(f"{label}: {summary['failure']}")
        rows.append({"contender": label, "workload": workload, **summary})
    rate = {r["contender"]: r["rows_per_s"] for r in rows}
    bf_json = rate.get("bizon-fast (same custom source)") or rate.get("bizon-fast synthetic -> json")
    vs_bizon = ratio(bf_json, rate.get("bizon 0.6.4 (custom source)"))
    vs_dlt = ratio(rate.get("bizon-fast synthetic -> parquet"), rate.get("dlt (Arrow resource -> filesystem parquet)"))
    vs_loop = ratio(rate.get("bizon-fast synthetic -> parquet"), rate.get("pyarrow loop, one process -> parquet"))
    for r in rows:
        base = (
            rate.get("bizon 0.6.4 (custom source)")
            if r["workload"] == "json"
            else rate.get("dlt (Arrow resource -> filesystem parquet)")
        )
        r["vs_reference"] = ratio(r["rows_per_s"], base)
    metrics = {
        "bizon_rows_per_s": rate.get("bizon 0.6.4 (custom source)"),
        "bizon_fast_json_rows_per_s": bf_json,
        "bizon_fast_vs_bizon": vs_bizon,
        "dlt_rows_per_s": rate.get("dlt (Arrow resource -> filesystem parquet)"),
        "bizon_fast_parquet_rows_per_s": rate.get("bizon-fast synthetic -> parquet"),
        "pyarrow_loop_rows_per_s": rate.get("pyarrow loop, one process -> parquet"),
        "bizon_fast_vs_dlt": vs_dlt,
        "bizon_fast_vs_pyarrow_loop": vs_loop,
    }
    json_what = "same custom source" if custom_ok else "synthetic -> json, not the same source"
    targets = [
        Target(f"bizon-fast json rows/s / bizon ({json_what})", vs_bizon, BIZON_TARGET),
        Target("bizon-fast parquet rows/s / dlt", vs_dlt, DLT_TARGET),
    ]
    versions = {"bizon": venvs.version(bizon_venv, "bizon"), "dlt": venvs.version(dlt_venv, "dlt")}
    notes.append(
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + f"; bizon-fast at {ctx.cores} workers"
    )
    return BenchResult(
        name=NAME,
        title=TITLE,
        description="",
        rows=rows,
        metrics=metrics,
        targets=targets,
        notes=notes,
        markdown=_markdown(rows),
    )


def _markdown(rows: list[dict]) -> str:
    cells = []
    for r in rows:
        per_row = r["output_mb"] * 1e6 / r["rows"] if r["output_mb"] else None
        reference = "bizon" if r["workload"] == "json" else "dlt"
        cells.append(
            [
                r["workload"],
                r["contender"],
                fmt(r["rows"]),
                fmt(r["wall_s"], 2),
                fmt(r["rows_per_s"]),
                fmt(r["vs_reference"], 1 if (r["vs_reference"] or 0) >= 10 else 2, f"x {reference}"),
                fmt(r["cpu_s"], 1),
                fmt(r["rows_per_cpu_s"]),
                fmt(r["peak_rss_mb"]),
                fmt(r["peak_pss_mb"]),
                fmt(per_row, 0),
            ]
        )
    headers = [
        "workload",
        "contender",
        "rows",
        "wall s",
        "rows/s",
        "vs reference",
        "CPU s",
        "rows per CPU-s",
        "peak RSS MB (tree)",
        "peak PSS MB (tree)",
        "output bytes/row",
    ]
    return table(headers, cells)
