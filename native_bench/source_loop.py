"""The bizon generator source's own ``get()`` loop, alone in one process: the floor for a bizon custom source.

Why: a bizon-style source pays for its own records (``SourceRecord`` objects, their dicts); the engine should
add little on top. This loads the same fixture file bizon-fast runs (through bizon-fast's ``bizon`` shim, so the
records are the very objects the engine gets), calls ``get()`` page after page until the pagination ends, and
writes ``{"rows": n, "loop_s": seconds}`` to ``--out``: the loop alone, without the interpreter start.

    python -m native_bench.source_loop --rows 1000000 --out loop.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

from bizon_fast.compat import install_bizon_alias

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bizon_generator_source.py"
PAGE_SIZE = 1_000


def loop(rows: int, page_size: int = PAGE_SIZE) -> tuple[int, float]:
    """Rows read and seconds spent calling ``get()`` until the source says it is done."""
    install_bizon_alias()
    spec = importlib.util.spec_from_file_location("bizon_generator_source", FIXTURE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.GeneratorSourceConfig(name="generator", stream="records", rows=rows, page_size=page_size)
    source = module.GeneratorSource(config)
    seen, pagination = 0, {}
    start = time.perf_counter()
    while True:
        page = source.get(pagination)
        seen += len(page.records)
        if not page.next_pagination:
            break
        pagination = page.next_pagination
    return seen, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    seen, seconds = loop(args.rows)
    args.out.write_text(json.dumps({"rows": seen, "loop_s": seconds}))


if __name__ == "__main__":
    main()
