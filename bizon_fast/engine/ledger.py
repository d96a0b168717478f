"""The commit ledger: turns out-of-order "batch durable" reports into a safe resume point per split.

Consumers finish batches out of order. The committed cursor of a split only advances over a
contiguous prefix of durable seqs, so a resume never skips a batch that was not written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bizon_fast.cursor import Cursor, decode_position
from bizon_fast.source.incremental import Watermark, fold


@dataclass
class SplitLedger:
    split_id: str
    committed: Cursor
    committed_position: bytes | None = None  # ``committed.position`` as the producer encoded it (msgpack)
    published_seq: int = -1  # highest seq handed to the ring
    published_position: bytes | None = None  # position after published_seq (msgpack)
    published_rows: int = 0
    last_seq: int | None = None  # set when the producer reports the split exhausted
    pending: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # seq -> (position, rows of batch)
    durable: set[int] = field(default_factory=set)
    marks: dict[int, Watermark] = field(default_factory=dict)  # seq -> incremental watermark of that batch

    @classmethod
    def from_cursor(cls, cursor: Cursor, position_bytes: bytes | None) -> SplitLedger:
        return cls(
            split_id=cursor.split_id,
            committed=cursor,
            committed_position=position_bytes,
            published_seq=cursor.seq,
            published_position=position_bytes,
            published_rows=cursor.rows,
            last_seq=cursor.seq if cursor.done else None,
        )

    def publish(self, seq: int, position: bytes, rows: int, mark: Watermark | None = None) -> None:
        self.pending[seq] = (position, rows)
        if mark is not None:
            self.marks[seq] = mark
        self.published_seq = seq
        self.published_position = position
        self.published_rows += rows

    def mark_durable(self, first_seq: int, last_seq: int) -> bool:
        """Record seqs as written; return True when the committed cursor moved."""
        self.durable.update(range(first_seq, last_seq + 1))
        return self._advance()

    def written(self, seqs: list[tuple[int, bytes, int, Watermark | None]]) -> bool:
        """Broker mode: batches (seq, position, rows, watermark) read and written on another process's
        word -- the producer may be on another machine -- so they are published and durable at once.
        Return True when the committed cursor moved."""
        for seq, position, rows, mark in seqs:
            if seq > self.committed.seq:
                self.publish(seq, position, rows, mark)
                self.durable.add(seq)
        return self._advance()

    def finish(self, last_seq: int) -> bool:
        self.last_seq = last_seq
        return self._advance()

    def _advance(self) -> bool:
        cur = self.committed
        seq, rows, position, mark = cur.seq, cur.rows, None, cur.watermark
        moved = False
        while seq + 1 in self.durable:
            seq += 1
            self.durable.discard(seq)
            position_bytes, batch_rows = self.pending.pop(seq)
            rows += batch_rows
            position = position_bytes
            mark = fold(mark, self.marks.pop(seq, None))
            moved = True
        done = self.last_seq is not None and seq >= self.last_seq
        if not moved and done == cur.done:
            return False
        if position is not None:
            self.committed_position = position
        self.committed = Cursor(
            split_id=self.split_id,
            seq=seq,
            position=decode_position(position) if position is not None else cur.position,
            rows=rows,
            done=done,
            watermark=mark,
        )
        return True

    @property
    def done(self) -> bool:
        return self.committed.done
