"""Worker handles: a spawned process (the default) or a thread (the in-process path)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module first thing to start the fork server: nothing heavy at the top
    from bizon_fast.engine import messages as m
    from bizon_fast.engine.spec import WorkerSpec

# Workers start from a fork server: a clean process (never the supervisor, which has threads and
# state) that imported the worker stack once. A worker -- or the replacement of a crashed one -- then
# costs a fork instead of a fresh interpreter importing pyarrow (about a second of CPU each on a busy
# machine). polars is not preloaded (it starts threads at import); workers import it when needed.
# BIZON_FAST_START_METHOD=spawn is the fallback when a platform has no fork server.
START_METHOD = os.environ.get("BIZON_FAST_START_METHOD", "forkserver" if sys.platform == "linux" else "spawn")
PRELOAD = ["bizon_fast.engine.preload"]  # the worker stack (pyarrow, numpy, msgspec), imported with gc paused

_ctx = mp.get_context(START_METHOD)
if START_METHOD == "forkserver":
    _ctx.set_forkserver_preload(PRELOAD)


@dataclass(eq=False)
class WorkerHandle:
    role: str
    index: int
    conn: Connection
    process: mp.process.BaseProcess | None = None
    thread: threading.Thread | None = None
    started_at: float = 0.0
    # supervisor bookkeeping
    split_id: str | None = None  # producer: the split it is reading
    granted: list[int] = field(default_factory=list)  # producer: slots handed to it, not yet filled
    delivered: dict[int, m.Deliver] = field(default_factory=dict)  # consumer: slot -> its batch, not yet written
    flush_requested: bool = False
    exited: bool = False
    last_heard: float = 0.0  # monotonic time of its last message (a heartbeat at least every second)
    stalled: bool = False  # killed by the supervisor for going silent while holding work

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @property
    def sentinel(self) -> int | None:
        return self.process.sentinel if self.process is not None else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.is_alive()
        return self.thread is not None and self.thread.is_alive()

    def exit_description(self) -> str:
        if self.process is None:
            return "thread ended"
        code = self.process.exitcode
        if code is None:
            return "running"
        if code < 0:
            import signal

            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()

    def join(self, timeout: float) -> None:
        if self.process is not None:
            self.process.join(timeout)
        elif self.thread is not None:
            self.thread.join(timeout)
        with contextlib.suppress(OSError):
            self.conn.close()


def start_fork_server(pipeline_file: str | os.PathLike[str] | None = None, *, custom_source: bool = False) -> None:
    """Start the fork server now, so its imports overlap the supervisor's planning instead of following it.

    With ``pipeline_file`` it also imports that pipeline's connectors (``engine/warm.py``; ``custom_source``:
    ``--custom-source`` replaces the file's source), named to it through the environment only while it starts.
    A server already running (a second run in one process) is kept.
    """
    if START_METHOD == "forkserver":
        from multiprocessing import forkserver

        from bizon_fast.engine.warm import WARM_ENV, request

        if pipeline_file is not None:
            os.environ[WARM_ENV] = request(pipeline_file, custom_source=custom_source)
        try:
            forkserver.ensure_running()
        finally:
            os.environ.pop(WARM_ENV, None)


def promote(spare: WorkerHandle, spec: WorkerSpec) -> WorkerHandle:
    """Turn a hot spare process into the worker ``spec`` describes."""
    spare.role, spare.index = spec.role, spec.index
    from bizon_fast.engine.spec import encode_spec

    spare.conn.send_bytes(encode_spec(spec))
    return spare


def start_worker(spec: WorkerSpec) -> WorkerHandle:
    # here, not at the top: the CLI imports this module to start the fork server, and every import before that
    # call delays the server's own (the first worker waits for them); the worker stack comes in meanwhile
    from bizon_fast.engine.spec import encode_spec
    from bizon_fast.engine.worker import worker_main

    ours, theirs = _ctx.Pipe(duplex=True)
    payload = encode_spec(spec)
    handle = WorkerHandle(spec.role, spec.index, ours)
    if spec.threaded:
        handle.thread = threading.Thread(target=worker_main, args=(theirs, payload), name=handle.name, daemon=True)
        handle.thread.start()
    else:
        handle.process = _ctx.Process(target=worker_main, args=(theirs, payload), name=f"bizon-fast {handle.name}")
        handle.process.start()
        theirs.close()  # only the child holds its end: its death is an EOF here
    return handle
