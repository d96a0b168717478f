"""Progress of a run: a rich display on a terminal, plain periodic lines otherwise, nothing with --quiet.

Why it counts rows *read* as well as rows written: consumers hold batches until their buffer fills
(50 MiB by default), so on a short job the written count sits at 0 for seconds and then jumps to the
end. Rows read move from the first batch a producer fills, so the bar follows them and the written
count is shown beside it. Rates and the ETA come from a recent window (``RATE_WINDOW_S``), not the
since-start average, which is wrong for the first seconds (start-up is in it) and after any stall.

This module is handed plain numbers (and, for ``--progress splits``, a callable that returns
``SplitProgress`` records): it never reads the run's state itself, so it stays below the supervisor.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

# rich is imported by the live display only: a quiet or piped run never draws one (rich is ~40 ms of start-up)
if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.progress_bar import ProgressBar
    from rich.table import Table

PLAIN_INTERVAL_S = 5.0  # a plain ``progress:`` line this often (logs, CI, pipes)
RATE_WINDOW_S = 5.0  # rates and the ETA look this far back
RATE_MIN_SPAN_S = 0.25  # no rate from samples closer together than this (one batch is not a rate)
SAMPLE_EVERY_S = 0.1  # the supervisor reports every loop turn; the window keeps one sample per this
SPLITS_EVERY_S = 0.5  # per-split numbers are asked for at most this often
BAR_WIDTH = 30
SPLIT_BAR_WIDTH = 16


def human_rate(value: float, unit: str) -> str:
    """``1234567, 'rows/s'`` -> ``1.2 Mrows/s``: rates read at a glance."""
    for prefix in ("", "k", "M", "G"):
        if abs(value) < 1000:
            return f"{value:,.1f} {prefix}{unit}"
        value /= 1000
    return f"{value:,.1f} T{unit}"


@dataclass(frozen=True)
class SplitProgress:
    """One split as ``--progress splits`` shows it: rows read (committed before this run included), committed."""

    split_id: str
    read: int
    committed: int
    total: int | None = None  # the split's estimated rows, when its source knows them
    done: bool = False


SplitSource = Callable[[], list[SplitProgress]]


class RateWindow:
    """Rates of cumulative counters over the last ``window`` seconds.

    Samples start with the first one that has something counted: the time before the first batch
    (planning, worker start) is not a rate. The oldest sample kept is the newest one at least
    ``window`` old, so a rate always spans about the window once the run is that old.
    """

    def __init__(self, window: float = RATE_WINDOW_S, min_span: float = RATE_MIN_SPAN_S) -> None:
        self.window = window
        self.min_span = min_span
        self.samples: deque[tuple[float, tuple[int, ...]]] = deque()

    def add(self, now: float, *values: int) -> None:
        if not self.samples:
            if any(values):
                self.samples.append((now, values))
            return
        if len(self.samples) >= 2 and self.samples[-1][0] - self.samples[-2][0] < SAMPLE_EVERY_S:
            self.samples[-1] = (now, values)  # the newest sample stays current until it is SAMPLE_EVERY_S apart
        else:
            self.samples.append((now, values))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def rate(self, index: int) -> float | None:
        """Units per second of counter ``index`` over the window; None until the samples span ``min_span``."""
        if len(self.samples) < 2:
            return None
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        if t1 - t0 < self.min_span:
            return None
        return max(0.0, (v1[index] - v0[index]) / (t1 - t0))


@dataclass(frozen=True)
class Snapshot:
    """What every display shows, computed once per render."""

    label: str
    read: int
    written: int
    total: int | None
    rows_per_s: float | None
    bytes_per_s: float | None
    eta: float | None
    elapsed: float

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.read / self.total)


class Progress:
    """Base progress: keeps the numbers and the rate window so every flavour can report them; prints nothing."""

    def __init__(self, label: str = "", *, splits: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # tests feed their own time
        self.label = label or "run"
        self.show_splits = splits
        self.total: int | None = None
        self.resumed = 0
        self.rows_read = 0
        self.rows_written = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.started = self.clock()
        self.window = RateWindow()
        self.tail = RateWindow()  # the samples since everything was read (a known total only)
        self.split_source: SplitSource | None = None
        self.split_rows: list[SplitProgress] = []
        self.splits_at = 0.0
        self.stopped: float | None = None  # when the work ended: the last render shows whole-run rates

    def start(self, total: int | None, resumed_rows: int, split_source: SplitSource | None = None) -> None:
        """The run's work starts: ``total`` rows for the whole job, ``resumed_rows`` of them committed already."""
        self.total, self.resumed, self.started = total, resumed_rows, self.clock()
        self.window = RateWindow()
        self.tail = RateWindow()
        self.split_source = split_source if self.show_splits else None
        self.splits_at = 0.0
        self.stopped = None
        self._poll_splits(self.started)

    def update(self, rows_read: int, rows_written: int, bytes_read: int, bytes_written: int) -> None:
        """This run's counters (cumulative). Called every supervisor turn: cheap unless splits are due."""
        # a broker consumer machine never sees its batches read: what it wrote was read somewhere
        self.rows_read, self.rows_written = max(rows_read, rows_written), rows_written
        self.bytes_read, self.bytes_written = max(bytes_read, bytes_written), bytes_written
        now = self.clock()
        self.window.add(now, self.rows_read, self.rows_written, self.bytes_read, self.bytes_written)
        if self.total and self.resumed + self.rows_read >= self.total:
            # all read, consumers still writing what they buffer: rates from here on are the writes'
            self.tail.add(now, self.rows_read, self.rows_written, self.bytes_read, self.bytes_written)
        self._poll_splits(now)

    def _poll_splits(self, now: float) -> None:
        if self.split_source is not None and now >= self.splits_at:
            self.splits_at = now + SPLITS_EVERY_S
            self.split_rows = self.split_source()

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        self.finish()

    def finish(self) -> None:
        """The work ended: freeze the clock; rates become the whole run's (a recent window of nothing is 0)."""
        if self.stopped is None:
            self.stopped = self.clock()
            self._poll_splits(self.stopped + SPLITS_EVERY_S)  # the splits' final state

    def snapshot(self) -> Snapshot:
        read, written = self.resumed + self.rows_read, self.resumed + self.rows_written
        if self.stopped is not None:
            elapsed = max(1e-9, self.stopped - self.started)
            rate, bytes_rate = self.rows_written / elapsed, self.bytes_written / elapsed
            eta = 0.0 if self.total and written >= self.total else None
            return Snapshot(self.label, read, written, self.total, rate, bytes_rate, eta, elapsed)
        rate, bytes_rate, eta = self.window.rate(0), self.window.rate(2), None
        if self.total and read < self.total:
            eta = (self.total - read) / rate if rate else None  # reading: the recent read rate
        elif self.total and written < self.total:
            # all read: the writes since then (a window reaching back into the reading would see the buffering)
            rate, bytes_rate = self.tail.rate(1), self.tail.rate(3)
            eta = (self.total - written) / rate if rate else None
        elif self.total:
            eta = 0.0
        return Snapshot(self.label, read, written, self.total, rate, bytes_rate, eta, self.clock() - self.started)


