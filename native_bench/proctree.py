"""Run a command and measure its whole process tree: wall time, CPU time, peak memory.

Why the tree: bizon-fast is a supervisor plus producer and consumer processes, so the supervisor's
own numbers say little.

CPU is the growth of ``getrusage(RUSAGE_CHILDREN)`` across the run, which counts every process of
the tree exactly, short-lived ones included, *if* each is reaped by a parent that is reaped in turn.
A forkserver breaks that chain: the workers are reaped by the forkserver, which nobody waits for
once the supervisor is gone (measured: 0.7 s counted of 2.9 s spent). So this process makes itself
the tree's child subreaper (``PR_SET_CHILD_SUBREAPER``): orphans are re-parented here and reaped by
``measure``, and their time lands in ``RUSAGE_CHILDREN`` too.

Memory has no such accounting (a reaped child's ``ru_maxrss`` is a per-process maximum, never a sum),
so a thread polls the tree every ``POLL_S`` and keeps the largest sum of RSS over the root and all its
descendants. RSS counts a shared page once per process that maps it (the shared-memory ring, and every
page a forkserver child shares with its parent), so the sum overstates what the tree holds; PSS splits
shared pages among their users and sums to the real figure, but reading it costs ~2 ms a process, so
it is sampled every ``PSS_EVERY`` polls only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

POLL_S = 0.05
PSS_EVERY = 10  # one PSS sample per 10 RSS samples (0.5 s)
TAIL_CHARS = 2_000
ORPHAN_WAIT_S = 30.0
_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class RunStats:
    """One command's run. ``cpu_s`` is user+sys of the whole tree; memory figures are sampled tree sums."""

    cmd: list[str]
    wall_s: float
    cpu_s: float
    peak_rss: int
    peak_pss: int | None
    peak_procs: int
    returncode: int
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    rows_written: int | None = None  # read back from the output after the run (``native_bench.verify``)
    verify_error: str | None = None  # the output was not what the run was asked to write: a failed run

    @property
    def ok(self) -> bool:
        """Exit 0 is not enough: a run whose output was read back and found wrong failed."""
        return self.returncode == 0 and self.verify_error is None

    def failure(self) -> str:
        """One line saying why the run failed: the wrong output, else the last line of stderr (else stdout)."""
        if self.verify_error:
            return self.verify_error
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return f"exit {self.returncode}: {lines[-1][:300]}"
        return f"exit {self.returncode}"


@functools.cache
def _become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux, once); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _pss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class _Sampler(threading.Thread):
    """Polls the tree rooted at ``pid`` until stopped: peak RSS and PSS sums, process count, pids seen."""

    def __init__(self, pid: int, pss_every: int = PSS_EVERY) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.pss_every = pss_every
        self.peak_rss = 0
        self.peak_pss: int | None = None
        self.peak_procs = 0
        self.seen: set[int] = {pid}
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        polls = 0
        while not self._stop_event.is_set():
            self.sample(root, with_pss=polls % self.pss_every == 0)
            polls += 1
            self._stop_event.wait(POLL_S)

    def sample(self, root: psutil.Process, with_pss: bool) -> None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = alive = 0
        pss_ok = with_pss
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss
                alive += 1
                self.seen.add(proc.pid)
                if with_pss:
                    value = _pss(proc.pid)
                    pss_ok = pss_ok and value is not None
                    pss += value or 0
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_procs = max(self.peak_procs, alive)
        if pss_ok:
            self.peak_pss = max(self.peak_pss or 0, pss)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _reap_orphans(pids: set[int], deadline: float) -> None:
    """Wait for descendants of the measured tree that were re-parented here, so their CPU time is counted.

    Only pids seen in the tree, plus zombies re-parented here (processes too short-lived to be
    sampled): nothing else of this process is ever reaped behind its owner's back.
    """
    me = psutil.Process()
    while True:
        try:
            children = me.children()
        except psutil.Error:
            return
        mine = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.pid in pids or child.status() == psutil.STATUS_ZOMBIE:
                    mine.append(child.pid)
        if not mine:
            return
        for pid in mine:
            try:
                os.waitpid(pid, 0 if time.monotonic() < deadline else os.WNOHANG)
            except ChildProcessError:
                pass
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    raise
        if time.monotonic() >= deadline:
            for pid in mine:  # still running past the deadline: part of the tree, so killed like it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = float("inf")


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - TAIL_CHARS))
        return f.read().decode(errors="replace")


def measure(
    cmd: list[str],
    *,
    cwd: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    pss_every: int = PSS_EVERY,
) -> RunStats:
    """Run ``cmd`` to completion in ``cwd``; kill its whole session after ``timeout`` seconds.

    ``pss_every``: one PSS sample per so many polls (footprint comparisons sample more often, at a CPU cost).

    Not thread-safe: the CPU figure is the growth of this process's reaped-children time, so only
    one measured command may run at a time (the suite runs everything sequentially anyway).
    """
    with tempfile.TemporaryDirectory(prefix="native_bench_io_") as io_dir:
        out_path, err_path = Path(io_dir) / "stdout", Path(io_dir) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            subreaper = _become_subreaper()
            cpu_before = _cpu_children()
            start = time.perf_counter()
            # its own session, so that a timeout can kill every process of the tree at once
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
            sampler = _Sampler(proc.pid, pss_every)
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
            if subreaper:
                _reap_orphans(sampler.seen, time.monotonic() + ORPHAN_WAIT_S)
            cpu = _cpu_children() - cpu_before
        return RunStats(
            cmd=list(cmd),
            wall_s=wall,
            cpu_s=cpu,
            peak_rss=sampler.peak_rss,
            peak_pss=sampler.peak_pss,
            peak_procs=sampler.peak_procs,
            returncode=returncode,
            stdout=_tail(out_path),
            stderr=_tail(err_path),
        )
