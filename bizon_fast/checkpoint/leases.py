"""Split leases: which producer reads which split, shared between machines through the backend.

On one machine the supervisor hands splits out of memory (``LocalLeases``). When producer machines
share a job (``--role producer`` on several machines), a split is leased through the Postgres
backend (``PostgresLeases``): ``SELECT ... FOR UPDATE SKIP LOCKED`` picks a split nobody holds, a
lease expires unless its holder renews it, and each new lease of a split bumps its ``epoch`` so
consumers can tell a re-read split's batches apart from its dead producer's.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

from bizon_fast.clients import postgres as pgconn
from bizon_fast.faults import fault_point

LEASES_DDL = """
CREATE TABLE IF NOT EXISTS {s}.bizon_fast_split_leases (
    job_id TEXT NOT NULL,
    split_id TEXT NOT NULL,
    owner TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ,
    produced BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, split_id)
)
"""


class SplitLeases(ABC):
    @abstractmethod
    def register(self, job_id: str, split_ids: list[str], done: set[str]) -> None:
        """Record the job's splits (idempotent: every producer machine plans the same splits)."""

    @abstractmethod
    def acquire(self, job_id: str, owner: str, ttl: float) -> tuple[str, int] | None:
        """A split no live producer holds and nobody has finished: (split id, epoch), or None."""

    @abstractmethod
    def renew(self, job_id: str, owner: str, ttl: float) -> set[str]:
        """Extend ``owner``'s leases; return the splits it still holds (a lost one was re-leased)."""

    @abstractmethod
    def produced(self, job_id: str, split_id: str, owner: str) -> None:
        """Every batch of the split is in the broker: it is never leased again."""

    @abstractmethod
    def release(self, job_id: str, owner: str, split_id: str | None = None) -> None:
        """Give back unfinished leases (a stopping or crashed producer) for another producer to take."""

    @abstractmethod
    def remaining(self, job_id: str) -> int:
        """Splits not yet produced."""


class LocalLeases(SplitLeases):
    """One supervisor owns every split: leases are bookkeeping in memory."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.owner: dict[str, str | None] = {}
        self.epoch: dict[str, int] = {}
        self.finished: set[str] = set()

    def register(self, job_id: str, split_ids: list[str], done: set[str]) -> None:
        for sid in split_ids:
            if sid not in self.owner:
                self.order.append(sid)
                self.owner[sid] = None
                self.epoch[sid] = 0
        self.finished |= done

    def acquire(self, job_id: str, owner: str, ttl: float) -> tuple[str, int] | None:
        for sid in self.order:
            if sid not in self.finished and self.owner[sid] is None:
                self.owner[sid] = owner
                self.epoch[sid] += 1
                return sid, self.epoch[sid]
        return None

    def renew(self, job_id: str, owner: str, ttl: float) -> set[str]:
        return {sid for sid, o in self.owner.items() if o == owner}

    def produced(self, job_id: str, split_id: str, owner: str) -> None:
        self.finished.add(split_id)
        self.owner[split_id] = None

    def release(self, job_id: str, owner: str, split_id: str | None = None) -> None:
        for sid, o in self.owner.items():
            if o == owner and (split_id is None or sid == split_id):
                self.owner[sid] = None

    def remaining(self, job_id: str) -> int:
        return sum(1 for sid in self.order if sid not in self.finished)


class PostgresLeases(SplitLeases):
    """Leases in the Postgres backend's schema, through its retrying transactions."""

    def __init__(self, backend: Any) -> None:
        self.b = backend

        def create(cur: Any) -> None:
            # under the backend's DDL lock: roles starting at once on several machines would otherwise race
            # in CREATE TABLE IF NOT EXISTS, and the loser fails (a unique violation in pg_type)
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (pgconn.lock_key("bizon_fast_checkpoint_ddl"),))
            cur.execute(self.b.query(LEASES_DDL))

        self.b.transaction(create, "creating the split leases table")
        self._renewed = 0.0

    def register(self, job_id: str, split_ids: list[str], done: set[str]) -> None:
        def fn(cur: Any) -> None:
            cur.executemany(
                self.b.query(
                    "INSERT INTO {s}.bizon_fast_split_leases (job_id, split_id, produced) VALUES (%s,%s,%s)"
                    " ON CONFLICT (job_id, split_id) DO UPDATE SET produced ="
                    " {s}.bizon_fast_split_leases.produced OR excluded.produced"
                ),
                [(job_id, sid, sid in done) for sid in split_ids],
            )

        self.b.transaction(fn, "registering splits")

    def acquire(self, job_id: str, owner: str, ttl: float) -> tuple[str, int] | None:
        def fn(cur: Any) -> tuple[str, int] | None:
            row = cur.execute(
                self.b.query(
                    "SELECT split_id FROM {s}.bizon_fast_split_leases WHERE job_id=%s AND NOT produced"
                    " AND (owner IS NULL OR expires_at < now()) ORDER BY split_id LIMIT 1 FOR UPDATE SKIP LOCKED"
                ),
                (job_id,),
            ).fetchone()
            if row is None:
                return None
            epoch = cur.execute(
                self.b.query(
                    "UPDATE {s}.bizon_fast_split_leases SET owner=%s, epoch=epoch+1,"
                    " expires_at=now() + make_interval(secs => %s) WHERE job_id=%s AND split_id=%s RETURNING epoch"
                ),
                (owner, ttl, job_id, row[0]),
            ).fetchone()[0]
            return row[0], epoch

        return self.b.transaction(fn, "leasing a split")

    def renew(self, job_id: str, owner: str, ttl: float) -> set[str]:
        def fn(cur: Any) -> set[str]:
            rows = cur.execute(
                self.b.query(
                    "UPDATE {s}.bizon_fast_split_leases SET expires_at=now() + make_interval(secs => %s)"
                    " WHERE job_id=%s AND owner=%s AND NOT produced RETURNING split_id"
                ),
                (ttl, job_id, owner),
            ).fetchall()
            # the machine dies with the renewal half done (the transaction open): Postgres rolls it back,
            # the leases run out and another producer machine must re-read the splits from their cursors
            fault_point("lease.renew")
            return {r[0] for r in rows}

        self._renewed = time.monotonic()
        return self.b.transaction(fn, "renewing split leases")

    def produced(self, job_id: str, split_id: str, owner: str) -> None:
        self.b.transaction(
            lambda cur: cur.execute(
                self.b.query(
                    "UPDATE {s}.bizon_fast_split_leases SET produced=true, owner=NULL WHERE job_id=%s AND split_id=%s"
                ),
                (job_id, split_id),
            ),
            "marking a split produced",
        )

    def release(self, job_id: str, owner: str, split_id: str | None = None) -> None:
        def fn(cur: Any) -> None:
            query = "UPDATE {s}.bizon_fast_split_leases SET owner=NULL WHERE job_id=%s AND owner=%s"
            params: tuple = (job_id, owner)
            if split_id is not None:
                query += " AND split_id=%s"
                params += (split_id,)
            cur.execute(self.b.query(query), params)

        self.b.transaction(fn, "releasing split leases")

    def remaining(self, job_id: str) -> int:
        return self.b.transaction(
            lambda cur: cur.execute(
                self.b.query("SELECT count(*) FROM {s}.bizon_fast_split_leases WHERE job_id=%s AND NOT produced"),
                (job_id,),
            ).fetchone()[0],
            "counting splits left",
        )
