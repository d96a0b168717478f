"""Broker dispatch: the supervisor's dispatch part when batches travel through Kafka or RabbitMQ.

Each machine runs ``bizon-fast run pipeline.yml --role producer|consumer|all``. The supervisor keeps
its control plane (pipes to its workers, the worker pool's restarts, the commit log) and plugs in this
part instead of the ring's (``engine/dispatch.py``), which adds:

- **leases**: producers take splits through the checkpoint backend (``engine/lease_pool.py``), so
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
import time
from collections.abc import Callable, Iterator
from typing import Any

from bizon_fast.checkpoint.base import CheckpointBackend, JobRecord, JobStatus
from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.cursor import resume_position
from bizon_fast.engine import messages as m
from bizon_fast.engine.commits import CommitLog
from bizon_fast.engine.handles import WorkerHandle
from bizon_fast.engine.job import ResolvedJob, resolve_job
from bizon_fast.engine.lease_pool import LeasePool
from bizon_fast.engine.progress import Progress
from bizon_fast.engine.run_state import RunState
from bizon_fast.engine.spec import BrokerSpec, WorkerSpec
from bizon_fast.engine.workers import WorkerPool
from bizon_fast.errors import UserError

log = logging.getLogger("bizon_fast.distributed")

REFRESH_S = 1.0  # how often a role reads what other machines committed
WAIT_NOTE_S = 30.0  # a producer machine whose splits are all sent says so this often while consumers catch up


class BrokerDispatch:
    def __init__(self, cfg: PipelineConfig, state: RunState, pool: WorkerPool, progress: Progress) -> None:
        self.cfg = cfg
        self.state = state
        self.pool = pool
        self.progress = progress
        self.kind = cfg.engine.queue.type
        self.role = cfg.engine.runner.config.role
        self.queue_cfg = cfg.engine.queue.config.model_dump(mode="json")
        self.leases = LeasePool(cfg.engine.runner.config.lease_seconds)
        self.commits: CommitLog | None = None
        self.backend: Any = None
        self.job: JobRecord | None = None
        self.splits: dict[str, Any] = {}
        self.next_refresh = 0.0
        self.closing = False
        self.next_wait_note = 0.0
        self.told_to_stop: set[int] = set()  # pids of consumers sent Stop while the run stops or closes
        self.partitions = 1
        self.consumers = 1
        self.shared = cfg.engine.backend.type == "postgres"
        self.run_lock_shared = self.shared  # the other roles of this run hold the pipeline's run lock too
        self.workers_before_destination = False  # consumers read the broker themselves: prepare comes first
        if self.role != "all" and not self.shared:
            raise UserError(
                f"--role {self.role}: machines share a job through the checkpoint backend; "
                "set engine.backend.type: postgres (the embedded sqlite backend is local to one machine)"
            )
        if pool.threaded:
            raise UserError(
                f"engine.queue.type: {self.kind} runs worker processes; engine.runner.type: thread is not supported"
            )

    # ------------------------------------------------------------ job and destination

    def resolve_job(self, backend: CheckpointBackend, **kw: Any) -> ResolvedJob:
        if not self.shared:
            return resolve_job(backend, **kw)
        backend.shared_job_lock = True  # type: ignore[attr-defined]  # the other roles of this job hold it too
        with backend.pipeline_lock(kw["name"], kw["source_name"], kw["stream"]):  # type: ignore[attr-defined]
            return resolve_job(backend, **kw)

    def prepare_destination(self, destination: Any, committed: dict[str, int], backend: Any, job_id: str) -> None:
        if self.role == "producer":
            return  # producer machines never write the destination
        destination.check_connection()
        if not self.shared:
            destination.prepare(committed)
            return
        # the first consumer machine of the job prepares; later ones must not drop what it writes
        if backend.try_lock("consumers", job_id):
            destination.prepare(committed)
            backend.try_lock("consumers", job_id, shared=True)
            backend.unlock("consumers", job_id)
        else:
            backend.try_lock("consumers", job_id, shared=True)
            log.info("another consumer machine runs job %s: joining it without preparing", job_id)

    def complete(self, publish: Callable[[], None], destination: Any, backend: Any, job_id: str) -> None:
        if self.role == "producer":
            return  # the consumer machines publish
        if not self.shared:
            publish()
            return
        while not backend.try_lock("publish", job_id):
            time.sleep(0.2)
        try:
            job = backend.get_job(job_id)
            if job is not None and job.status == JobStatus.SUCCEEDED:
                destination.close()
                return  # another consumer machine published it
            publish()
        finally:
            backend.unlock("publish", job_id)

    # ------------------------------------------------------------ the run's work

    def bind(
        self, commits: CommitLog, splits: dict[str, Any], pending: list[str], backend: Any, job: JobRecord
    ) -> None:
        self.commits = commits
        self.splits = splits
        self.backend = backend
        self.job = job

    @contextlib.contextmanager
    def opened(self, producers: int, consumers: int, job_id: str) -> Iterator[None]:
        """Leases registered and the topic or queues declared; this machine's leases released at the end."""
        assert self.commits is not None
        self.consumers = consumers
        self.leases.open(
            job_id,
            sorted(self.commits.ledgers),
            self.commits.done_splits(),
            shared_backend=self.backend if self.shared else None,
        )
        self._setup_broker(consumers)
        log.info(
            "job %s: role %s, %s producers, %s consumers, batches through %s",
            job_id,
            self.role,
            producers if self.role != "consumer" else 0,
            consumers if self.role != "producer" else 0,
            self.kind,
        )
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                self.leases.release()

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

    def roles(self, producers: int, consumers: int) -> list[tuple[str, int]]:
        """The workers this machine's role starts."""
        starts = []
        if self.role in ("all", "consumer"):
            starts.append(("consumer", consumers))
        if self.role in ("all", "producer"):
            starts.append(("producer", producers))
        return starts

    def spec(self, spec: WorkerSpec) -> WorkerSpec:
        assert self.commits is not None and self.job is not None
        committed = {sid: seq for sid, seq in self.commits.committed_seqs().items() if seq >= 0}
        spec.broker = BrokerSpec(
            kind=self.kind,
            queue=self.queue_cfg,
            job_id=self.job.id,
            committed=committed if spec.role in ("consumer", "spare") else {},
            partitions=self.partitions,
            consumers=self.consumers,
        )
        spec.max_held = 2
        return spec

    # ------------------------------------------------------------ splits

    def started(self, w: WorkerHandle) -> None:
        if w.role == "producer":
            self.assign(w)

    def assign(self, w: WorkerHandle) -> None:
        if self.state.stopping or w.exited:
            self.pool.send(w, m.NoMoreSplits())
            return
        got = self.leases.acquire()
        if got is None:
            if self.leases.remaining() == 0:
                self.pool.send(w, m.NoMoreSplits())
            else:
                self.leases.wait(w)  # another machine holds the rest: wait for one to come back
            return
        split_id, epoch = got
        seq, position = self._resume_point(split_id)
        w.split_id = split_id
        log.debug("%s leased split %s (epoch %d) from seq %d", w.name, split_id, epoch, seq + 1)
        self.pool.send(w, m.Assign(self.splits[split_id], position, seq + 1, epoch))

    def _resume_point(self, split_id: str) -> tuple[int, bytes | None]:
        """Where a leased split resumes: the seq and position of its committed cursor, wherever it was committed."""
        assert self.commits is not None and self.job is not None
        self.commits.commit(force=True)
        local = self.commits[split_id]
        if self.shared:
            remote = self.backend.load_cursors(self.job.id).get(split_id)
            if remote is not None and remote.seq > local.committed.seq:
                return remote.seq, resume_position(remote)  # committed by another machine
        return local.committed.seq, local.committed_position

    # ------------------------------------------------------------ messages

    def handle(self, w: WorkerHandle, msg: m.Msg) -> bool:
        """A work message of ``w``; False when it is not one of this dispatch's."""
        assert self.commits is not None
        if isinstance(msg, m.Sent):
            self.pool.recovered(w)
            self.state.count_read(msg.split_id, msg.rows, msg.nbytes)
            if self.role == "producer":
                self.state.count(msg.rows, msg.nbytes, 1)
        elif isinstance(msg, m.Wrote):
            self.pool.recovered(w)
            self.state.count(self.commits.wrote(msg), msg.nbytes, len(msg.rows), msg.large_rows)
        elif isinstance(msg, m.SplitEnded):
            self.commits.finished(msg.split_id, msg.last_seq)
        elif isinstance(msg, m.Sync):
            self.commits.commit(force=True)
            if msg.splits and self.shared:
                self._refresh()
            committed = {sid: self.commits[sid].committed.seq for sid in msg.splits if sid in self.commits}
            self.pool.send(w, m.Synced(msg.n, committed))
        elif isinstance(msg, m.SplitDone):
            self.leases.produced(msg.split_id)
            w.split_id = None
            self.assign(w)
        else:
            return False
        return True

    # ------------------------------------------------------------ periodic work and the end

    def tick(self) -> None:
        for w in self.leases.retry_due():
            self.assign(w)
        if self.shared:
            held = self.leases.renew_due()
            if held is not None:
                for w in self.pool.live("producer"):
                    if w.split_id is not None and w.split_id not in held:
                        log.warning("%s lost its lease on split %s: stopping it", w.name, w.split_id)
                        w.split_id = None
                        w.kill()
        now = time.monotonic()
        if self.shared and self.role != "all" and now >= self.next_refresh:
            self.next_refresh = now + REFRESH_S
            self._refresh()

    def _refresh(self) -> None:
        """Take in what other machines committed; a producer machine learns that the job is done."""
        assert self.commits is not None and self.job is not None
        self.commits.commit(force=True)
        remote = self.backend.load_cursors(self.job.id)
        for sid, cursor in remote.items():
            if sid not in self.commits:
                continue
            led = self.commits[sid]
            if cursor.seq > led.committed.seq or (cursor.done and not led.done):
                self.commits.adopt(cursor)
        if self.role == "producer":
            done = len(self.commits.done_splits())
            self.progress.note(f"{done} of {len(self.commits.ledgers)} splits committed")
            self._watch_consumers(done)

    def _watch_consumers(self, done: int) -> None:
        """A producer machine ends with the job: it fails when a consumer machine failed the job, and says why it waits.

        Without this a consumer machine's failure (the job marked failed in the shared backend) left the producer
        machine waiting forever, silently, for commits nobody makes. Its batches are durable in the broker, so
        ending it loses nothing: rerunning the failed machine's command resumes the job from its committed cursors.
        A machine that joins later resumes the job (status running again), so a wait is ended only by a failure.
        """
        assert self.job is not None and self.commits is not None
        job = self.backend.get_job(self.job.id)
        if job is not None and job.status == JobStatus.FAILED and self.state.failure is None:
            log.error("job %s failed on another machine: %s; stopping this producer machine", self.job.id, job.error)
            self.state.fail(f"the job failed on another machine: {job.error or 'no reason recorded'}")
            return
        if self.pool.any_live("producer"):
            return  # still sending
        now = time.monotonic()
        if now >= self.next_wait_note:
            self.next_wait_note = now + WAIT_NOTE_S
            log.info(
                "job %s: every split is sent; waiting for the consumer machines to commit them (%d of %d committed)",
                self.job.id,
                done,
                len(self.commits.ledgers),
            )

    def stop(self) -> None:
        """A stop: producers are told by the supervisor; leases are given back at the end."""

    def reclaim(self, w: WorkerHandle) -> None:
        """A broker worker holds no slots: what it had in flight is in the broker, unacknowledged."""

    def requeue(self, split_id: str) -> None:
        """A producer died reading ``split_id``: its lease goes back, to be read again from its committed cursor."""
        self.leases.release(split_id)

    def settle(self) -> None:
        """Nothing is queued in the supervisor in broker mode."""

    def finished(self) -> bool:
        assert self.commits is not None
        if self.state.stopping:
            return not self.pool.any_live("producer") and self._consumers_stopped()
        if not self.commits.all_done():
            return False
        if not self.closing:
            self.closing = True
            for w in self.pool.live():
                if w.role != "consumer":  # consumers: _consumers_stopped tells each one
                    self.pool.send(w, m.NoMoreSplits())
            for w in self.leases.idle:
                self.pool.send(w, m.NoMoreSplits())
            self.leases.idle.clear()
        return self._consumers_stopped()

    def consumer_may_exit(self) -> bool:
        return self.closing or self.finished()

    def held_work(self, w: WorkerHandle) -> str | None:
        """A broker consumer always holds work: its partitions' unacknowledged batches, and a Stop to answer."""
        if w.role == "consumer":
            return "its broker partitions"
        return f"split {w.split_id}" if w.split_id is not None else None

    def _consumers_stopped(self) -> bool:
        """Consumers told to stop write and sync what they hold first: serve them until they exit.

        Every live consumer is told, once, by pid, on every pass: a consumer that dies while the run closes
        (e.g. killed after its last Synced, before its broker ack) is restarted, and its replacement must be
        told too, or the run waits forever for a consumer that idles on an empty topic.
        """
        consumers = self.pool.live("consumer")
        if not consumers:
            return True
        if self.state.stopping or self.closing:
            for w in consumers:
                if w.pid not in self.told_to_stop:
                    self.told_to_stop.add(w.pid)
                    self.pool.send(w, m.Stop())
        return False
