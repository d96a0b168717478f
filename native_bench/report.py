"""Turn benchmark results into results.md, results.json, performance.md and the README's generated section.

Why a separate snippet (performance.md): the top-level README quotes the headline numbers; the lead
pastes it from the latest full run rather than copying cells by hand from the long report.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from native_bench import machine as machine_info
from native_bench.plots import DOCS_DIR
from native_bench.result import BenchResult, Target, fmt, table

README = Path(__file__).resolve().parent / "README.md"
REPO = README.parents[1]
BEGIN = "<!-- BEGIN GENERATED: python -m native_bench --update-readme -->"
END = "<!-- END GENERATED -->"
#: the documents ``--update-readme`` fills, relative to the repository root: every figure they quote from
#: a run sits between ``<!-- native_bench:begin NAME -->`` and ``<!-- native_bench:end NAME -->``, so the
#: three never disagree (they did: bizon vs bizon-fast, the transform rates, the recovery time)
DOCUMENTS = ("README.md", "docs/bizon-compat.md", "native_bench/README.md")
MARKER = re.compile(r"(<!-- native_bench:begin ([\w-]+) -->)(.*?)(<!-- native_bench:end \2 -->)", re.S)

HOW_TO_RUN = """\
```bash
.venv/bin/pip install -e '.[test,bench]'        # matplotlib for the plots (without it: md/json only)
.venv/bin/python -m native_bench                 # full suite, ~20-25 min on 2 busy cores
.venv/bin/python -m native_bench --quick         # every benchmark scaled down (CI smoke test, ~2 min)
.venv/bin/python -m native_bench --only e2e,checkpoint --out /tmp/bench
.venv/bin/python -m native_bench --update-readme # also rewrite the figures here, in README.md and docs/bizon-compat.md
.venv/bin/python -m pytest tests/test_microbench.py --benchmark-only   # microbenchmarks (pytest-benchmark)
```

