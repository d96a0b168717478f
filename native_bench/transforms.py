"""Transform benchmark: rows/s of bizon's per-record ``python:`` transform vs vectorized ``sql:``/``polars:``.

Why: bizon's only transform runs Python per record (JSON decode, ``exec``, JSON encode); bizon-fast keeps
those semantics for compatibility and adds a vectorized path. This measures both on the same data --
bizon source records ``{id, name, age}`` in batches of ``BATCH_ROWS`` (about one 4 MiB ring slot), the
name upper-cased -- exactly as a consumer applies them (``bizon_fast.transform.apply``), one core,
median of ``ROUNDS``. All three produce byte-identical ``data`` (checked). On source records the
vectorized path still decodes and re-encodes each record's JSON (in polars); the same query on typed
columns -- a native source's batches -- shows the vectorized path without that cost.

When a bizon install is found (``$BIZON_PYTHON``, or ``native_bench/.venvs/bizon``), bizon's own
``Transform.apply_transforms`` runs the same python transform on the same rows for reference.

    .venv/bin/python -m native_bench.transforms [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import pyarrow as pa

from bizon_fast.source.records import records_to_batch
from bizon_fast.transform.apply import build_transforms

ROWS = 1_000_000
QUICK_ROWS = 200_000
BATCH_ROWS = 50_000
ROUNDS = 3
NAMES = ["bizon", "croco", "froggy", "turtle", "poulpo"]
PYTHON = "if 'name' in data:\n    data['name'] = data['name'].upper()\n"
TRANSFORMS = {
    "python": {"label": "upper", "python": PYTHON},
    "sql": {"label": "upper", "sql": "SELECT id, UPPER(name) AS name, age FROM batch"},
    "polars": {"label": "upper", "polars": "[pl.col('id'), pl.col('name').str.to_uppercase(), pl.col('age')]"},
}

_BIZON_SCRIPT = """
import json, sys, time
import polars as pl
from bizon.transform.config import TransformModel
from bizon.transform.transform import Transform
rows, batch_rows, rounds, code = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
names = ["bizon", "croco", "froggy", "turtle", "poulpo"]
frames = []
for start in range(0, rows, batch_rows):
    ids = range(start, min(rows, start + batch_rows))
    frames.append(pl.DataFrame({"id": [str(i) for i in ids],
        "data": [json.dumps({"id": i, "name": names[i % 5], "age": i % 100}) for i in ids]}))
transform = Transform([TransformModel(label="upper", python=code)])
walls, cpus = [], []
for _ in range(rounds):
    wall, cpu = time.perf_counter(), time.process_time()
    for frame in frames:
        transform.apply_transforms(frame)
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
print(json.dumps([walls, cpus]))
"""


def _batches(rows: int) -> list[pa.RecordBatch]:
    out = []
    for start in range(0, rows, BATCH_ROWS):
        ids = range(start, min(rows, start + BATCH_ROWS))
        out.append(records_to_batch([{"id": i, "data": {"id": i, "name": NAMES[i % 5], "age": i % 100}} for i in ids]))
    return out


def _typed(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """The same records as typed columns, the layout of a native source (what the vectorized path is for)."""
    return [
        pa.Table.from_pylist([json.loads(t) for t in b.column("data").to_pylist()]).to_batches()[0] for b in batches
    ]


def _time(apply, batches: list[pa.RecordBatch]) -> tuple[list[float], list[float], list[pa.RecordBatch]]:  # noqa: ANN001
    """Wall and CPU seconds (all threads: polars runs on a pool) of each of ``ROUNDS``, and the last output."""
    walls, cpus = [], []
    out: list[pa.RecordBatch] = []
    for _ in range(ROUNDS):
        wall, cpu = time.perf_counter(), time.process_time()
        out = [b for batch in batches for b in apply([batch])]
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, out


def _row(name: str, rows: int, walls: list[float], cpus: list[float]) -> dict:
    """Medians of the rounds; ``seconds_rounds`` keeps each round's wall time (the plot's whiskers)."""
    seconds, cpu = statistics.median(walls), statistics.median(cpus)
    row = {"transform": name, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}
    row["rows_per_cpu_s"] = rows / cpu if cpu else None
    row["seconds_rounds"] = walls
    return row


def _bizon_python() -> Path | None:
    explicit = os.environ.get("BIZON_PYTHON")
    if explicit:
        return Path(explicit)
    managed = Path(__file__).resolve().parent / ".venvs" / "bizon" / "bin" / "python"
    return managed if managed.exists() else None


def _bizon_row(rows: int) -> dict | None:
    python = _bizon_python()
    if python is None:
        return None
    args = [str(python), "-c", _BIZON_SCRIPT, str(rows), str(BATCH_ROWS), str(ROUNDS), PYTHON]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"transform": "bizon python (reference)", "rows": rows, "error": done.stderr.strip()[-300:]}
    walls, cpus = json.loads(done.stdout.strip().splitlines()[-1])
    return _row("bizon python (reference)", rows, walls, cpus)


def run(quick: bool = False) -> list[dict]:
    """One row per transform: ``transform``, ``rows``, ``seconds`` (median round), ``rows_per_s``, ``rows_per_cpu_s``.

    CPU time is reported beside wall time because it hardly moves when other jobs share the machine.
    """
    rows = QUICK_ROWS if quick else ROWS
    batches = _batches(rows)
    results: list[dict] = []
    outputs: dict[str, list[str]] = {}
    for name, spec in TRANSFORMS.items():
        apply = build_transforms([spec])
        assert apply is not None
        walls, cpus, out = _time(apply, batches)
        outputs[name] = [text for b in out for text in b.column("data").to_pylist()[:3]]
        results.append(_row(f"{name} (source records)", rows, walls, cpus))
    if len({tuple(v) for v in outputs.values()}) != 1:
        raise AssertionError(f"the transforms disagree: {outputs}")
    typed = _typed(batches)
    for name in ("sql", "polars"):
        apply = build_transforms([TRANSFORMS[name]])
        walls, cpus, _ = _time(apply, typed)
        results.append(_row(f"{name} (typed columns)", rows, walls, cpus))
    bizon = _bizon_row(rows)
    if bizon is not None:
        results.append(bizon)
    return results


def markdown(results: list[dict]) -> str:
    base = next(r["rows_per_s"] for r in results if r["transform"] == "python (source records)")
    cpu_base = next(r["rows_per_cpu_s"] for r in results if r["transform"] == "python (source records)")
    lines = [
        "| transform | rows | seconds | rows/s | vs python | rows per CPU-second | vs python |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['transform']} | {r['rows']:,} | - | - | {r['error']} | | |")
            continue
        lines.append(
            f"| {r['transform']} | {r['rows']:,} | {r['seconds']:.3f} | {r['rows_per_s']:,.0f} | "
            f"{r['rows_per_s'] / base:.1f}x | {r['rows_per_cpu_s']:,.0f} | {r['rows_per_cpu_s'] / cpu_base:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows instead of {ROWS:,}")
    args = parser.parse_args()
    print(markdown(run(quick=args.quick)))


if __name__ == "__main__":
    main()