def _rate_text(value: float | None, unit: str) -> str:
    return human_rate(value, unit) if value is not None else f"- {unit}"


class PlainProgress(Progress):
    """One line every few seconds on stderr: for logs, CI and pipes."""

    def __init__(self, label: str = "", *, splits: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(label, splits=splits, clock=clock)
        self.last = 0.0
        self.printed: dict[str, SplitProgress] = {}

    def start(self, total: int | None, resumed_rows: int, split_source: SplitSource | None = None) -> None:
        super().start(total, resumed_rows, split_source)
        self.last = self.clock()  # the first line after one interval, not a line of zeros

    def update(self, rows_read: int, rows_written: int, bytes_read: int, bytes_written: int) -> None:
        super().update(rows_read, rows_written, bytes_read, bytes_written)
        now = self.clock()
        if now - self.last >= PLAIN_INTERVAL_S:
            self.last = now
            for line in self.lines():
                print(line, file=sys.stderr, flush=True)

    def lines(self) -> list[str]:
        """The job's line, then (``--progress splits``) one per split that moved since the last lines."""
        lines = [plain_line(self.snapshot())]
        for split in self.split_rows:
            if self.printed.get(split.split_id) != split:
                self.printed[split.split_id] = split
                lines.append(plain_split_line(split))
        return lines

    def note(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


def plain_line(s: Snapshot) -> str:
    """``progress: events read 430,000/1,000,000 rows (43%), written 250,000, 1.2 Mrows/s, 48.0 MB/s, eta 3s``."""
    total = f"/{s.total:,}" if s.total else ""
    percent = f" ({s.fraction:.0%})" if s.fraction is not None else ""
    eta = f", eta {s.eta:,.0f}s" if s.eta is not None else ""
    return (
        f"progress: {s.label} read {s.read:,}{total} rows{percent}, written {s.written:,}, "
        f"{_rate_text(s.rows_per_s, 'rows/s')}, {_rate_text(s.bytes_per_s, 'B/s')}{eta}"
    )


def plain_split_line(split: SplitProgress) -> str:
    """``progress: split orders-3 read 120,000/250,000, committed 100,000, done``."""
    total = f"/{split.total:,}" if split.total else ""
    done = ", done" if split.done else ""
    return f"progress: split {split.split_id} read {split.read:,}{total}, committed {split.committed:,}{done}"


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class RichProgressDisplay(Progress):
    """A live bar on a terminal: rows read with written beside it, and per-split lines with ``--progress splits``."""

    def __init__(
        self,
        label: str = "",
        *,
        splits: bool = False,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from rich.console import Console

        super().__init__(label, splits=splits, clock=clock)
        self.console = console or Console(stderr=True)
        self.live: Live | None = None

    def start(self, total: int | None, resumed_rows: int, split_source: SplitSource | None = None) -> None:
        from rich.live import Live

        super().start(total, resumed_rows, split_source)
        # rendered on rich's refresh thread from numbers the supervisor's thread set: nothing else is read there
        self.live = Live(
            console=self.console,
            get_renderable=self.renderable,
            refresh_per_second=4,
            transient=False,
        )
        self.live.start()

    def renderable(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        s = self.snapshot()
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, justify="right")
        grid.add_column(no_wrap=True)
        percent = f"{s.fraction:.0%}" if s.fraction is not None else ""
        parts = [f"read {s.read:,}", f"written {s.written:,}", _rate_text(s.rows_per_s, "rows/s")]
        if s.eta is not None:
            parts.append(f"eta {s.eta:,.0f}s")
        parts.append(_elapsed(s.elapsed))
        grid.add_row(Text(s.label, style="bold"), _bar(s.total, s.read, BAR_WIDTH), percent, " · ".join(parts))
        if not self.show_splits:
            return grid
        return Group(grid, self._splits_grid())

    def _splits_grid(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, justify="right")
        grid.add_column(no_wrap=True)
        room = max(5, self.console.size.height - 4)
        splits = self.split_rows
        # more splits than lines: the ones in flight first, then those not started, then the done ones
        shown = splits if len(splits) <= room else sorted(splits, key=_split_order)[: room - 1]
        for split in shown:
            fraction = min(1.0, split.read / split.total) if split.total else None
            percent = "done" if split.done else (f"{fraction:.0%}" if fraction is not None else "")
            grid.add_row(
                Text(f"  {split.split_id}"),
                _bar(split.total, split.read, SPLIT_BAR_WIDTH, done=split.done),
                percent,
                f"read {split.read:,} · committed {split.committed:,}",
            )
        if len(shown) < len(splits):
            done = sum(1 for x in splits if x.done)
            grid.add_row(Text(f"  … {len(splits) - len(shown)} more splits ({done} of {len(splits)} done)"), "", "", "")
        return grid

    def note(self, message: str) -> None:
        self.console.print(message)

    def stop(self) -> None:
        self.finish()
        if self.live is not None:
            self.live.stop()  # a last render: the final numbers stay on the screen
            self.live = None


def _split_order(split: SplitProgress) -> tuple[int, str]:
    if split.done:
        return 2, split.split_id
    return (0 if split.read > 0 else 1), split.split_id


def _bar(total: int | None, completed: int, width: int, *, done: bool = False) -> ProgressBar:
    from rich.progress_bar import ProgressBar

    if done:
        return ProgressBar(total=1, completed=1, width=width)
    if not total:
        return ProgressBar(total=None, width=width)  # unknown size (a stream, an API): it pulses, no percent
    return ProgressBar(total=total, completed=min(completed, total), width=width)


def make_progress(quiet: bool, label: str = "", *, splits: bool = False) -> Progress:
    """The display for this run: nothing with --quiet, a live bar on a terminal, plain lines otherwise."""
    if quiet:
        return Progress(label, splits=splits)
    if sys.stderr.isatty():
        return RichProgressDisplay(label, splits=splits)
    return PlainProgress(label, splits=splits)