Results go to `native_bench/results/<timestamp>/` (or `--out`): `results.md` (tables, machine),
`results.json` (everything, machine-readable), `performance.md` (the headline table for the top README)
and one PNG chart per workload (medians on a linear axis, whiskers from the slowest to the fastest round,
the machine, date, rows, mode and commit in the subtitle; `python -m native_bench.plots results.json`
redraws them). `--update-readme` copies a full run's charts to `docs/bench/`, committed and shown below
and in the top README. The first run creates `native_bench/.venvs/{bizon,dlt}` (about a minute each; never timed);
without PyPI those comparisons are skipped with a note. Every comparison runs its contenders interleaved
in the same invocation and reports medians (3 rounds; 1 with `--quick`), because the machine is shared."""


def _met(target: Target) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[target.met]


def _value(target: Target) -> str:
    if target.value is None:
        return "n/a"
    if target.unit == "x":
        return f"{target.value:,.2f}x"
    return f"{target.value:,.0f} {target.unit}"


def _goal(target: Target) -> str:
    op = ">=" if target.higher_is_better else "<="
    return f"{op} {target.goal:,.2f}x" if target.unit == "x" else f"{op} {target.goal:,.0f} {target.unit}"


def targets_table(results: list[BenchResult]) -> str:
    cells = [[r.name, t.label, _value(t), _goal(t), _met(t)] for r in results for t in r.targets]
    return table(["benchmark", "target", "measured", "goal", "met"], cells) if cells else "_no targets in this run_"


def _mode(meta: dict[str, Any]) -> str:
    return "quick (scaled down)" if meta["quick"] else "full"


def results_markdown(meta: dict[str, Any], results: list[BenchResult]) -> str:
    parts = [
        "# native_bench results",
        "",
        f"Mode: {_mode(meta)}; command: `{meta['command']}`; total {meta['seconds']:.0f} s.",
        "",
        "## Machine",
        "",
        machine_info.markdown(meta["machine"]),
        "",
        "## Targets",
        "",
        targets_table(results),
        "",
    ]
    if meta.get("plots_note"):
        parts += [f"_{meta['plots_note']}_", ""]
    for r in results:
        parts += [
            f"## {r.title}",
            "",
            r.description,
            "",
            f"_{r.seconds:.0f} s; load average at start {r.load_average}_",
            "",
        ]
        if r.skipped:
            parts += [f"**Skipped:** {r.skipped}", ""]
        if r.error:
            parts += ["**The benchmark failed:**", "", "```", r.error.strip(), "```", ""]
        if r.markdown:
            parts += [r.markdown, ""]
        for plot in r.plots:
            parts += [f"![{r.name}]({plot})", ""]
        if r.notes:
            parts += ["Notes:", "", *[f"- {n}" for n in r.notes], ""]
    return "\n".join(parts)


def charts_markdown(results: list[BenchResult], prefix: str, folder: Path | None = None) -> str:
    """Image links to the charts of ``results``, ``prefix`` being their folder relative to the document.

    With ``folder`` (where the links point), a chart that is not there is left out: a link never dangles.
    """
    names = [name for r in results for name in r.plots if folder is None or (folder / name).exists()]
    return "\n\n".join(f"![{Path(name).stem}]({prefix}{name})" for name in names)


def performance_markdown(
    meta: dict[str, Any], results: list[BenchResult], pictures: str | None = None, folder: Path | None = None
) -> str:
    """The headline numbers, for the top-level README; with ``pictures`` (the charts' folder relative to the
    document), the charts of the benchmarks that have targets too (every chart is in native_bench/README.md)."""
    m = meta["machine"]
    lines = [
        "## Performance",
        "",
        f"Measured by `python -m native_bench` ({_mode(meta)}) on {m['cpu_model']}, {m['logical_cores']} cores, "
        f"{m['ram_gb']} GB RAM, Python {m['python']}, pyarrow {m['versions'].get('pyarrow')}, "
        f"git {m.get('git') or 'n/a'}, {m['date']}; medians of interleaved runs on a shared machine "
        f"(load average {m['load_average_start']} at start). Details: `native_bench/README.md`.",
        "",
        targets_table(results),
    ]
    headline = _headline(results)
    if headline:
        lines += ["", headline]
    charts = charts_markdown([r for r in results if r.targets], pictures, folder) if pictures is not None else ""
    if charts:
        lines += [
            "",
            "Medians on linear axes, whiskers from the slowest to the fastest round; the grey bar is the reference "
            "each ratio is to (every chart: `native_bench/README.md`).",
            "",
            charts,
        ]
    return "\n".join(lines) + "\n"


def _headline(results: list[BenchResult]) -> str:
    """Selected end-to-end rates, one line each."""
    by = {r.name: r for r in results}
    cells = []
    if "e2e" in by:
        for row in by["e2e"].rows:
            cells.append(
                [
                    f"synthetic -> {row['destination']}, {row['workers']} workers",
                    fmt(row["rows_per_s"]),
                    fmt(row["mb_per_s"], 0),
                    fmt(row["peak_rss_mb"]),
                ]
            )
    if "alternatives" in by:
        for row in by["alternatives"].rows:
            cells.append([row["contender"], fmt(row["rows_per_s"]), "", fmt(row["peak_rss_mb"])])
    return table(["pipeline", "rows/s", "MB/s (Arrow)", "peak RSS MB (tree)"], cells) if cells else ""


def readme_section(
    meta: dict[str, Any], results: list[BenchResult], descriptions: dict[str, str], pictures: str | None = None
) -> str:
    """native_bench/README.md's generated section; ``pictures``: the charts' folder relative to it, to show them."""
    parts = [BEGIN, "", "## How to run", "", HOW_TO_RUN, "", "## What each benchmark measures", ""]
    parts += [f"- **{name}**: {text}" for name, text in descriptions.items()]
    parts += ["", "## Latest numbers", "", performance_markdown(meta, results).replace("## Performance\n\n", "")]
    for r in results:
        charts = charts_markdown([r], pictures) if pictures is not None else ""
        if r.markdown or charts:
            parts += [f"### {r.title}", ""]
        if r.markdown:
            parts += [r.markdown, ""]
        if charts:
            parts += [charts, ""]
    parts.append(END)
    return "\n".join(parts)


def update_readme(section: str, path: Path = README) -> None:
    """Replace the generated section of ``path`` (appended when the markers are missing)."""
    text = path.read_text() if path.exists() else "# native_bench\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


def _alternatives_json(result: BenchResult) -> dict[str, dict[str, Any]]:
    return {r["contender"]: r for r in result.rows if r.get("workload") == "json"}


def _bizon_table(result: BenchResult) -> str:
    """bizon vs bizon-fast on bizon's own custom source (and synthetic -> json), from the alternatives run."""
    cells = [
        [
            r["contender"],
            fmt(r["rows"]),
            fmt(r["wall_s"], 2),
            fmt(r["rows_per_s"]),
            fmt(r.get("vs_reference"), 2, "x"),
            fmt(r["rows_per_cpu_s"]),
            fmt(r["peak_rss_mb"]),
        ]
        for r in _alternatives_json(result).values()
    ]
    headers = ["command", "records", "wall s", "records/s", "vs bizon", "records per CPU-s", "peak RSS MB (tree)"]
    return table(headers, cells)


