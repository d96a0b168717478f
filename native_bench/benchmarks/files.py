"""Files: a folder of Parquet files -> Parquet and -> noop through ``bizon-fast run`` (source ``file``) at 1 and 2
workers vs one process of ``pyarrow.dataset`` (scan + ``write_dataset``; scan only for noop), and a folder of CSV
files -> Parquet vs polars' ``scan_csv().sink_parquet()``; target: bizon-fast ahead of both at 2 workers (noop vs
the scan alone is reported, not a target).

The input is the synthetic source's table (id, ts, user_id, amount, quantity, category, payload: about 83 Arrow
bytes a row) written once per benchmark run, outside every timing: Parquet files of several row groups, CSV files
as pyarrow writes them. The alternatives are the libraries' own one-liners with their defaults, which already use
every core through their thread pools; bizon-fast runs the config a user would write (``configs``' destinations).
Every run's output is read back (rows and distinct ids; noop: the rows committed, the scan: the rows it counted).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from native_bench import pipelines, verify
from native_bench.context import Context
from native_bench.proctree import RunStats, measure
from native_bench.result import BenchResult, Target, fmt, ratio, table
from native_bench.rounds import interleave, summarize

NAME = "files"
TITLE = "Files: Parquet -> parquet / noop and CSV -> parquet, vs pyarrow.dataset and polars"
SCRIPT = pipelines.FIXTURES / "file_baselines.py"
WORKERS = (1, 2)
TARGET = 1.0
PAYLOAD_BYTES = 32
ROW_GROUP_ROWS = 128 * 1024

#: workload -> (files, rows full, rows quick); full runs last several seconds, so bizon-fast's fixed start-up
#: (interpreter, planning, spawning workers: about a second) weighs little, as in a real backfill
SIZES: dict[str, tuple[int, int, int]] = {"parquet": (16, 24_000_000, 1_000_000), "csv": (8, 12_000_000, 500_000)}

PA_WRITE = "pyarrow.dataset scan + write_dataset (one process)"
PA_SCAN = "pyarrow.dataset scan only (one process)"
POLARS = "polars scan_csv().sink_parquet() (one process)"


@dataclass
class Case:
    """A contender on one workload: ``run()`` measures one run; ``bizon_fast_workers`` None for an alternative."""

    label: str
    workload: str  # parquet->parquet | parquet->noop | csv->parquet
    rows: int
    run: Callable[[], RunStats]
    bizon_fast_workers: int | None = None


def write_inputs(root: Path, workload: str, files: int, rows: int) -> float:
    """The synthetic table cut into ``files`` files under ``root/workload``; returns its Arrow bytes."""
    from bizon_fast.connectors.sources.synthetic.source import SyntheticGenerator

    folder = root / workload
    folder.mkdir(parents=True, exist_ok=True)
    generator = SyntheticGenerator(0, PAYLOAD_BYTES)
    per_file = -(-rows // files)
    nbytes = 0
    for i in range(files):
        lo, hi = i * per_file, min(rows, (i + 1) * per_file)
        batches = [generator.batch(a, min(hi, a + 65_536)) for a in range(lo, hi, 65_536)]
        data = pa.Table.from_batches(batches)
        nbytes += data.nbytes
        if workload == "parquet":
            pq.write_table(data, folder / f"part-{i:04d}.parquet", row_group_size=ROW_GROUP_ROWS)
        else:
            pacsv.write_csv(data, folder / f"part-{i:04d}.csv")
    return nbytes


def pipeline(name: str, source_dir: Path, fmt_: str, destination: str) -> dict:
    """The pipeline a user writes: source ``file`` on the folder's glob, a destination from ``configs/``."""
    example = "synthetic_to_parquet.yml" if destination == "parquet" else "synthetic_to_noop.yml"
    config = {
        "name": name,
        "source": {"name": "file", "stream": "events", "path": f"{source_dir}/*.{fmt_}", "format": fmt_},
        "destination": pipelines.example(example)["destination"],
    }
    if destination == "parquet":
        config["destination"]["config"]["destination_id"] = f"out/{name}"
    return config


def _bizon_fast(config: dict, workers: int, rows: int, ctx: Context) -> Callable[[], RunStats]:
    return lambda: pipelines.run_bizon_fast(config, workers=workers, scratch=ctx.scratch, expected_rows=rows)


def _script(mode: str, source_dir: Path, rows: int, ctx: Context) -> Callable[[], RunStats]:
    """One run of ``file_baselines.py MODE``, its output read back like a pipeline's."""
    target = {"pyarrow-parquet": "out/pyarrow", "pyarrow-scan": "count.txt", "polars-csv": "out/polars.parquet"}[mode]

    def written(folder: Path) -> verify.Written | None:
        if mode == "pyarrow-scan":
            return verify.Written(int((folder / "count.txt").read_text()), None, "rows counted by the scan")
        return pipelines.default_output(folder)

    def body(folder: Path) -> RunStats:
        (folder / "out").mkdir()
        return measure([sys.executable, str(SCRIPT), mode, str(source_dir), target], cwd=folder)

    return lambda: pipelines.in_fresh_dir(ctx.scratch, body, rows, written)


