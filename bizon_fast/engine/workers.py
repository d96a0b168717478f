"""The worker pool: starts workers, hears them, and restarts the crashed within a budget, with backoff.

It knows processes, not work: which split or slots a worker held is the dispatch part's business
(``engine/dispatch.py``, ``engine/distributed.py``). What it decides is when a dead worker comes back:
at once the first time, then after 0.25, 0.5, 1 ... 5 s when the same role and index keep dying, and
never once ``max_restarts`` restarts are spent. A hot spare (a warmed-up process) takes the next
replacement's place with one pipe message instead of a process start.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from bizon_fast.engine import messages as m
from bizon_fast.engine.handles import WorkerHandle, promote, start_worker
from bizon_fast.engine.spec import WorkerSpec

log = logging.getLogger("bizon_fast.supervisor")

MAX_BACKOFF_S = 5.0
FIRST_BACKOFF_S = 0.25


def backoff(crashes_before: int) -> float:
    """Seconds before restarting a worker that already crashed ``crashes_before`` times: 0, 0.25, 0.5 ... 5."""
    return 0.0 if crashes_before == 0 else min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (crashes_before - 1))


@dataclass(frozen=True)
class Restart:
    """A restart due at ``at`` (monotonic) of the worker ``role``-``index``."""

    at: float
    role: str
    index: int


class WorkerPool:
    def __init__(self, *, max_restarts: int, threaded: bool) -> None:
        self.max_restarts = max_restarts
        self.threaded = threaded
        self.workers: list[WorkerHandle] = []
        self.spare: WorkerHandle | None = None  # a warmed-up process that replaces a crashed worker at once
        self.restarts = 0
        self.stalls = 0  # workers killed for going silent while holding work (check_stalls)
        self.crashes: dict[tuple[str, int], int] = {}
        self.due: list[Restart] = []
        self.died_at: dict[tuple[str, int], float] = {}
        self.recoveries: list[float] = []  # seconds from a worker's death to its replacement working again

    # ------------------------------------------------------------ who is there

    def live(self, role: str | None = None) -> list[WorkerHandle]:
        return [w for w in self.workers if not w.exited and (role is None or w.role == role)]

    def any_live(self, role: str) -> bool:
        return any(w.role == role and not w.exited for w in self.workers)

    # ------------------------------------------------------------ starting

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        """A worker for ``spec``: the hot spare promoted when there is one, else a new process (or thread)."""
        spare, self.spare = self.spare, None
        if spare is not None and spare.alive():
            try:
                handle = promote(spare, spec)
                log.debug("promoted the hot spare (pid %s) to %s", spare.pid, handle.name)
            except OSError:
                spare.kill()
                handle = start_worker(spec)
        else:
            handle = start_worker(spec)
        handle.started_at = handle.last_heard = time.monotonic()
        self.workers.append(handle)
        return handle

    def ensure_spare(self, spec: Callable[[], WorkerSpec]) -> None:
        """Keep one hot spare (process mode only)."""
        if self.threaded:
            return
        if self.spare is None or not self.spare.alive():
            self.spare = start_worker(spec())

    # ------------------------------------------------------------ messages

    def send(self, w: WorkerHandle, msg: m.Msg) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):  # death: seen via the sentinel
            w.conn.send_bytes(m.encode(msg))

    def wait(self, timeout: float) -> list[Any]:
        """Pipes with messages and sentinels of dead processes, within ``timeout``."""
        waitables: list[Any] = [w.conn for w in self.workers if not w.exited]
        waitables += [w.sentinel for w in self.workers if w.sentinel is not None and not w.exited]
        if self.due:
            timeout = max(0.0, min(timeout, min(r.at for r in self.due) - time.monotonic()))
        if not waitables:
            time.sleep(timeout)
            return []
        return wait(waitables, timeout)

    def drain(self, w: WorkerHandle, handle: Callable[[WorkerHandle, m.Msg], None]) -> None:
        """Every message ``w`` has sent so far, to ``handle`` (heartbeats only refresh ``last_heard``)."""
        try:
            while not w.conn.closed and w.conn.poll(0):
                msg = m.decode(w.conn.recv_bytes())
                w.last_heard = time.monotonic()
                if not isinstance(msg, m.Heartbeat):
                    handle(w, msg)
        except (EOFError, ConnectionResetError, OSError):
            pass

    def started(self, w: WorkerHandle, msg: m.Started) -> None:
        log.debug("%s started (pid %d) %.3fs after spawn", w.name, msg.pid, time.monotonic() - w.started_at)
        died = self.died_at.get((w.role, w.index))
        if died is not None:
            log.info("%s replacement up %.3fs after its predecessor died", w.name, time.monotonic() - died)

    def recovered(self, w: WorkerHandle) -> None:
        """``w`` reported work: if it replaces a dead worker, that worker's recovery time is measured here."""
        died = self.died_at.pop((w.role, w.index), None)
        if died is not None:
            self.recoveries.append(time.monotonic() - died)
            log.info("%s working again %.3fs after its predecessor died", w.name, self.recoveries[-1])

    # ------------------------------------------------------------ deaths

    def exited(self, w: WorkerHandle) -> str:
        """Mark ``w`` gone, reap it, and say how it ended (for the log)."""
        w.exited = True
        if w.process is not None:
            w.process.join(2)  # the sentinel fires a moment before the exit status can be reaped
        desc = w.exit_description()
        return f"stalled, {desc}" if w.stalled else desc

    def remove(self, w: WorkerHandle) -> None:
        self.workers.remove(w)
        w.join(0.1)

    def crashed(self, w: WorkerHandle, desc: str) -> bool:
        """Count a crash and schedule its restart; False when the restart budget is spent."""
        self.restarts += 1
        log.warning("%s died (%s); restart %d of %d", w.name, desc, self.restarts, self.max_restarts)
        if self.restarts > self.max_restarts:
            return False
        key = (w.role, w.index)
        self.died_at.setdefault(key, time.monotonic())
        n = self.crashes.get(key, 0)
        self.crashes[key] = n + 1
        self.due.append(Restart(time.monotonic() + backoff(n), w.role, w.index))
        return True

    def due_now(self) -> list[Restart]:
        """The restarts whose time has come, taken off the schedule."""
        now = time.monotonic()
        due = [r for r in self.due if r.at <= now]
        if due:
            self.due = [r for r in self.due if r.at > now]
        return due

    def check_stalls(self, stall_timeout: float, held_work: Callable[[WorkerHandle], str | None]) -> None:
        """Kill a worker process that went silent while it holds work; its death is then handled as a crash.

        Every worker process beats once a second from a thread of its own, so silence for
        ``stall_timeout_s`` means the whole process stopped running (SIGSTOP, a frozen cgroup, a C call
        that holds the GIL), not that it is busy: without this the run would wait for it forever. The
        SIGKILL (which also ends a stopped process) fires its sentinel, and the usual death path takes
        over: its slots are reclaimed, its split or batches go to a replacement, a restart is counted.
        Process mode only: thread workers cannot be killed, so a hung thread is not detected.
        """
        if self.threaded:
            return
        now = time.monotonic()
        for w in self.workers:
            if w.process is None or w.exited or w.stalled or now - w.last_heard <= stall_timeout:
                continue
            holding = held_work(w)
            if holding is None:
                continue
            log.warning(
                "%s (pid %s) stalled: silent for %.1fs (engine.runner.config.stall_timeout_s=%g) while holding %s; "
                "killing it so a replacement resumes its work",
                w.name,
                w.pid,
                now - w.last_heard,
                stall_timeout,
                holding,
            )
            w.stalled = True
            self.stalls += 1
            w.kill()

    # ------------------------------------------------------------ the end

    def kill_all(self) -> None:
        if self.spare is not None:
            self.spare.kill()
            self.spare.join(1)
            self.spare = None
        for w in self.workers:
            w.kill()
        for w in self.workers:
            w.join(2)
        self.workers = [w for w in self.workers if w.alive()]

    def join_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.join(max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            w.kill()
        self.workers = []
