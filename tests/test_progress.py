"""Progress tells the truth (issue 15): rows read move the bar from the first batch, the ETA comes from a recent
window, the label is the pipeline's name, and ``--progress splits`` shows one line per split.

The unit tests feed numbers and a fake clock (no run); the CLI tests run ``bizon-fast run`` with stderr on a pipe,
against a destination that writes slowly so the rows read are ahead of the rows written when a line is printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from bizon_fast.engine.progress import (
    PlainProgress,
    Progress,
    RateWindow,
    RichProgressDisplay,
    SplitProgress,
    plain_line,
    plain_split_line,
)
from tests.conftest import REPO


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(p: Progress, clock: Clock, steps: list[tuple[float, int]], written: int = 0) -> None:
    """Advance the clock by each step's seconds and report rows read (bytes: 100 per row)."""
    read = p.rows_read
    for seconds, rows in steps:
        clock.now += seconds
        read += rows
        p.update(read, written, read * 100, written * 100)


# ------------------------------------------------------------ the rate window and the ETA


def test_the_rate_is_the_recent_window_not_the_since_start_average() -> None:
    window = RateWindow(window=5.0)
    t, rows = 0.0, 0
    for _ in range(200):  # 20 s at 10 rows/s
        t, rows = t + 0.1, rows + 1
        window.add(t, rows)
    for _ in range(50):  # then 5 s at 10,000 rows/s
        t, rows = t + 0.1, rows + 1000
        window.add(t, rows)
    assert window.rate(0) == pytest.approx(10_000, rel=0.03)  # since start it would be ~2,000
    assert rows / t < 2100


def test_no_rate_before_the_first_batch_nor_from_one_sample() -> None:
    window = RateWindow()
    window.add(1.0, 0)
    window.add(2.0, 0)
    assert window.rate(0) is None  # start-up is not a rate: sampling starts with something counted
    window.add(3.0, 500)
    assert window.rate(0) is None
    window.add(3.5, 1000)
    assert window.rate(0) == pytest.approx(1000)  # from the first batch on


def test_the_eta_follows_the_recent_read_rate_after_a_slow_start() -> None:
    """The issue's case: `eta 109s` at 7% of a 28 s job because start-up sat in a since-start average."""
    clock = Clock()
    p = Progress("events", clock=clock)
    p.start(1_000_000, 0)
    feed(p, clock, [(3.0, 0)])  # planning and worker start: nothing read
    feed(p, clock, [(0.1, 1000)] * 10)  # a slow first second
    feed(p, clock, [(0.1, 10_000)] * 50)  # then 100,000 rows/s for 5 s
    s = p.snapshot()
    assert s.read == 510_000 and s.written == 0
    assert s.rows_per_s == pytest.approx(100_000, rel=0.05)
    assert s.eta == pytest.approx(4.9, abs=0.3)  # since-start average (56.7k rows/s over 9 s): 8.6 s


def test_once_everything_is_read_the_eta_follows_the_writes() -> None:
    clock = Clock()
    p = Progress("events", clock=clock)
    p.start(1000, 0)
    feed(p, clock, [(0.1, 100)] * 10)
    p.update(1000, 200, 100_000, 20_000)
    clock.now += 1.0
    p.update(1000, 600, 100_000, 60_000)
    s = p.snapshot()
    assert s.fraction == 1.0 and s.written == 600
    # 400 left at the rate written since everything was read (the reading second, no writes, is not in it)
    assert s.rows_per_s == pytest.approx(600) and s.eta == pytest.approx(400 / 600)
    p.update(1000, 1000, 100_000, 100_000)
    assert p.snapshot().eta == 0.0


def test_unknown_total_counts_without_percent_or_eta() -> None:
    clock = Clock()
    p = PlainProgress("stream-job", clock=clock)
    p.start(None, 0)
    feed(p, clock, [(0.2, 5000)] * 10)
    s = p.snapshot()
    assert s.read == 50_000 and s.fraction is None and s.eta is None
    line = plain_line(s)
    assert line.startswith("progress: stream-job read 50,000 rows, written 0, 25.0 krows/s")
    assert "%" not in line and "eta" not in line


def test_resumed_rows_count_and_a_consumer_machine_shows_what_it_wrote() -> None:
    clock = Clock()
    p = Progress("events", clock=clock)
    p.start(1000, 400)  # 400 committed by an earlier attempt
    p.update(0, 100, 0, 1000)  # a broker consumer machine: its rows were read on another machine
    s = p.snapshot()
    assert (s.read, s.written) == (500, 500)


def test_the_last_numbers_are_the_whole_runs() -> None:
    clock = Clock()
    p = Progress("events", clock=clock)
    p.start(1000, 0)
    feed(p, clock, [(0.5, 250)] * 4)
    p.update(1000, 1000, 100_000, 100_000)
    clock.now += 3.0  # a recent window now would be 0 rows/s
    p.stop()
    clock.now += 60.0
    s = p.snapshot()
    assert s.elapsed == pytest.approx(5.0) and s.rows_per_s == pytest.approx(200) and s.eta == 0.0


# ------------------------------------------------------------ rendering


def render(p: RichProgressDisplay) -> str:
    console = Console(file=StringIO(), width=120, force_terminal=False, color_system=None)
    console.print(p.renderable())
    assert isinstance(console.file, StringIO)
    return console.file.getvalue()