def _cases(ctx: Context, inputs: dict[str, tuple[Path, int]]) -> list[Case]:
    parquet_dir, parquet_rows = inputs["parquet"]
    csv_dir, csv_rows = inputs["csv"]
    cases = []
    for w in WORKERS:
        config = pipeline(f"files_parquet_w{w}", parquet_dir, "parquet", "parquet")
        cases.append(
            Case(
                f"bizon-fast, {w} worker(s)",
                "parquet->parquet",
                parquet_rows,
                _bizon_fast(config, w, parquet_rows, ctx),
                w,
            )
        )
    cases.append(
        Case(PA_WRITE, "parquet->parquet", parquet_rows, _script("pyarrow-parquet", parquet_dir, parquet_rows, ctx))
    )
    for w in WORKERS:
        config = pipeline(f"files_noop_w{w}", parquet_dir, "parquet", "noop")
        cases.append(
            Case(
                f"bizon-fast, {w} worker(s)",
                "parquet->noop",
                parquet_rows,
                _bizon_fast(config, w, parquet_rows, ctx),
                w,
            )
        )
    cases.append(Case(PA_SCAN, "parquet->noop", parquet_rows, _script("pyarrow-scan", parquet_dir, parquet_rows, ctx)))
    for w in WORKERS:
        config = pipeline(f"files_csv_w{w}", csv_dir, "csv", "parquet")
        cases.append(
            Case(f"bizon-fast, {w} worker(s)", "csv->parquet", csv_rows, _bizon_fast(config, w, csv_rows, ctx), w)
        )
    cases.append(Case(POLARS, "csv->parquet", csv_rows, _script("polars-csv", csv_dir, csv_rows, ctx)))
    return cases


def run(ctx: Context) -> BenchResult:
    notes: list[str] = []
    root = ctx.scratch / "files_input"
    inputs: dict[str, tuple[Path, int]] = {}
    arrow_bytes: dict[str, float] = {}
    input_mb: dict[str, float] = {}
    for workload, (files, full, quick) in SIZES.items():
        rows = ctx.size(full, quick)
        arrow_bytes[workload] = write_inputs(root, workload, files, rows)
        inputs[workload] = (root / workload, rows)
        input_mb[workload] = sum(p.stat().st_size for p in (root / workload).iterdir()) / 1e6
        notes.append(f"input {workload}: {rows:,} rows in {files} files, {input_mb[workload]:,.0f} MB on disk")
    notes.append(f"Parquet inputs have row groups of {ROW_GROUP_ROWS:,} rows; the machine has {ctx.cores} cores")
    cases = _cases(ctx, inputs)
    runs = interleave({f"{c.workload}/{c.label}": c.run for c in cases}, ctx.rounds)
    rows: list[dict] = []
    for case in cases:
        source = case.workload.split("->")[0]
        summary = summarize(runs[f"{case.workload}/{case.label}"], case.rows, arrow_bytes[source])
        if "failure" in summary:
            notes.append(f"{case.workload}, {case.label}: {summary['failure']}")
        wall = summary["wall_s"]
        summary["input_mb_per_s"] = input_mb[source] / wall if wall else None
        rows.append({"workload": case.workload, "contender": case.label, "workers": case.bizon_fast_workers, **summary})
    reference = {"parquet->parquet": PA_WRITE, "parquet->noop": PA_SCAN, "csv->parquet": POLARS}
    by = {(r["workload"], r["contender"]): r for r in rows}
    for r in rows:
        r["vs_reference"] = ratio(r["rows_per_s"], by[(r["workload"], reference[r["workload"]])]["rows_per_s"])
    metrics: dict[str, float | None] = {}
    for r in rows:
        key = r["workload"].replace("->", "_to_")
        who = f"bizon_fast_w{r['workers']}" if r["workers"] else r["contender"].split()[0].split(".")[0]
        metrics[f"{key}_{who}_rows_per_s"] = r["rows_per_s"]
        if r["workers"]:
            metrics[f"{key}_{who}_vs_reference"] = r["vs_reference"]
    top = max(WORKERS)
    # the targets: ahead of the one-process library at 2 workers wherever a file is written; noop vs a
    # scan that drops its batches is reported beside them (what reading and the engine cost, nothing written)
    targets = [
        Target(
            f"parquet -> parquet, bizon-fast {top} workers / {PA_WRITE}",
            metrics[f"parquet_to_parquet_bizon_fast_w{top}_vs_reference"],
            TARGET,
        ),
        Target(
            f"csv -> parquet, bizon-fast {top} workers / {POLARS}",
            metrics[f"csv_to_parquet_bizon_fast_w{top}_vs_reference"],
            TARGET,
        ),
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description="",
        rows=rows,
        metrics=metrics,
        targets=targets,
        notes=notes,
        markdown=_markdown(rows, reference),
    )


def _markdown(rows: list[dict], reference: dict[str, str]) -> str:
    cells = [
        [
            r["workload"],
            r["contender"],
            fmt(r["rows"]),
            fmt(r["wall_s"], 2),
            fmt(r["rows_per_s"]),
            fmt(r["mb_per_s"], 1),
            fmt(r["input_mb_per_s"], 1),
            fmt(r["vs_reference"], 2, "x"),
            fmt(r["cpu_s"], 1),
            fmt(r["cpu_cores"], 2),
            fmt(r["rows_per_cpu_s"]),
            fmt(r["peak_rss_mb"]),
            fmt(r["output_mb"]),
        ]
        for r in rows
    ]
    headers = [
        "workload",
        "contender",
        "rows",
        "wall s",
        "rows/s",
        "MB/s (Arrow)",
        "MB/s (input files)",
        "vs one-process library",
        "CPU s",
        "cores busy",
        "rows per CPU-s",
        "peak RSS MB (tree)",
        "output MB",
    ]
    return table(headers, cells)
