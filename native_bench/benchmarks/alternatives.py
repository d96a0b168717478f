"""Against the alternatives, same workloads, same run. Records -> NDJSON: bizon 0.6.4 with a generator custom
source (1000 records a page of {id, name, age}) vs bizon-fast running that very file via ``--custom-source``
(or, when that cannot run, bizon-fast synthetic -> json with narrow rows as the reference point);
target >= 100x bizon. Synthetic -> Parquet: dlt (an Arrow resource of the same synthetic batches to its
filesystem destination) vs bizon-fast vs a hand-written single-process pyarrow loop; target: ahead of dlt.

bizon and dlt run from their own venvs (``native_bench/.venvs``, created on demand). Rates are rows
over the wall time of the whole command, startup included, for every contender alike; bizon gets
10x fewer rows (it does ~40k rows/s). Rows per CPU-second (all processes of each command) are
reported beside them: on a shared machine they move less than wall-clock rates do. (A steady-state
rate from a pair of run sizes was tried and dropped: bizon's consumer polls every 2 s, so its wall
time moves in 2 s steps and the difference of two runs says nothing.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
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

BIZON = "bizon 0.6.4 (custom source)"
BF_CUSTOM = "bizon-fast (same custom source)"
BF_JSON = "bizon-fast synthetic -> json"
DLT = "dlt (Arrow resource -> filesystem parquet)"
BF_PARQUET = "bizon-fast synthetic -> parquet"
LOOP = "pyarrow loop, one process -> parquet"


@dataclass
class Case:
    """A contender: ``run(rows)`` measures one run of ``rows`` rows of ``workload``."""

    label: str
    workload: str  # "json" | "parquet": who it is compared with
    rows: int
    run: Callable[[int], RunStats]
    row_bytes: float | None = None  # Arrow bytes per row, for MB/s


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

    return pipelines.in_fresh_dir(ctx.scratch, body, rows)


def _custom_source(rows: int, ctx: Context) -> RunStats:
    return pipelines.run_bizon_fast(
        records_pipeline("bf_records", rows),
        workers=ctx.cores,
        scratch=ctx.scratch,
        extra_args=("--custom-source", str(CUSTOM_SOURCE)),
    )


def _synthetic(config: dict, ctx: Context) -> Callable[[int], RunStats]:
    return lambda rows: pipelines.run_bizon_fast(
        pipelines.with_rows(config, rows), workers=ctx.cores, scratch=ctx.scratch
    )


def _cases(ctx: Context, notes: list[str]) -> list[Case]:
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
    versions = {"bizon": venvs.version(bizon_venv, "bizon"), "dlt": venvs.version(dlt_venv, "dlt")}
    notes.append(
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + f"; bizon-fast at {ctx.cores} workers"
    )

    json_cfg = pipelines.synthetic_pipeline(
        "bf_json", json_rows, "file", {"format": "json"}, splits=16, source={"payload_bytes": 0}
    )
    parquet_cfg = pipelines.with_rows(pipelines.example("synthetic_to_parquet.yml"), parquet_rows, "bf_parquet")
    parquet_row_bytes = pipelines.synthetic_bytes(parquet_cfg) / parquet_rows
    buffer_mib = str(parquet_cfg["destination"]["config"].get("buffer_size", 50))

    cases = []
    if bizon_venv.python:
        cases.append(Case(BIZON, "json", bizon_rows, lambda n: _bizon(bizon_venv, n, ctx)))
    # bizon-fast on bizon's own source file, through the bizon-compat layer; if it cannot run, the
    # synthetic -> json case below is the reference point instead (``run`` says so in a note).
    cases.append(Case(BF_CUSTOM, "json", json_rows, lambda n: _custom_source(n, ctx)))
    json_row_bytes = pipelines.synthetic_bytes(json_cfg) / json_rows
    cases.append(Case(BF_JSON, "json", json_rows, _synthetic(json_cfg, ctx), json_row_bytes))
    if dlt_venv.python:
        dlt = dlt_venv.python
        cases.append(
            Case(
                DLT,
                "parquet",
                parquet_rows,
                lambda n: pipelines.run_python(
                    dlt, [str(DLT_SCRIPT), str(n), "out"], scratch=ctx.scratch, expected_rows=n
                ),
                parquet_row_bytes,
            )
        )
    cases.append(Case(BF_PARQUET, "parquet", parquet_rows, _synthetic(parquet_cfg, ctx), parquet_row_bytes))
    loop = ["-m", "native_bench.baseline", "--out", "out/loop", "--buffer-mib", buffer_mib, "--rows"]
    cases.append(
        Case(
            LOOP,
            "parquet",
            parquet_rows,
            lambda n: pipelines.run_python(sys.executable, [*loop, str(n)], scratch=ctx.scratch, expected_rows=n),
            parquet_row_bytes,
        )
    )
    return cases


def run(ctx: Context) -> BenchResult:
    notes: list[str] = []
    cases = _cases(ctx, notes)
    runs = interleave({case.label: (lambda c=case: c.run(c.rows)) for case in cases}, ctx.rounds)
    rows = []
    for case in cases:
        summary = summarize(runs[case.label], case.rows, case.row_bytes and case.row_bytes * case.rows)
        if "failure" in summary:
            notes.append(f"{case.label}: {summary['failure']}")
        rows.append({"contender": case.label, "workload": case.workload, **summary})
    by = {r["contender"]: r for r in rows}

    def rate(label: str, key: str = "rows_per_s") -> float | None:
        return by[label][key] if label in by else None

    bf_json = BF_CUSTOM if rate(BF_CUSTOM) else BF_JSON
    if bf_json != BF_CUSTOM:
        notes.append(
            "bizon-fast --custom-source could not run the bizon source file, so the JSON comparison uses bizon-fast "
            "synthetic -> json (payload_bytes 0) instead"
        )
    for r in rows:
        reference = BIZON if r["workload"] == "json" else DLT
        r["vs_reference"] = ratio(r["rows_per_s"], rate(reference))
        r["cpu_vs_reference"] = ratio(r["rows_per_cpu_s"], rate(reference, "rows_per_cpu_s"))
    metrics = {
        "bizon_rows_per_s": rate(BIZON),
        "bizon_fast_json_rows_per_s": rate(bf_json),
        "bizon_fast_vs_bizon": ratio(rate(bf_json), rate(BIZON)),
        "bizon_fast_vs_bizon_per_cpu_s": ratio(rate(bf_json, "rows_per_cpu_s"), rate(BIZON, "rows_per_cpu_s")),
        "dlt_rows_per_s": rate(DLT),
        "bizon_fast_parquet_rows_per_s": rate(BF_PARQUET),
        "pyarrow_loop_rows_per_s": rate(LOOP),
        "bizon_fast_vs_dlt": ratio(rate(BF_PARQUET), rate(DLT)),
        "bizon_fast_vs_dlt_per_cpu_s": ratio(rate(BF_PARQUET, "rows_per_cpu_s"), rate(DLT, "rows_per_cpu_s")),
        "bizon_fast_vs_pyarrow_loop": ratio(rate(BF_PARQUET), rate(LOOP)),
    }
    source = "same custom source" if bf_json == BF_CUSTOM else "synthetic -> json, not the same source"
    targets = [
        Target(f"bizon-fast json rows/s / bizon ({source})", metrics["bizon_fast_vs_bizon"], BIZON_TARGET),
        Target("bizon-fast parquet rows/s / dlt", metrics["bizon_fast_vs_dlt"], DLT_TARGET),
    ]
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


def _times(value: float | None, reference: str) -> str:
    return fmt(value, 1 if (value or 0) >= 10 else 2, f"x {reference}")


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
                _times(r["vs_reference"], reference),
                fmt(r["cpu_s"], 1),
                fmt(r["cpu_cores"], 2),
                fmt(r["rows_per_cpu_s"]),
                _times(r["cpu_vs_reference"], reference),
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
        "cores busy",
        "rows per CPU-s",
        "per CPU-s vs reference",
        "peak RSS MB (tree)",
        "peak PSS MB (tree)",
        "output bytes/row",
    ]
    return table(headers, cells)
