"""The bizon generator source's own ``get()`` loop, alone in one process: the floor for a bizon custom source.

Why: a bizon-style source pays for its own records (``SourceRecord`` objects, their dicts); the engine should
add little on top. This loads the same fixture file bizon-fast runs (through bizon-fast's ``bizon`` shim, so the
records are the very objects the engine gets), calls ``get()`` page after page until the pagination ends, and
writes ``{"rows": n, "loop_s": wall seconds, "loop_cpu_s": ...}`` to ``--out``: the loop alone, without the
interpreter start.

It then reads the same records once more through the engine's source side in the same process -- the bizon
adapter's ``read`` (``get()``, each page to one Arrow batch) and the Arrow IPC serialization a producer writes
into a ring slot, per 1 MiB of pages -- and adds ``engine_cpu_s``: what the engine's producer spends, ``get()``
included, without the processes around it, in CPU seconds of this process like ``loop_cpu_s``.

    python -m native_bench.source_loop --rows 1000000 --out loop.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import pyarrow as pa

from bizon_fast.compat import install_bizon_alias
from bizon_fast.engine.build import build_source
from bizon_fast.engine.slots import HELD_CORE_BATCH_MB
from bizon_fast.source.base import Split

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bizon_generator_source.py"
PAGE_SIZE = 1_000
#: a bizon source's default batch (``slots.HELD_CORE_BATCH_MB``): a slot per 1 MiB of pages
BATCH_BYTES = int(HELD_CORE_BATCH_MB * (1 << 20))


def loop(rows: int, page_size: int = PAGE_SIZE) -> tuple[int, float, float]:
    """Rows read, wall and CPU seconds spent calling ``get()`` until the source says it is done.

    The CPU time (``process_time``) is what the producer-path comparison uses: on a shared machine it moves far
    less from run to run than wall time.
    """
    install_bizon_alias()
    spec = importlib.util.spec_from_file_location("bizon_generator_source", FIXTURE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.GeneratorSourceConfig(name="generator", stream="records", rows=rows, page_size=page_size)
    source = module.GeneratorSource(config)
    seen, pagination = 0, {}
    wall, start = time.perf_counter(), time.process_time()
    while True:
        page = source.get(pagination)
        seen += len(page.records)
        if not page.next_pagination:
            break
        pagination = page.next_pagination
    return seen, time.perf_counter() - wall, time.process_time() - start


def engine_side(rows: int, page_size: int = PAGE_SIZE) -> tuple[int, float]:
    """Rows and CPU seconds through the adapter (get(), page -> batch) and the IPC write of each 1 MiB of pages."""
    config = {"name": "generator", "stream": "records", "rows": rows, "page_size": page_size}
    source = build_source({**config, "source_file_path": str(FIXTURE)})
    seen, pending, pending_bytes = 0, [], 0
    start = time.process_time()
    for page in source.read(Split(id="records"), None):
        seen += page.batch.num_rows
        pending.append(page.batch)
        pending_bytes += page.batch.nbytes
        if pending_bytes >= BATCH_BYTES:
            _ipc(pending)
            pending, pending_bytes = [], 0
    if pending:
        _ipc(pending)
    return seen, time.process_time() - start


_SLOT = bytearray(4 * BATCH_BYTES)  # a ring slot's stand-in: written in place, as the ring's producer does


def _ipc(batches: list[pa.RecordBatch]) -> None:
    sink = pa.FixedSizeBufferWriter(pa.py_buffer(_SLOT))
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    seen, wall_s, cpu_s = loop(args.rows)
    through, engine_s = engine_side(args.rows)
    if through != seen:
        raise SystemExit(f"the engine's source side read {through} rows, the loop {seen}")
    args.out.write_text(json.dumps({"rows": seen, "loop_s": wall_s, "loop_cpu_s": cpu_s, "engine_cpu_s": engine_s}))


if __name__ == "__main__":
    main()
