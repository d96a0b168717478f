"""``python -m native_bench``: run the benchmarks, write results.md, results.json, performance.md and plots.

Why benchmarks and not timed tests: the machine is shared and noisy, so a fixed threshold would
flap. Every comparison instead runs its contenders side by side in the same invocation and reports
medians and ratios; targets are reported as met or not, never asserted. The exit status says only
whether every selected benchmark ran and produced numbers (what the CI smoke test checks).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from native_bench import machine, plots, report, verify
from native_bench.benchmarks import ALL, BY_NAME, description
from native_bench.context import Context
from native_bench.result import BenchResult

RESULTS = Path(__file__).resolve().parent / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m native_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scale every benchmark down (CI smoke test, ~2 min)")
    parser.add_argument("--out", type=Path, help="results folder (default: native_bench/results/<timestamp>/)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BY_NAME)}")
    parser.add_argument(
        "--update-readme",
        action="store_true",
        help="rewrite the run's figures in README.md, docs/bizon-compat.md and native_bench/README.md",
    )
    parser.add_argument(
        "--docs-root",
        type=Path,
        help="with --update-readme: the folder holding the three documents (default: this repository)",
    )
    parser.add_argument("--scratch", type=Path, help="where runs write their output (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown or not names:
            parser.error(
                f"--only: unknown benchmark {', '.join(unknown) or '(none given)'}; choose from {', '.join(BY_NAME)}"
            )
        args.only = names
    if args.docs_root and not args.update_readme:
        parser.error("--docs-root only applies with --update-readme")
    if args.update_readme and args.quick and not args.docs_root:
        parser.error("--update-readme --quick: quick numbers must not land in the documents; give --docs-root (a copy)")
    return args


def _run_one(module, ctx: Context) -> BenchResult:  # noqa: ANN001 - a benchmark module
    start = time.perf_counter()
    load = machine.load_average()
    print(f"native_bench: {module.NAME} (load average {load}) ...", flush=True)
    verify.FAILURES.clear()
    try:
        result = module.run(ctx)
    except Exception:  # one broken benchmark must not cost the others their numbers
        result = BenchResult(name=module.NAME, title=module.TITLE, description="", error=traceback.format_exc())
    if verify.FAILURES and not result.error:  # a run's output was wrong: its numbers are not reported as valid
        result.error = "runs wrote other than what they were asked to:\n" + "\n".join(verify.FAILURES)
    result.description = description(module)
    result.load_average = load
    result.seconds = time.perf_counter() - start
    if not (result.error or result.skipped or result.numbers()):
        result.error = "the benchmark produced no numbers"
    status = "FAILED" if result.error else f"skipped ({result.skipped})" if result.skipped else "ok"
    print(f"native_bench: {module.NAME} {status} in {result.seconds:.0f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    modules = [BY_NAME[n] for n in args.only] if args.only else ALL
    out = args.out or RESULTS / (time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="native_bench_", dir=args.scratch))
    ctx = Context.make(args.quick, out, scratch)
    meta = {
        "quick": args.quick,
        "command": shlex.join(["python", "-m", "native_bench", *(sys.argv[1:] if argv is None else argv)]),
        "benchmarks_run": [m.NAME for m in modules],
        "machine": machine.describe(),
        "seconds": 0.0,
    }
    start = time.perf_counter()
    results: list[BenchResult] = []
    try:
        for module in modules:
            results.append(_run_one(module, ctx))
            meta["seconds"] = time.perf_counter() - start
            report.write_all(out, meta, results)  # a later crash still leaves what was measured
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta["machine"]["load_average_end"] = machine.load_average()
    meta["plots_note"] = plots.render(results, out, meta)
    meta["seconds"] = time.perf_counter() - start
    report.write_all(out, meta, results)
    if args.update_readme:  # --quick only with --docs-root (_parse): quick charts never replace the committed ones
        root = args.docs_root or report.REPO
        copied = plots.publish(results, out, root / plots.DOCS_DIR)
        print(f"native_bench: --update-readme: {len(copied)} charts copied to {root / plots.DOCS_DIR}")
        descriptions = {m.NAME: description(m) for m in modules}
        section = report.readme_section(meta, results, descriptions, "../" + plots.DOCS_DIR.as_posix() + "/")
        for line in report.update_documents(meta, results, section, root):
            print(f"native_bench: --update-readme: {line}")
    print(report.targets_table(results))
    if meta["plots_note"]:
        print(meta["plots_note"])
    print(f"native_bench: {meta['seconds']:.0f} s; results in {out}")
    failed = [r.name for r in results if r.error]
    if failed:
        print(f"native_bench: failed: {', '.join(failed)} (see results.md)", file=sys.stderr)
    return 1 if failed else 0
