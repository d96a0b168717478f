"""Run a command and measure its whole process tree: wall time, CPU time, peak memory.

Why the tree: bizon-fast is a supervisor plus producer and consumer processes, so the supervisor's
own numbers say little. CPU is the growth of ``getrusage(RUSAGE_CHILDREN)`` across the run: every
process of the tree is reaped by its parent, so their user+sys time lands there exactly, whatever
their lifetimes (a sampler would miss short-lived workers). Memory has no such accounting (a reaped
child's ``ru_maxrss`` is a per-process maximum, never a sum), so a thread polls psutil every
``POLL_S`` and keeps the largest sum of RSS over the root and all its descendants.

RSS counts a shared page once per process that maps it: the shared-memory ring appears in the RSS of
the supervisor and of every worker. The sum is therefore an upper bound of the memory the tree holds,
which is the honest figure for a "does memory stay flat" check.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

POLL_S = 0.05
TAIL_CHARS = 2_000


@dataclass
class RunStats:
    """One command's run. ``cpu_s`` is user+sys of the whole tree; ``peak_rss`` the largest sampled tree sum."""

    cmd: list[str]
    wall_s: float
    cpu_s: float
    peak_rss: int
    peak_procs: int
    returncode: int
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        """One line saying why the run failed: the last non-empty line of stderr (else stdout)."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return f"exit {self.returncode}: {lines[-1][:300]}"
        return f"exit {self.returncode}"


class _Sampler(threading.Thread):
    """Polls the tree rooted at ``pid`` until stopped; keeps the peak RSS sum and process count."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = 0
        self.peak_procs = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            self.sample(root)
            self._stop_event.wait(POLL_S)

    def sample(self, root: psutil.Process) -> None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        alive = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
                alive += 1
        self.peak_rss = max(self.peak_rss, total)
        self.peak_procs = max(self.peak_procs, alive)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - TAIL_CHARS))
        return f.read().decode(errors="replace")


def measure(cmd: list[str], *, cwd: str | Path, env: dict[str, str] | None = None, timeout: float = 900) -> RunStats:
    """Run ``cmd`` to completion in ``cwd``; kill its whole session after ``timeout`` seconds.

    Not thread-safe: the CPU figure is the growth of this process's reaped-children time, so only
    one measured command may run at a time (the suite runs everything sequentially anyway).
    """
    with tempfile.TemporaryDirectory(prefix="native_bench_io_") as io_dir:
        out_path, err_path = Path(io_dir) / "stdout", Path(io_dir) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            cpu_before = _cpu_children()
            start = time.perf_counter()
            # its own session, so that a timeout can kill every process of the tree at once
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
            sampler = _Sampler(proc.pid)
            sampler.start()
            try:
                returncode = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                returncode = -9
                err.write(f"\nnative_bench: killed after {timeout:.0f} s\n".encode())
            wall = time.perf_counter() - start
            sampler.stop()
            cpu = _cpu_children() - cpu_before
        return RunStats(
            cmd=list(cmd),
            wall_s=wall,
            cpu_s=cpu,
            peak_rss=sampler.peak_rss,
            peak_procs=sampler.peak_procs,
            returncode=returncode,
            stdout=_tail(out_path),
            stderr=_tail(err_path),
        )
