"""Broker mode: the supervisor of a run whose batches travel through Kafka or RabbitMQ.

Each machine runs ``bizon-fast run pipeline.yml --role producer|consumer|all``. The supervisor keeps
the ring supervisor's control plane (pipes to its workers, restarts, the commit ledger) and adds:

- **leases**: producers take splits through the checkpoint backend (``checkpoint/leases.py``), so
  producer machines share the work; a dead producer's split is leased again and re-read from its
  committed cursor;
- **syncs**: a consumer asks the supervisor to commit the cursors of what it wrote (``Sync``) and
  acknowledges the broker only after the answer (``Synced``): offsets trail cursors, never lead;
- **shared jobs**: every role joins the same job (Postgres: a shared job lock, and a pipeline lock
  around find-or-create); only consumer machines prepare and publish the destination, the first to
  start prepares, the first to see every split done publishes.

A role ends when the job's every split is done and committed, and exits 0 then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from bizon_fast.checkpoint.base import JobStatus
from bizon_fast.checkpoint.leases import LocalLeases, PostgresLeases, SplitLeases
from bizon_fast.cursor import Cursor, encode_position
from bizon_fast.engine import messages as m
from bizon_fast.engine.handles import WorkerHandle
from bizon_fast.engine.job import resolve_job
from bizon_fast.engine.ledger import SplitLedger
from bizon_fast.engine.spec import BrokerSpec, WorkerSpec
from bizon_fast.engine.supervisor import MiB, Supervisor
from bizon_fast.errors import UserError

log = logging.getLogger("bizon_fast.distributed")

REFRESH_S = 1.0  # how often a role reads what other machines committed
LEASE_RETRY_S = 0.5  # an idle producer asks for a split again after this long
WAIT_NOTE_S = 30.0  # a producer machine whose splits are all sent says so this often while consumers catch up


class BrokerSupervisor(Supervisor):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.kind = self.cfg.engine.queue.type
        self.role = self.cfg.engine.runner.config.role
        self.lease_s = self.cfg.engine.runner.config.lease_seconds
        self.queue_cfg = self.cfg.engine.queue.config.model_dump(mode="json")
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leases: SplitLeases = LocalLeases()
        self.epochs: dict[str, int] = {}
        self.idle: list[WorkerHandle] = []  # producers waiting for a split another machine may give back
        self.next_lease_try = 0.0
        self.next_refresh = 0.0
        self.next_renew = 0.0
        self.closing = False
        self.next_wait_note = 0.0
        self.told_to_stop: set[int] = set()  # pids of consumers sent Stop while the run stops or closes
        self.partitions = 1
        self.consumers = 1
        self.shared = self.cfg.engine.backend.type == "postgres"
        self.run_lock_shared = self.shared  # the other roles of this run hold the pipeline's run lock too
        if self.role != "all" and not self.shared:
            raise UserError(
                f"--role {self.role}: machines share a job through the checkpoint backend; "
                "set engine.backend.type: postgres (the embedded sqlite backend is local to one machine)"
            )
        if self.threaded:
            raise UserError(
                f"engine.queue.type: {self.kind} runs worker processes; engine.runner.type: thread is not supported"
            )

    # ------------------------------------------------------------ job and destination

    def _resolve_job(self, backend: Any, **kw: Any) -> Any:
        if not self.shared:
            return resolve_job(backend, **kw)
        backend.shared_job_lock = True  # the other roles of this job hold it too
        with backend.pipeline_lock(kw["name"], kw["source_name"], kw["stream"]):
            return resolve_job(backend, **kw)

    def _prepare_destination(self, destination: Any, committed: dict[str, int]) -> None:
        if self.role == "producer":
            return  # producer machines never write the destination
        destination.check_connection()
        if not self.shared:
            destination.prepare(committed)
            return
        # the first consumer machine of the job prepares; later ones must not drop what it writes
        if self.backend.try_lock("consumers", self.job.id):
            destination.prepare(committed)
            self.backend.try_lock("consumers", self.job.id, shared=True)
            self.backend.unlock("consumers", self.job.id)
        else:
            self.backend.try_lock("consumers", self.job.id, shared=True)
            log.info("another consumer machine runs job %s: joining it without preparing", self.job.id)

    def _complete(self, destination: Any, backend: Any) -> None:
        if self.role == "producer":
            return  # the consumer machines publish
        if self.shared:
            while not backend.try_lock("publish", self.job.id):
                time.sleep(0.2)
            try:
                job = backend.get_job(self.job.id)
                if job is not None and job.status == JobStatus.SUCCEEDED:
                    destination.close()
                    return  # another consumer machine published it
                super()._complete(destination, backend)
            finally:
                backend.unlock("publish", self.job.id)
        else:
            super()._complete(destination, backend)

    # ------------------------------------------------------------ workers

    def _spec(self, role: str, index: int) -> WorkerSpec:
        spec = super()._spec(role, index)
        committed = {sid: led.committed.seq for sid, led in self.ledgers.items() if led.committed.seq >= 0}
        spec.broker = BrokerSpec(
            kind=self.kind,
            queue=self.queue_cfg,
            job_id=self.job.id,
            committed=committed if role in ("consumer", "spare") else {},
            partitions=self.partitions,
            consumers=self.consumers,
        )
        spec.batch_bytes = 1 if self.streaming else int(self.cfg.engine.queue.config.batch_size_mb * MiB)
        return spec

    def _setup_broker(self, consumers: int) -> None:
        q = self.cfg.engine.queue.config
        if self.kind == "kafka":
            from bizon_fast.transport.kafka import ensure_topic

            strategy = str(q.consumer.consumer_config.get("partition.assignment.strategy", ""))
            if "cooperative" in strategy:
                raise UserError(
                    "engine.queue.config.consumer.consumer_config.partition.assignment.strategy: cooperative "
                    "rebalancing is not supported (a consumer drops what it buffered when partitions move and "
                    "replays it from the committed offsets, which needs every partition revoked); "
                    "use range or roundrobin"
                )

            extra = dict(q.queue.producer_config)
            ensure_topic(
                q.queue.bootstrap_server,
                q.queue.topic,
                q.queue.partitions,
                {k: v for k, v in extra.items() if k.startswith(("security.", "sasl.", "ssl."))},
            )
        else:
            from bizon_fast.transport.rabbitmq import declare_queues

            self.partitions = q.queue.partitions or consumers
            declare_queues(q.queue.url(), q.queue.queue_name, self.partitions)

    def _run_workers(self, producers: int, consumers: int) -> None:
        self.consumers = consumers
        self.max_held = 2
        if self.shared:
            self.leases = PostgresLeases(self.backend)
        done = {sid for sid, led in self.ledgers.items() if led.done}
        self.leases.register(self.job.id, sorted(self.ledgers), done)
        self._setup_broker(consumers)
        log.info(
            "job %s: role %s, %s producers, %s consumers, batches through %s",
            self.job.id,
            self.role,
            producers if self.role != "consumer" else 0,
            consumers if self.role != "producer" else 0,
            self.kind,
        )
        try:
            with self._stop_signals():
                if self.role in ("all", "consumer"):
                    for i in range(consumers):
                        self._start("consumer", i)
                if self.role in ("all", "producer"):
                    for i in range(producers):
                        self._start("producer", i)
                self._loop()
        finally:
            self._kill_all()
            with contextlib.suppress(Exception):
                self.leases.release(self.job.id, self.owner)

    # ------------------------------------------------------------ splits

    def _assign(self, w: WorkerHandle) -> None:
        if self.stopping or w.exited:
            self._send(w, m.NoMoreSplits())
            return
        got = self.leases.acquire(self.job.id, self.owner, self.lease_s)
        if got is None:
            if self.leases.remaining(self.job.id) == 0:
                self._send(w, m.NoMoreSplits())
            elif w not in self.idle:
                self.idle.append(w)  # another machine holds the rest: wait for one to come back
            return
        split_id, epoch = got
        cursor = self._committed_cursor(split_id)
        w.split_id = split_id
        self.epochs[split_id] = epoch
        position = encode_position(cursor.position) if cursor.seq >= 0 else None
        log.debug("%s leased split %s (epoch %d) from seq %d", w.name, split_id, epoch, cursor.seq + 1)
        self._send(w, m.Lease(self.splits[split_id], position, cursor.seq + 1, epoch))

    def _committed_cursor(self, split_id: str) -> Cursor:
        """Where a leased split resumes: its committed cursor, wherever it was committed."""
        self._commit(force=True)
        local = self.ledgers[split_id].committed
        if not self.shared:
            return local
        remote = self.backend.load_cursors(self.job.id).get(split_id)
        return remote if remote is not None and remote.seq > local.seq else local

    def _requeue_split(self, split_id: str) -> None:
        self.leases.release(self.job.id, self.owner, split_id)

    # ------------------------------------------------------------ messages

    def _handle(self, w: WorkerHandle, msg: m.Msg) -> None:
        if isinstance(msg, m.Sent):
            self._recovered(w)
            if self.role == "producer":
                self.rows += msg.rows
                self.nbytes += msg.nbytes
                self.batches += 1
        elif isinstance(msg, m.Wrote):
            self._recovered(w)
            self._wrote(msg)
        elif isinstance(msg, m.SplitEnded):
            if self.ledgers[msg.split_id].finish(msg.last_seq):
                self.dirty.add(msg.split_id)
        elif isinstance(msg, m.Sync):
            self._commit(force=True)
            if msg.splits and self.shared:
                self._refresh()
            committed = {sid: self.ledgers[sid].committed.seq for sid in msg.splits if sid in self.ledgers}
            self._send(w, m.Synced(msg.n, committed))
        elif isinstance(msg, m.SplitDone):
            self.leases.produced(self.job.id, msg.split_id, self.owner)
            w.split_id = None
            self._assign(w)
        else:
            super()._handle(w, msg)

    def _wrote(self, msg: m.Wrote) -> None:
        led = self.ledgers[msg.split_id]
        marks = msg.watermarks or [None] * len(msg.rows)
        seqs = [
            (msg.first_seq + i, p, r, w) for i, (p, r, w) in enumerate(zip(msg.positions, msg.rows, marks, strict=True))
        ]
        self.rows += sum(r for seq, _, r, _ in seqs if seq > led.committed.seq)
        self.batches += len(seqs)
        self.nbytes += msg.nbytes
        if led.written(seqs):
            self.dirty.add(msg.split_id)

    # ------------------------------------------------------------ periodic work and the end

    def _tick(self) -> None:
        now = time.monotonic()
        if self.idle and now >= self.next_lease_try:
            self.next_lease_try = now + LEASE_RETRY_S
            waiting, self.idle = self.idle, []
            for w in waiting:
                self._assign(w)
        if self.shared and now >= self.next_renew:
            self.next_renew = now + self.lease_s / 3
            held = self.leases.renew(self.job.id, self.owner, self.lease_s)
            for w in self.workers:
                if w.role == "producer" and w.split_id is not None and w.split_id not in held and not w.exited:
                    log.warning("%s lost its lease on split %s: stopping it", w.name, w.split_id)
                    w.split_id = None
                    w.kill()
        if self.shared and self.role != "all" and now >= self.next_refresh:
            self.next_refresh = now + REFRESH_S
            self._refresh()

    def _refresh(self) -> None:
        """Take in what other machines committed; a producer machine learns that the job is done."""
        self._commit(force=True)
        remote = self.backend.load_cursors(self.job.id)
        for sid, cursor in remote.items():
            led = self.ledgers.get(sid)
            if led is not None and (cursor.seq > led.committed.seq or (cursor.done and not led.done)):
                pos = encode_position(cursor.position) if cursor.seq >= 0 else None
                self.ledgers[sid] = SplitLedger.from_cursor(cursor, pos)
        if self.role == "producer":
            done = sum(1 for led in self.ledgers.values() if led.done)
            self.progress.note(f"{done} of {len(self.ledgers)} splits committed")
            self._watch_consumers(done)

    def _watch_consumers(self, done: int) -> None:
        """A producer machine ends with the job: it fails when a consumer machine failed the job, and says why it waits.

        Without this a consumer machine's failure (the job marked failed in the shared backend) left the producer
        machine waiting forever, silently, for commits nobody makes. Its batches are durable in the broker, so
        ending it loses nothing: rerunning the failed machine's command resumes the job from its committed cursors.
        A machine that joins later resumes the job (status running again), so a wait is ended only by a failure.
        """
        job = self.backend.get_job(self.job.id)
        if job is not None and job.status == JobStatus.FAILED and self.failure is None:
            log.error("job %s failed on another machine: %s; stopping this producer machine", self.job.id, job.error)
            self.failure = (f"the job failed on another machine: {job.error or 'no reason recorded'}", "")
            self.failure_resumable = True
            return
        if any(w.role == "producer" and not w.exited for w in self.workers):
            return  # still sending
        now = time.monotonic()
        if now >= self.next_wait_note:
            self.next_wait_note = now + WAIT_NOTE_S
            log.info(
                "job %s: every split is sent; waiting for the consumer machines to commit them (%d of %d committed)",
                self.job.id,
                done,
                len(self.ledgers),
            )

    def _finished(self) -> bool:
        if self.stopping:
            return not any(not w.exited for w in self.workers if w.role == "producer") and self._consumers_stopped()
        if not all(led.done for led in self.ledgers.values()):
            return False
        if not self.closing:
            self.closing = True
            for w in self.workers:
                if not w.exited and w.role != "consumer":  # consumers: _consumers_stopped tells each one
                    self._send(w, m.NoMoreSplits())
            for w in self.idle:
                self._send(w, m.NoMoreSplits())
            self.idle.clear()
        return self._consumers_stopped()

    def _consumer_may_exit(self) -> bool:
        return self.closing or self._finished()

    def _held_work(self, w: WorkerHandle) -> str | None:
        """A broker consumer always holds work: its partitions' unacknowledged batches, and a Stop to answer."""
        if w.role == "consumer":
            return "its broker partitions"
        return super()._held_work(w)

    def _consumers_stopped(self) -> bool:
        """Consumers told to stop write and sync what they hold first: serve them until they exit.

        Every live consumer is told, once, by pid, on every pass: a consumer that dies while the run closes
        (e.g. killed after its last Synced, before its broker ack) is restarted, and its replacement must be
        told too, or the run waits forever for a consumer that idles on an empty topic.
        """
        consumers = [w for w in self.workers if w.role == "consumer" and not w.exited]
        if not consumers:
            return True
        if self.stopping or self.closing:
            for w in consumers:
                if w.pid not in self.told_to_stop:
                    self.told_to_stop.add(w.pid)
                    self._send(w, m.Stop())
        return False
