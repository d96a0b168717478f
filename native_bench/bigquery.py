"""BigQuery destinations into ``bqemulator``: rows/s, load jobs and API calls per million rows.

Why: the three destinations trade delivery guarantees for request counts (one load job per write,
Arrow appends under 10 MB, insertAll requests of ``bq_max_rows_per_request`` rows); on the real service
API calls and jobs are what quotas and latency count, so they are reported per million rows next to
the throughput. The emulator (DuckDB behind a Python REST/gRPC server) is far slower than BigQuery, so
the rows/s compare the destinations with each other, not with the real service.

Each destination gets the synthetic source's typed batches (65,536 rows each) through
``prepare / write / publish`` in this process, one write per batch, timed from the first write to the
end of the publish; the row count of the published table is checked.

    .venv/bin/python -m native_bench.bigquery [--quick]     # 1M rows (--quick: 100k); insertAll: a tenth
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from native_bench import services, verify

ROWS, QUICK_ROWS = 1_000_000, 100_000
DESTINATIONS = ("bigquery", "bigquery_streaming_v2", "bigquery_streaming")
#: insertAll is ~15k rows/s on the emulator: it gets a tenth of the rows
SHARE = {"bigquery_streaming": 10}


def available() -> str | None:
    """None when the emulator can be started here without installing anything, else why not."""
    exe = services.bqemulator_path()
    if not exe.is_file():
        return f"bqemulator not installed ({exe}; the BigQuery tests install it)"
    return None


def _batches(rows: int) -> list:
    from bizon_fast.connectors.sources.synthetic.config import SyntheticSourceConfig
    from bizon_fast.connectors.sources.synthetic.source import SyntheticSource

    source = SyntheticSource(SyntheticSourceConfig(name="synthetic", stream="events", rows=rows, splits=1))
    return [b.batch for split in source.splits() for b in source.read(split, None)]


def run_one(name: str, rows: int, emu: services.Emulator) -> dict:
    from google.cloud import bigquery

    from bizon_fast.connectors.registry import destination_class
    from bizon_fast.destination.base import DestinationContext

    dataset = f"bench_{secrets.token_hex(3)}"
    client = emu.client()
    client.create_dataset(bigquery.Dataset(f"{services.BQEMU_PROJECT}.{dataset}"))
    cls = destination_class(name)
    config = cls.config_class.model_validate(
        {"project_id": services.BQEMU_PROJECT, "dataset_id": dataset, "destination_id": "t"}
    )
    ctx = DestinationContext(
        job_id=secrets.token_hex(8), pipeline="b", source_name="s", stream="e", sync_mode="full_refresh"
    )
    batches = _batches(rows)
    dest = cls(config, ctx)
    dest.prepare({})
    start = time.perf_counter()
    for seq, batch in enumerate(batches):
        dest.write("s0", seq, seq, [batch])
    dest.publish()
    seconds = time.perf_counter() - start
    dest.close()
    count, distinct = next(iter(client.query(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM `{dataset}.t`").result()))
    client.delete_dataset(f"{services.BQEMU_PROJECT}.{dataset}", delete_contents=True)
    client.close()
    verify.require(name, rows, verify.Written(count, distinct, f"table {dataset}.t"))
    per_m = 1e6 / rows
    return {
        "destination": name,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(count / seconds),  # rows read back from the table (== rows, checked above)
        "load_jobs_per_M_rows": round(getattr(dest, "load_jobs", 0) * per_m, 1),
        "api_calls_per_M_rows": round(dest.api_calls * per_m, 1),
        "requests_per_M_rows": round(getattr(dest, "requests", getattr(dest, "load_jobs", 0)) * per_m, 1),
    }


def run(quick: bool) -> list[dict]:
    rows = QUICK_ROWS if quick else ROWS
    with tempfile.TemporaryDirectory() as tmp:
        emu = services.Emulator(Path(tmp) / "bqemulator.log")
        saved = {k: os.environ.get(k) for k in emu.env()}
        os.environ.update(emu.env())
        try:
            return [run_one(name, rows // SHARE.get(name, 1), emu) for name in DESTINATIONS]
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            emu.stop()


def markdown(rows: list[dict]) -> str:
    from native_bench.result import table

    headers = ["destination", "rows", "rows/s", "load jobs / M rows", "API calls / M rows", "requests / M rows"]
    body = [
        [
            r["destination"],
            f"{r['rows']:,}",
            f"{r['rows_per_s']:,}",
            str(r["load_jobs_per_M_rows"]),
            str(r["api_calls_per_M_rows"]),
            str(r["requests_per_M_rows"]),
        ]
        for r in rows
    ]
    return table(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reason = available()
    if reason:
        print(f"skipped: {reason}")
        sys.exit(0)
    print(markdown(run(args.quick)))


if __name__ == "__main__":
    main()
