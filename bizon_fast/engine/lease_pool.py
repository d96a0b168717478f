"""The lease pool: broker mode's splits, leased through the checkpoint backend so producer machines share them.

A ring run hands splits from a queue in its own memory; producer machines of a broker run take them as
row leases (``checkpoint/leases.py``: Postgres ``FOR UPDATE SKIP LOCKED``, or an in-memory table for one
machine). A lease lives ``lease_seconds`` and is renewed every third of that; a producer whose lease was
lost (its machine looked dead to the others) is killed, since another machine now reads its split. A
dead producer's split is released and leased again, with a higher epoch, from its committed cursor.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from bizon_fast.checkpoint.leases import LocalLeases, PostgresLeases, SplitLeases
from bizon_fast.engine.handles import WorkerHandle

log = logging.getLogger("bizon_fast.distributed")

LEASE_RETRY_S = 0.5  # an idle producer asks for a split again after this long


class LeasePool:
    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leases: SplitLeases = LocalLeases()
        self.job_id = ""
        self.epochs: dict[str, int] = {}
        self.idle: list[WorkerHandle] = []  # producers waiting for a split another machine may give back
        self.next_try = 0.0
        self.next_renew = 0.0

    def open(self, job_id: str, split_ids: list[str], done: set[str], *, shared_backend: object | None) -> None:
        """Register the job's splits (done ones excluded); ``shared_backend``: lease through Postgres."""
        self.job_id = job_id
        if shared_backend is not None:
            self.leases = PostgresLeases(shared_backend)
        self.leases.register(job_id, split_ids, done)

    def acquire(self) -> tuple[str, int] | None:
        """A split and its lease epoch, or None when none is free now."""
        got = self.leases.acquire(self.job_id, self.owner, self.lease_s)
        if got is not None:
            self.epochs[got[0]] = got[1]
        return got

    def remaining(self) -> int:
        return self.leases.remaining(self.job_id)

    def wait(self, w: WorkerHandle) -> None:
        """``w`` found no free split while others are leased elsewhere: it asks again later."""
        if w not in self.idle:
            self.idle.append(w)

    def retry_due(self) -> list[WorkerHandle]:
        """The idle producers, when it is time to ask again."""
        now = time.monotonic()
        if not self.idle or now < self.next_try:
            return []
        self.next_try = now + LEASE_RETRY_S
        waiting, self.idle = self.idle, []
        return waiting

    def renew_due(self) -> set[str] | None:
        """Renew this machine's leases when due; the splits still held, or None when not due."""
        now = time.monotonic()
        if now < self.next_renew:
            return None
        self.next_renew = now + self.lease_s / 3
        return self.leases.renew(self.job_id, self.owner, self.lease_s)

    def produced(self, split_id: str) -> None:
        self.leases.produced(self.job_id, split_id, self.owner)

    def release(self, split_id: str | None = None) -> None:
        """Give back ``split_id`` (a dead producer's), or every lease of this machine (the end)."""
        self.leases.release(self.job_id, self.owner, split_id)
