"""A worker process's end of its pipe to the supervisor, and the process setup every worker shares.

The producer, the consumer and their ring or broker ends all talk to the supervisor through a
``Channel`` and stop on ``SupervisorGone`` / ``StopRequested``; keeping these below them lets the entry
point (``worker``) import every one of them without any importing ``worker`` back (no cycle).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from bizon_fast.engine import messages as m
from bizon_fast.engine.logformat import CONSOLE_LOGGER, LineHandler, formatter
from bizon_fast.engine.spec import WorkerSpec

POLL_S = 0.5  # how often a blocked worker checks that its supervisor is alive
HEARTBEAT_S = 1.0  # how often a worker process tells the supervisor it is still scheduled
#: a worker's young-generation collector threshold (CPython's default: 700 allocations). A Python source makes a
#: few objects per record (a record, its dict) and holds a page of them until the page becomes a batch: with 700,
#: the collector runs every ~250 records and walks the page's live objects again and again, ~35% of a bizon
#: source's own get() loop (1M records of the generator fixture, one process: 0.71 -> 0.46 CPU s at 10,000).
#: A page's objects die by reference counting when it is converted; only cyclic garbage waits for the
#: collector, now every 10,000 allocations instead of 700.
GC_YOUNG_OBJECTS = 10_000


class SupervisorGone(Exception):
    pass


class StopRequested(Exception):
    pass


def die_with_parent(parent_pid: int, title: str) -> None:
    """Ask the kernel to SIGKILL us when the supervisor dies, so a killed run leaves no orphans.

    The process is also renamed (``bf-producer-0``...) so ps, top and the fault-injection tests can
    tell the workers apart.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            libc.prctl(15, ctypes.c_char_p(title.encode()[:15]))  # PR_SET_NAME
        except (OSError, AttributeError):
            pass
    try:
        os.kill(parent_pid, 0)  # the supervisor may have died before the death signal was armed
    except ProcessLookupError:
        os._exit(1)


def setup_process(spec: WorkerSpec) -> None:
    """Signals, parent-death, the cyclic collector and logging for a worker process (not a thread worker: it
    shares the supervisor's)."""
    young, *older = gc.get_threshold()
    if 0 < young < GC_YOUNG_OBJECTS:
        gc.set_threshold(GC_YOUNG_OBJECTS, *older)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(spec.parent_pid, f"bf-{spec.role}-{spec.index}")
    # the supervisor's format, into the supervisor's file (and on stderr for json with --quiet, or with no file)
    fmt = formatter(spec.log_format, f"{spec.role}-{spec.index}", spec.context.pipeline)
    handlers: list[logging.Handler] = []
    if spec.log_file:
        handlers.append(LineHandler.append_to(spec.log_file))
    if spec.log_to_stderr or not spec.log_file:
        handlers.append(LineHandler(2, owned=False))
    for handler in handlers:
        handler.setFormatter(fmt)
    logging.basicConfig(
        level=getattr(logging, spec.log_level if spec.log_level != "TRACE" else "DEBUG", logging.INFO),
        handlers=handlers,
        force=True,
    )
    printed = logging.getLogger(CONSOLE_LOGGER)
    printed.handlers.clear()
    if spec.log_file and not spec.log_to_stderr:  # otherwise every line is on stderr already
        # the logger destination's records on the console too, as the supervisor prints a thread worker's
        # (cli/logs.py): stderr is the supervisor's, inherited, and one os.write a line keeps lines whole
        console = LineHandler(2, owned=False)
        console.setFormatter(logging.Formatter("%(message)s"))
        printed.addHandler(console)
    logging.captureWarnings(True)  # a library's warning is a log line too, not a stray one on stderr


class Channel:
    """The worker's end of its pipe: blocking receives that notice a dead supervisor, and a heartbeat.

    A worker process beats from a daemon thread (``Heartbeat`` every ``HEARTBEAT_S``), so the beat goes
    on while the main thread sits in a long write or a slow source call, and stops only when the whole
    process does (SIGSTOP, a frozen cgroup, a C call that holds the GIL): exactly the case the
    supervisor's stall detection is for. Two threads send, so sends are serialized by a lock: a message
    is one length-prefixed write that must not interleave with another. Thread workers do not beat:
    the supervisor could not kill them anyway.
    """

    def __init__(self, conn: Connection, spec: WorkerSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.ppid = os.getppid()  # the supervisor, or the fork server it started
        self.send_lock = threading.Lock()
        if not spec.threaded:
            threading.Thread(target=self._beat, name="bf-heartbeat", daemon=True).start()

    def send(self, msg: m.Msg) -> None:
        data = m.encode(msg)
        try:
            with self.send_lock:
                self.conn.send_bytes(data)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise SupervisorGone() from exc

    def _beat(self) -> None:
        beat = m.encode(m.Heartbeat())
        while True:
            time.sleep(HEARTBEAT_S)
            try:
                with self.send_lock:
                    self.conn.send_bytes(beat)
            except (BrokenPipeError, ConnectionResetError, OSError, ValueError):
                return  # the supervisor is gone (or the pipe closed): the main thread notices on its own

    def recv(self, timeout: float | None) -> m.Msg | None:
        """One message, or None when ``timeout`` passes. None timeout = wait forever (checking liveness)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            try:
                if self.conn.poll(wait):
                    return m.decode(self.conn.recv_bytes())
            except (EOFError, ConnectionResetError, OSError) as exc:
                raise SupervisorGone() from exc
            if not self.spec.threaded and os.getppid() != self.ppid:  # re-parented: our parent died
                raise SupervisorGone()
            if deadline is not None and time.monotonic() >= deadline:
                return None
