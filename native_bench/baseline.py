"""The hand-written single-process loop: generate the synthetic table and write it with pyarrow.parquet.

Why: it is what a competent engineer writes without any engine, so it is the bar the engine must
clear with more cores (issue 2 asks for >= 1.5x on 2 workers). It uses the synthetic source's own
generator (same data, same batch size) and the ``file`` destination's Parquet settings (its
dictionary-column choice, the writer's defaults otherwise, one ``write_table`` per batch, one part
file per ``buffer_size`` MiB), so the only difference left is the engine around it.

    python -m native_bench.baseline --rows 20000000 --out DIR [--buffer-mib 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# The destination's own choice of dictionary columns: the same settings, not a copy that could drift.
from bizon_fast.connectors.destinations.file.destination import dictionary_columns
from bizon_fast.connectors.sources.synthetic.config import SyntheticSourceConfig
from bizon_fast.connectors.sources.synthetic.source import SyntheticGenerator

MiB = 1 << 20


def write_parquet(rows: int, out: Path, buffer_mib: float, batch_rows: int, payload_bytes: int, seed: int = 0) -> int:
    """Generate ``rows`` synthetic rows and write them as Parquet parts under ``out``; return the parts written."""
    out.mkdir(parents=True, exist_ok=True)
    generator = SyntheticGenerator(seed, payload_bytes)
    limit = max(1, int(buffer_mib * MiB))
    writer: pq.ParquetWriter | None = None
    parts = written = 0
    for lo in range(0, rows, batch_rows):
        table = pa.Table.from_batches([generator.batch(lo, min(rows, lo + batch_rows))])
        if writer is None:
            writer = pq.ParquetWriter(
                str(out / f"part-{parts:06d}.parquet"), table.schema, use_dictionary=dictionary_columns(table)
            )
            parts += 1
        writer.write_table(table)
        written += table.nbytes
        if written >= limit:
            writer.close()
            writer, written = None, 0
    if writer is not None:
        writer.close()
    return parts


def main() -> None:
    defaults = SyntheticSourceConfig(name="synthetic", stream="events")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--buffer-mib", type=float, default=50, help="MiB of Arrow data per part file")
    parser.add_argument("--batch-rows", type=int, default=defaults.batch_rows)
    parser.add_argument("--payload-bytes", type=int, default=defaults.payload_bytes)
    args = parser.parse_args()
    start = time.perf_counter()
    parts = write_parquet(args.rows, args.out, args.buffer_mib, args.batch_rows, args.payload_bytes)
    elapsed = time.perf_counter() - start
    print(f"{args.rows} rows in {parts} parts, {elapsed:.2f} s, {args.rows / elapsed:,.0f} rows/s")


if __name__ == "__main__":
    main()
