"""What every part of a run reads and any may change: whether it stops or failed, and what it moved.

The supervisor's parts (the worker pool, the commit log, a dispatch part) each own their state; these
few facts are the run's own, shared by all of them, so they live in one small record instead of on the
supervisor that the parts would otherwise reach back into.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunState:
    stopping: bool = False  # a stop (Ctrl-C, SIGTERM, a source failure) is draining the run
    failure: tuple[str, str] | None = None  # (message, detail) of the first failure
    failure_resumable: bool = True  # False when a rerun as is would fail the same way (see messages.Failed)
    drain_on_failure: bool = False  # a source failure still writes what was read before it
    rows: int = 0  # rows written by this run
    nbytes: int = 0
    batches: int = 0

    def fail(self, message: str, detail: str = "", *, resumable: bool = True, drain: bool = False) -> None:
        """Record a failure; the first one is the run's."""
        if self.failure is None:
            self.failure = (message, detail)
            self.failure_resumable = resumable
            self.drain_on_failure = drain

    def count(self, rows: int, nbytes: int, batches: int) -> None:
        self.rows += rows
        self.nbytes += nbytes
        self.batches += batches