def _bizon_ratio(result: BenchResult) -> str | None:
    custom = _alternatives_json(result).get("bizon-fast (same custom source)")
    if not custom or custom.get("vs_reference") is None:
        return None
    return f"{custom['vs_reference']:.1f}x"


def _recovery_line(result: BenchResult) -> str | None:
    if not result.rows:
        return None
    r = result.rows[0]
    up, working = r.get("replacement_up_median_s"), r.get("recovery_median_s")
    if up is None or working is None:
        return None
    return (
        f"{r['kills']} SIGKILLs of random workers during a {r['rows']:,}-row run, {r['rows_lost']} rows lost, "
        f"{r['duplicates']} duplicated; a replacement is up {up:.2f} s and working {working:.2f} s (medians) "
        "after its predecessor died"
    )


def doc_blocks(
    meta: dict[str, Any], results: list[BenchResult], pictures: str | None = None, folder: Path | None = None
) -> dict[str, str]:
    """Every generated figure, by marker name; only those the run measured (``--only`` leaves the rest as is).

    ``pictures``: the charts' folder relative to the document (``folder``: where that is), for the
    performance block's image links.
    """
    by = {r.name: r for r in results if not r.error and not r.skipped}
    performance = performance_markdown(meta, results, pictures, folder)
    blocks = {"performance": "\n" + performance.replace("## Performance\n\n", "")}
    if "alternatives" in by and _alternatives_json(by["alternatives"]):
        m = meta["machine"]
        blocks["bizon-speed"] = (
            f"\n_Measured by `python -m native_bench` ({_mode(meta)}, git {m.get('git') or 'n/a'}, {m['date']}, "
            f"{m['logical_cores']} cores, medians of interleaved runs):_\n\n{_bizon_table(by['alternatives'])}\n"
        )
        if ratio := _bizon_ratio(by["alternatives"]):
            blocks["bizon-ratio"] = ratio
    if "transforms" in by and by["transforms"].markdown:
        blocks["transforms"] = "\n" + by["transforms"].markdown + "\n"
    if "supervisor" in by and by["supervisor"].markdown:
        blocks["supervisor"] = "\n" + by["supervisor"].markdown + "\n"
    if "recovery" in by and (line := _recovery_line(by["recovery"])):
        blocks["recovery"] = line
    return blocks


def fill_markers(text: str, blocks: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with every marked block that ``blocks`` has replaced; and the names replaced."""
    filled: list[str] = []

    def sub(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in blocks:
            return match.group(0)
        filled.append(name)
        return match.group(1) + blocks[name] + match.group(4)

    return MARKER.sub(sub, text), filled


def update_documents(meta: dict[str, Any], results: list[BenchResult], section: str, root: Path = REPO) -> list[str]:
    """Rewrite the generated parts of the three documents under ``root``; one line per document, saying what.

    native_bench/README.md also gets its whole generated section (``section``). A document without a
    marker is left as is and named in the lines: the figures it quotes are then not the run's.
    """
    lines = []
    for relative in DOCUMENTS:
        path = root / relative
        # the charts ``plots.publish`` copied to docs/bench, linked relative to each document
        blocks = doc_blocks(meta, results, os.path.relpath(root / DOCS_DIR, path.parent) + "/", root / DOCS_DIR)
        if relative == "native_bench/README.md":
            update_readme(section, path)
        if not path.exists():
            lines.append(f"{relative}: missing, not updated")
            continue
        text, filled = fill_markers(path.read_text(), blocks)
        path.write_text(text)
        if relative == "native_bench/README.md":
            filled.insert(0, "its generated section")
        lines.append(f"{relative}: {', '.join(filled) if filled else 'no native_bench markers: NOT updated'}")
    return lines


def write_all(out: Path, meta: dict[str, Any], results: list[BenchResult]) -> None:
    """results.json, results.md and performance.md in ``out`` (rewritten after every benchmark)."""
    data = {**meta, "benchmarks": {r.name: r.to_dict() for r in results}}
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / "results.md").write_text(results_markdown(meta, results))
    (out / "performance.md").write_text(performance_markdown(meta, results, "", out))