def test_the_bar_shows_read_and_written_under_the_pipeline_name() -> None:
    clock = Clock()
    p = RichProgressDisplay("events", clock=clock)
    Progress.start(p, 1_000_000, 0)  # the numbers without rich's live thread
    feed(p, clock, [(0.1, 43_000)] * 10)
    p.update(430_000, 250_000, 43_000_000, 25_000_000)
    text = render(p)
    assert text.startswith("events ")
    assert re.search(r"43% read 430,000 · written 250,000 · 430.0 krows/s · eta 1s · 0:00:01", text), text
    assert "━" in text


def test_splits_mode_renders_one_line_per_split() -> None:
    clock = Clock()
    splits = [
        SplitProgress("orders-0", 300_000, 100_000, 500_000),
        SplitProgress("orders-1", 500_000, 500_000, 500_000, done=True),
        SplitProgress("orders-2", 0, 0, None),
    ]
    p = RichProgressDisplay("orders", splits=True, clock=clock)
    Progress.start(p, 1_500_000, 0, lambda: splits)
    feed(p, clock, [(0.2, 100_000)] * 8, written=600_000)
    lines = [line.rstrip() for line in render(p).splitlines()]
    assert lines[0].startswith("orders ")
    assert re.match(r"  orders-0 .* 60% read 300,000 · committed 100,000$", lines[1]), lines
    assert re.match(r"  orders-1 .* done read 500,000 · committed 500,000$", lines[2]), lines
    assert re.match(r"  orders-2 .* read 0 · committed 0$", lines[3]), lines


def test_split_numbers_are_asked_for_at_most_twice_a_second() -> None:
    clock = Clock()
    calls: list[float] = []

    def source() -> list[SplitProgress]:
        calls.append(clock.now)
        return []

    p = Progress("events", splits=True, clock=clock)
    p.start(None, 0, source)
    feed(p, clock, [(0.01, 10)] * 300)  # 300 supervisor turns in 3 s
    assert 6 <= len(calls) <= 8
    assert Progress("events", clock=clock).split_source is None  # bar mode never asks


def test_plain_split_lines_only_for_splits_that_moved() -> None:
    clock = Clock()
    state = {"a": SplitProgress("a", 10, 0, 100), "b": SplitProgress("b", 0, 0, 100)}
    p = PlainProgress("job", splits=True, clock=clock)
    p.start(200, 0, lambda: list(state.values()))
    first = p.lines()
    assert first[1:] == ["progress: split a read 10/100, committed 0", "progress: split b read 0/100, committed 0"]
    state["b"] = SplitProgress("b", 100, 100, 100, done=True)
    clock.now += 1.0
    p.update(110, 100, 0, 0)
    assert p.lines()[1:] == ["progress: split b read 100/100, committed 100, done"]
    assert plain_split_line(SplitProgress("c", 5, 0)) == "progress: split c read 5, committed 0"


# ------------------------------------------------------------ through the CLI (stderr is a pipe: plain lines)

PLAIN = re.compile(
    r"progress: progress-check read (?P<read>[\d,]+)/120,000 rows \(\d+%\), written (?P<written>[\d,]+), "
    r"([\d.]+ ?k?|-) ?rows/s, ([\d.]+ ?[kMG]?|-) ?B/s(, eta [\d,]+s)?"
)
SPLIT = re.compile(
    r"progress: split (?P<id>ids-\S+) read (?P<read>[\d,]+)/60,000, committed (?P<committed>[\d,]+)(, done)?"
)


def run_slow(tmp_path: Path, *args: str) -> list[str]:
    """120,000 rows in 2 splits, read in a moment, written one 0.5 MiB batch per 0.5 s: ~6 s, one plain line."""
    (tmp_path / "p.yml").write_text(
        """
name: progress-check
source: {name: synthetic, stream: events, rows: 120000, splits: 2, batch_rows: 10000}
destination: {name: slow_file, config: {destination_id: out/events, format: parquet, buffer_size: 0,
              write_delay_s: 0.5}}
engine: {queue: {config: {batch_size_mb: 0.5}}, runner: {config: {max_workers: 1}}}
"""
    )
    env = {
        **os.environ,
        "BIZON_FAST_LOG_DIR": str(tmp_path / "logs"),
        "BIZON_FAST_DESTINATIONS": "slow_file=tests.fixtures.slow_file:SlowFileDestination",
        "PYTHONPATH": str(REPO),
    }
    res = subprocess.run(
        [sys.executable, "-m", "bizon_fast", "run", "p.yml", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return [line for line in res.stderr.splitlines() if line.startswith("progress:")]


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_plain_lines_show_rows_read_ahead_of_rows_written_under_the_pipeline_name(tmp_path: Path) -> None:
    lines = run_slow(tmp_path)
    matches = [PLAIN.fullmatch(line) for line in lines]
    assert lines and all(matches), lines
    counts = [(number(m["read"]), number(m["written"])) for m in matches if m]
    assert all(read >= written for read, written in counts), counts
    assert any(read > written for read, written in counts), counts  # the reads lead: the bar moves before writes


def test_progress_splits_prints_a_line_per_split(tmp_path: Path) -> None:
    lines = run_slow(tmp_path, "--progress", "splits")
    assert any(PLAIN.fullmatch(line) for line in lines), lines
    per_split = [m for m in (SPLIT.fullmatch(line) for line in lines) if m]
    assert {m["id"] for m in per_split} == {"ids-000000-060000", "ids-060000-120000"}, lines
    assert all(number(m["read"]) >= number(m["committed"]) for m in per_split), lines
