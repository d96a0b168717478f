"""Progress of a run: a rich display on a terminal, plain periodic lines otherwise, nothing with --quiet."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

PLAIN_INTERVAL_S = 5.0


def human_rate(value: float, unit: str) -> str:
    for prefix in ("", "k", "M", "G"):
        if abs(value) < 1000:
            return f"{value:,.1f} {prefix}{unit}"
        value /= 1000
    return f"{value:,.1f} T{unit}"


class Progress:
    """Base progress: records rates so every flavour can report them; prints nothing."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.resumed = 0
        self.rows = 0
        self.nbytes = 0
        self.started = time.monotonic()

    def start(self, total: int | None, resumed_rows: int) -> None:
        self.total, self.resumed, self.started = total, resumed_rows, time.monotonic()

    def update(self, rows: int, nbytes: int) -> None:
        self.rows, self.nbytes = rows, nbytes

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass

    def rates(self) -> tuple[float, float, float | None]:
        elapsed = max(1e-9, time.monotonic() - self.started)
        rps = self.rows / elapsed
        eta = None
        if self.total and rps > 0:
            eta = max(0.0, (self.total - self.resumed - self.rows) / rps)
        return rps, self.nbytes / elapsed, eta


class PlainProgress(Progress):
    """One line every few seconds on stderr: for logs, CI and pipes."""

    def __init__(self) -> None:
        super().__init__()
        self.last = 0.0

    def start(self, total: int | None, resumed_rows: int) -> None:
        super().start(total, resumed_rows)
        self.last = time.monotonic()  # the first line after one interval, not a line of zeros

    def update(self, rows: int, nbytes: int) -> None:
        super().update(rows, nbytes)
        now = time.monotonic()
        if now - self.last >= PLAIN_INTERVAL_S:
            self.last = now
            rps, bps, eta = self.rates()
            done = self.resumed + rows
            total = f"/{self.total:,}" if self.total else ""
            eta_text = f" eta {eta:,.0f}s" if eta is not None else ""
            print(
                f"progress: {done:,}{total} rows, {human_rate(rps, 'rows/s')}, {human_rate(bps, 'B/s')}{eta_text}",
                file=sys.stderr,
                flush=True,
            )

    def note(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


class _RateColumn(ProgressColumn):
    def __init__(self, owner: RichProgressDisplay) -> None:
        super().__init__()
        self.owner = owner

    def render(self, task) -> Text:  # noqa: ANN001 - rich's Task
        rps, bps, eta = self.owner.rates()
        eta_text = f"  eta {eta:,.0f}s" if eta is not None else ""
        return Text(f"{human_rate(rps, 'rows/s')}  {human_rate(bps, 'B/s')}{eta_text}")


class RichProgressDisplay(Progress):
    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console(stderr=True)
        self.display: RichProgress | None = None
        self.task = None

    def start(self, total: int | None, resumed_rows: int) -> None:
        super().start(total, resumed_rows)
        self.display = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.completed:,.0f} rows"),
            _RateColumn(self),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            refresh_per_second=4,
        )
        self.display.start()
        self.task = self.display.add_task("moving", total=total, completed=resumed_rows)

    def update(self, rows: int, nbytes: int) -> None:
        super().update(rows, nbytes)
        if self.display is not None:
            self.display.update(self.task, completed=self.resumed + rows)

    def note(self, message: str) -> None:
        self.console.print(message)

    def stop(self) -> None:
        if self.display is not None:
            self.display.stop()
            self.display = None


def make_progress(quiet: bool) -> Progress:
    if quiet:
        return Progress()
    if sys.stderr.isatty():
        return RichProgressDisplay()
    return PlainProgress()
