"""Transport: how fast Arrow batches cross from a producer process to a consumer process, shared-memory ring
vs one in-process memcpy (the physical limit), multiprocessing.Queue and a Pipe, by batch size.

This wraps ``native_bench.transport`` (its docstring has the method); the suite adds the targets at
4 MiB (ring >= 0.5x memcpy, >= 8x Queue), JSON and a plot.
"""

from __future__ import annotations

import contextlib

from native_bench import transport as bench
from native_bench.benchmarks.external import patched
from native_bench.context import Context
from native_bench.result import BenchResult, Target, ratio

NAME = "transport"
TITLE = "Transport: shared-memory ring vs memcpy, Queue, Pipe"
AT = 4 << 20
#: --quick moves the module's quick volume at the one batch size the targets are about, not at five
QUICK_BATCH_SIZES = [AT]


def run(ctx: Context) -> BenchResult:
    with patched(bench, BATCH_SIZES=QUICK_BATCH_SIZES) if ctx.quick else contextlib.nullcontext():
        rows = bench.run(quick=ctx.quick)
    by = {(r["transport"], r["batch_bytes"]): r for r in rows}
    gbps = {name: by.get((name, AT), {}).get("gbps") for name in ("memcpy", *bench.TRANSPORTS)}
    vs_memcpy = ratio(gbps["shm_ring"], gbps["memcpy"])
    vs_queue = ratio(gbps["shm_ring"], gbps["mp_queue"])
    return BenchResult(
        name=NAME,
        title=TITLE,
        description="",
        rows=rows,
        metrics={
            **{f"{name}_gbps_4mib": value for name, value in gbps.items()},
            "ring_vs_memcpy_4mib": vs_memcpy,
            "ring_vs_queue_4mib": vs_queue,
        },
        targets=[
            Target("ring / memcpy at 4 MiB (wall clock)", vs_memcpy, 0.5),
            Target("ring / multiprocessing.Queue at 4 MiB", vs_queue, 8.0),
        ],
        markdown=bench.markdown(rows),
    )
