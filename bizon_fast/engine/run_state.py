"""What every part of a run reads and any may change: whether it stops or failed, what it read and wrote.

The supervisor's parts (the worker pool, the commit log, a dispatch part) each own their state; these
few facts are the run's own, shared by all of them, so they live in one small record instead of on the
supervisor that the parts would otherwise reach back into.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunState:
    stopping: bool = False  # a stop (Ctrl-C, SIGTERM, a source failure) is draining the run
    failure: tuple[str, str] | None = None  # (message, detail) of the first failure
    failure_resumable: bool = True  # False when a rerun as is would fail the same way (see messages.Failed)
    failure_role: str = ""  # the role of the worker whose failure is the run's (producer, consumer), if one
    drain_on_failure: bool = False  # a source failure still writes what was read before it
    rows: int = 0  # rows written by this run
    nbytes: int = 0
    batches: int = 0
    large_rows: int = 0  # of ``rows``, those over bizon's large-row threshold (Destination.large_rows)
    # read by this run: producers report a batch filled (the ring) or sent (a broker) long before a consumer's
    # buffer is written, so progress follows these from the first batch; metrics export them too
    rows_read: int = 0
    bytes_read: int = 0
    batches_read: int = 0
    split_rows_read: dict[str, int] = field(default_factory=dict)  # split -> rows read by this run
    #: the source's ``holds_a_core`` (read when its splits are planned): its producers keep their cores and send
    #: smaller batches by default (``slots.batch_size_mb``)
    holds_a_core: bool = False

    def fail(
        self, message: str, detail: str = "", *, resumable: bool = True, drain: bool = False, role: str = ""
    ) -> None:
        """Record a failure; the first one is the run's (``role``: the failed worker's, which tells the side)."""
        if self.failure is None:
            self.failure = (message, detail)
            self.failure_role = role
            self.failure_resumable = resumable
            self.drain_on_failure = drain

    def count(self, rows: int, nbytes: int, batches: int, large_rows: int = 0) -> None:
        """A consumer made ``rows`` durable, ``large_rows`` of them over bizon's large-row threshold."""
        self.rows += rows
        self.nbytes += nbytes
        self.batches += batches
        self.large_rows += large_rows

    def count_read(self, split_id: str, rows: int, nbytes: int, batches: int = 1) -> None:
        """A producer read ``batches`` of ``split_id`` (not yet written): the run's and the split's read totals."""
        self.rows_read += rows
        self.bytes_read += nbytes
        self.batches_read += batches
        self.split_rows_read[split_id] = self.split_rows_read.get(split_id, 0) + rows
