"""The commit log: every split's ledger, and the cursor commits that follow what consumers made durable.

Workers report batches published (``Filled``) and durable (``Written``, or ``Wrote`` in broker mode);
each split's ``SplitLedger`` turns those out-of-order reports into a committed cursor that only moves
over a contiguous prefix of durable seqs. The log commits the cursors that moved, in one backend call,
at most every ``COMMIT_INTERVAL_S`` or every ``syncCursorInDBEvery`` durable batches, on every batch in
stream mode, and whenever a caller forces it (a stop, the end, a broker consumer's ``Sync``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from bizon_fast.checkpoint.base import CheckpointBackend
from bizon_fast.cursor import Cursor, resume_position
from bizon_fast.engine import messages as m
from bizon_fast.engine.ledger import SplitLedger

COMMIT_INTERVAL_S = 0.5


class CommitLog:
    def __init__(
        self,
        backend: CheckpointBackend,
        job_id: str,
        *,
        every: int = 1,
        streaming: bool = False,
        on_commit: Callable[[list[SplitLedger]], None] | None = None,
    ) -> None:
        self.backend = backend
        self.job_id = job_id
        self.every = max(1, every)  # syncCursorInDBEvery: durable batches between commits
        self.streaming = streaming  # stream mode commits every batch
        self.on_commit = on_commit  # told the ledgers of every commit (stream mode: producers hear of it)
        self.observer: Callable[[float, list[SplitLedger]], None] | None = None  # metrics: each commit's seconds
        self.ledgers: dict[str, SplitLedger] = {}
        self.dirty: set[str] = set()
        self.durable_since_commit = 0
        self.last_commit = time.monotonic()

    # ------------------------------------------------------------ state

    def load(self, split_ids: Iterable[str], cursors: dict[str, Cursor]) -> None:
        """Start every split from its committed cursor (a new split from nothing)."""
        for sid in split_ids:
            self.adopt(cursors.get(sid, Cursor(split_id=sid)))

    def adopt(self, cursor: Cursor) -> None:
        """Take ``cursor`` as the split's committed state (loaded, or committed by another machine)."""
        self.ledgers[cursor.split_id] = SplitLedger.from_cursor(cursor, resume_position(cursor))

    def __getitem__(self, split_id: str) -> SplitLedger:
        return self.ledgers[split_id]

    def __contains__(self, split_id: str) -> bool:
        return split_id in self.ledgers

    def committed_seqs(self) -> dict[str, int]:
        return {sid: led.committed.seq for sid, led in self.ledgers.items()}

    def committed_rows(self) -> int:
        return sum(led.committed.rows for led in self.ledgers.values())

    def cursors(self) -> list[Cursor]:
        return [led.committed for led in self.ledgers.values()]

    def done_splits(self) -> set[str]:
        return {sid for sid, led in self.ledgers.items() if led.done}

    def all_done(self) -> bool:
        return all(led.done for led in self.ledgers.values())

    # ------------------------------------------------------------ reports

    def published(self, msg: m.Filled) -> None:
        self.ledgers[msg.split_id].publish(msg.seq, msg.position, msg.rows, msg.watermark)

    def durable(self, split_id: str, first_seq: int, last_seq: int) -> None:
        if self.ledgers[split_id].mark_durable(first_seq, last_seq):
            self.dirty.add(split_id)
        self.durable_since_commit += last_seq - first_seq + 1

    def wrote(self, msg: m.Wrote) -> int:
        """Broker mode: batches published and durable at once. Returns the rows new to the committed cursor."""
        led = self.ledgers[msg.split_id]
        marks = msg.watermarks or [None] * len(msg.rows)
        seqs = [
            (msg.first_seq + i, p, r, w) for i, (p, r, w) in enumerate(zip(msg.positions, msg.rows, marks, strict=True))
        ]
        new_rows = sum(r for seq, _, r, _ in seqs if seq > led.committed.seq)
        if led.written(seqs):
            self.dirty.add(msg.split_id)
        return new_rows

    def finished(self, split_id: str, last_seq: int) -> None:
        if self.ledgers[split_id].finish(last_seq):
            self.dirty.add(split_id)

    # ------------------------------------------------------------ commits

    def commit(self, force: bool = False) -> None:
        """Commit the cursors that moved, when due (or ``force``)."""
        if not self.dirty:
            return
        due = self.durable_since_commit >= self.every or time.monotonic() - self.last_commit >= COMMIT_INTERVAL_S
        if not (force or due or self.streaming):
            return
        committed = [self.ledgers[s] for s in sorted(self.dirty)]
        began = time.perf_counter()
        self.backend.commit_cursors(self.job_id, [led.committed for led in committed])
        if self.observer is not None:
            self.observer(time.perf_counter() - began, committed)
        if self.on_commit is not None:
            self.on_commit(committed)
        self.dirty.clear()
        self.durable_since_commit = 0
        self.last_commit = time.monotonic()
