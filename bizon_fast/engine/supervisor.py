"""The supervisor: plans splits, runs the job, and composes the parts that run its workers.

It is the only process that decides anything shared. Workers report what they did (a slot filled, a
run of batches written); the supervisor's parts keep the books:

- the worker pool (``engine/workers.py``): processes started, heard, restarted within a budget;
- the commit log (``engine/commits.py``): every split's ledger, cursors committed once batches are durable;
- a dispatch part: splits, ring slots and batches to workers (``engine/dispatch.py``), or splits
  leased through the checkpoint backend and batches through a broker (``engine/distributed.py``);
- the run state (``engine/run_state.py``): stopping, failed, rows moved.

When a worker dies, the dispatch part takes back exactly what it held (slots, batches, its split) and
the pool restarts it; the commit log never moved past what was durable, so nothing is lost or skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from bizon_fast.checkpoint.base import CheckpointBackend, JobRecord, JobStatus
from bizon_fast.checkpoint.factory import create_backend
from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.destination.base import DestinationContext
from bizon_fast.engine import incremental as inc
from bizon_fast.engine import messages as m
from bizon_fast.engine.alerts import Alerts
from bizon_fast.engine.build import build_destination, build_source
from bizon_fast.engine.commits import CommitLog
from bizon_fast.engine.datadog import DatadogMonitor
from bizon_fast.engine.dispatch import RingDispatch
from bizon_fast.engine.handles import WorkerHandle
from bizon_fast.engine.job import ResolvedJob, fingerprint
from bizon_fast.engine.ledger import SplitLedger
from bizon_fast.engine.metrics import RunMetrics
from bizon_fast.engine.progress import Progress, SplitProgress
from bizon_fast.engine.run_state import RunState
from bizon_fast.engine.slots import MiB, batch_size_mb
from bizon_fast.engine.spec import WorkerSpec
from bizon_fast.engine.workers import WorkerPool
from bizon_fast.errors import Interrupted, JobFailed
from bizon_fast.faults import fault_point

#: at most this many formatting threads a consumer: past it the writer thread and the page cache bind
MAX_DESTINATION_THREADS = 4


def destination_threads(consumers: int, cores: int | None = None, busy: int = 0) -> int:
    """Threads each consumer's destination may use (``DestinationContext.threads``): the machine's cores less the
    ``busy`` ones (producers of a source that ``holds_a_core``) shared among the consumers, 1 to
    ``MAX_DESTINATION_THREADS``. Why: one consumer formatting json on a many-core machine would otherwise leave the
    other cores idle, while a consumer per core must not add threads, nor a consumer beside a bizon source's
    producer take that producer's core (measured, 1M records -> json on 2 cores, 7 rounds: 0.93 s after start-up
    with one formatting thread, 0.98 s with two)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_DESTINATION_THREADS, (cores - busy) // max(1, consumers)))


log = logging.getLogger("bizon_fast.supervisor")

LOOP_TIMEOUT_S = 0.2
#: the hot spare is started once batches flow and the workers have run this long: a job that ends sooner (most small
#: jobs) would only fork, warm up and kill it; a crash before then restarts with a plain fork, a few tenths slower.
#: At 1 s a 1M-record bizon job (~1 s of workers) started its spare in its last tens of milliseconds, and the fork
#: and kill landed on its end: 1.39x its loop in one benchmark run where the others read 1.18-1.26x
SPARE_AFTER_S = 3.0


class Dispatch(Protocol):
    """Who gets which work, and when the run is finished: ``RingDispatch`` or ``BrokerDispatch``."""

    run_lock_shared: bool
    #: True when no worker can write before the supervisor hands it a batch (the ring): the workers then start
    #: while the supervisor prepares the destination, so the source's first page overlaps that start-up
    workers_before_destination: bool

    def resolve_job(self, backend: CheckpointBackend, **kw: Any) -> ResolvedJob: ...
    def prepare_destination(self, destination: Any, committed: dict[str, int], backend: Any, job_id: str) -> None: ...
    def complete(self, publish: Callable[[], None], destination: Any, backend: Any, job_id: str) -> None: ...
    def bind(
        self, commits: CommitLog, splits: dict[str, Any], pending: list[str], backend: Any, job: JobRecord
    ) -> None: ...
    def opened(self, producers: int, consumers: int, job_id: str) -> contextlib.AbstractContextManager[None]: ...
    def roles(self, producers: int, consumers: int) -> list[tuple[str, int]]: ...
    def spec(self, spec: WorkerSpec) -> WorkerSpec: ...
    def started(self, w: WorkerHandle) -> None: ...
    def handle(self, w: WorkerHandle, msg: m.Msg) -> bool: ...
    def tick(self) -> None: ...
    def stop(self) -> None: ...
    def reclaim(self, w: WorkerHandle) -> None: ...
    def requeue(self, split_id: str) -> None: ...
    def settle(self) -> None: ...
    def finished(self) -> bool: ...
    def consumer_may_exit(self) -> bool: ...
    def held_work(self, w: WorkerHandle) -> str | None: ...


DispatchFactory = Callable[[PipelineConfig, RunState, WorkerPool, Progress], Dispatch]


@dataclass
class RunSummary:
    job_id: str
    status: str
    rows: int  # rows written by this run
    total_rows: int  # rows committed for the job, including earlier attempts
    nbytes: int
    batches: int
    seconds: float
    restarts: int
    resumed: bool
    splits: int
    producers: int
    consumers: int
    delivery: str = ""  # what the destination's capabilities promise: exactly-once or at-least-once
    output: str = ""  # where the rows went (a path, a table), as the destination's config describes it
    log_file: str | None = None  # this run's log
    #: the schema changes the destination applied at publish (recorded with the job too)
    schema_changes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class Supervisor:
    def __init__(
        self,
        cfg: PipelineConfig,
        *,
        progress: Progress,
        log_file: str | None = None,
        log_format: str = "text",
        log_to_stderr: bool = False,
        dispatch: DispatchFactory = RingDispatch,
    ) -> None:
        self.cfg = cfg
        self.progress = progress
        self.log_file = log_file
        self.log_format = log_format  # the workers write the supervisor's format (engine/logformat.py)
        self.log_to_stderr = log_to_stderr
        runner = cfg.engine.runner
        self.threaded = runner.type == "thread" or cfg.engine.queue.type == "python_queue"
        self.streaming = inc.is_streaming(cfg)  # continuous: a batch per page, each written and committed
        self.plan: inc.Plan | None = None  # incremental watermark / stream reset of this run
        self.schema_changes: list[str] = []  # what the destination's publish changed in the target's schema
        self.stall_timeout = runner.config.stall_timeout_s  # a silent worker holding work is killed after this
        self.drain_timeout = runner.config.drain_timeout_s  # a stop's drain is abandoned after this
        self.source_cfg = cfg.source.model_dump(mode="json")
        self.dest_cfg = cfg.destination.config.model_dump(mode="json", by_alias=True)
        self.state = RunState()
        self.pool = WorkerPool(max_restarts=runner.config.max_restarts, threaded=self.threaded)
        self.dispatch = dispatch(cfg, self.state, self.pool, progress)
        self.metrics = RunMetrics(cfg, self.state, self.pool, self.dispatch, note=progress.note)
        self.alerts = Alerts(cfg, self.state)  # bizon's `alerting: slack` (engine/alerts.py)
        self.datadog = DatadogMonitor(cfg, self.metrics)  # bizon's `monitoring: datadog` (engine/datadog.py)
        self.backend: Any = None
        self.job: JobRecord | None = None
        self.context: DestinationContext | None = None
        self.commits: CommitLog | None = None
        self.stop_started = 0.0
        self.workers_started = 0.0  # monotonic time the first workers were started (the spare waits SPARE_AFTER_S)
        self.interrupts = 0
        self.delivery = ""
        self._dest_threads = 1  # set per run from the consumer count (destination_threads)

    # ------------------------------------------------------------ the run, step by step

    def run(self) -> RunSummary:
        """Run the job; ``/metrics`` is served for all of it when asked for (a port in use: before any job)."""
        with self.metrics.serving(), self.alerts.sending(), self.datadog.reporting():
            return self._run()

    def _run(self) -> RunSummary:
        started = time.monotonic()  # the CLI started the fork server already, so its imports overlap planning
        splits, total_rows = self._plan_splits()
        backend = self.backend = create_backend(self.cfg.engine.backend)
        backend.open()
        try:
            resolved = self._join_job(backend, total_rows)
            self._load_commits(splits, resolved)
            prepared: list[Any] = []  # the destination, once prepared (before the workers or while they start)
            producers, consumers = self._work(splits, total_rows, lambda: prepared.append(self._prepare(backend)))
            self._end_if_failed_or_interrupted(backend)
            destination = prepared[0]
            self.dispatch.complete(lambda: self._publish(destination, backend), destination, backend, self._job.id)
            return self._summary(started, resolved.resumed, len(splits), producers, consumers)
        except (JobFailed, Interrupted):
            raise
        except BaseException as exc:
            # a user error or a bug after the job was created: record it, so the job is not left "running"
            if self.job is not None:
                with contextlib.suppress(Exception):
                    backend.set_job_status(
                        self.job.id, JobStatus.FAILED, f"{type(exc).__name__}: {exc}"[:2000], restarts=self._restarts()
                    )
            raise
        finally:
            self.progress.stop()
            backend.close()

    @property
    def _job(self) -> JobRecord:
        assert self.job is not None
        return self.job

    @property
    def _commits(self) -> CommitLog:
        assert self.commits is not None
        return self.commits

    def _restarts(self) -> int:
        """The job's worker restarts over all its attempts, recorded with its final status (`bizon-fast jobs`)."""
        return (self._job.restarts or 0) + self.pool.restarts

    def _plan_splits(self) -> tuple[list[Any], int | None]:
        """Check the source, and list its splits (before any job exists: a failure here leaves no trace)."""
        source = build_source(self.source_cfg)
        self.state.holds_a_core = source.holds_a_core
        ok, error = source.check_connection()
        if not ok:
            raise JobFailed(f"source '{self.cfg.source.name}' check_connection failed: {error}", part="source")
        inc.check_cursor_field(source, self.cfg)  # a cursor_field the source lacks is a config error, before any job
        return source.splits(), source.total_rows()

    def _join_job(self, backend: Any, total_rows: int | None) -> ResolvedJob:
        """Take the pipeline's run lock, then resume its unfinished job or create one."""
        cfg = self.cfg
        # one live run per pipeline: a second one is refused here, before it touches a job or the destination
        backend.hold_run(cfg.name, cfg.source.name, cfg.source.stream, shared=self.dispatch.run_lock_shared)
        plan = inc.prepare(backend, cfg)
        resolved = self.dispatch.resolve_job(
            backend,
            name=cfg.name,
            source_name=cfg.source.name,
            stream=cfg.source.stream,
            sync_mode=cfg.source.sync_mode,
            fp=fingerprint(self.source_cfg, cfg.destination.name, self.dest_cfg),
            total_rows=total_rows,
            force_new=cfg.source.force_ignore_checkpoint or plan.new_reset,
        )
        self.job = resolved.job
        self.plan = inc.bind(backend, cfg, plan, self.job, resolved.resumed)
        self.context = DestinationContext(
            job_id=self.job.id,
            pipeline=cfg.name,
            source_name=cfg.source.name,
            stream=cfg.source.stream,
            sync_mode=self.plan.destination_mode,
            cursor_field=cfg.source.cursor_field,
        )
        return resolved

    def _load_commits(self, splits: list[Any], resolved: ResolvedJob) -> None:
        """Load every split's committed cursor into the commit log; hand the pending splits to the dispatch part."""
        job = self._job
        backend = self.backend
        every = getattr(self.cfg.engine.backend.config, "syncCursorInDBEvery", 1)
        on_commit = self._tell_producers if self.streaming else None
        self.commits = CommitLog(backend, job.id, every=every, streaming=self.streaming, on_commit=on_commit)
        self.commits.load([s.id for s in splits], resolved.cursors)
        self.metrics.watch(self.commits, job)
        pending = [s.id for s in splits if not self.commits[s.id].done]
        self.dispatch.bind(self.commits, {s.id: s for s in splits}, pending, backend, job)
        if resolved.resumed:
            log.info(
                "resuming job %s (attempt %d): %d of %d splits left, %d rows already committed",
                job.id,
                job.attempt,
                len(pending),
                len(splits),
                self.commits.committed_rows(),
            )

    def _prepare(self, backend: Any) -> Any:
        """Build the destination and prepare it from the committed cursors (before any batch is delivered)."""
        assert self.context is not None
        destination = build_destination(self.cfg.destination.name, self.dest_cfg, self.context)
        self.delivery = destination.capabilities.delivery()  # declared by the destination, read here once
        log.info("destination %s, delivery: %s", self.cfg.destination.name, self.delivery)
        self.dispatch.prepare_destination(destination, self._commits.committed_seqs(), backend, self._job.id)
        return destination

    def _work(self, splits: list[Any], total_rows: int | None, prepare: Callable[[], None]) -> tuple[int, int]:
        """Prepare the destination and run the workers until every split is done and committed, or the run ends.

        Where the dispatch part allows it, the workers start first and ``prepare`` runs while they start up
        (spawn, imports, the source's first page): a small job's start-up is mostly that wait.
        """
        commits = self._commits
        pending = [s.id for s in splits if not commits[s.id].done]
        runner = self.cfg.engine.runner.config
        # a producer reads one split at a time, and on the ring a split's batches stay on one consumer (its home):
        # workers beyond the splits would only idle, each holding an interpreter and its share of the ring. A
        # consumer count asked for by name is kept; a broker's consumers serve its partitions, not these splits.
        producers = min(runner.producer_count(), max(1, len(pending)))
        consumers = runner.consumer_count()
        if runner.consumers is None and self.cfg.engine.queue.type not in ("kafka", "rabbitmq"):
            consumers = min(consumers, max(1, len(pending)))
        early = bool(pending) and self.dispatch.workers_before_destination
        if not early:
            prepare()
        self.progress.start(total_rows, commits.committed_rows(), self._split_progress(splits))
        try:
            if pending:
                self._run_workers(producers, consumers, prepare if early else None)
        except KeyboardInterrupt:
            self.interrupts = max(self.interrupts, 2)
            self.pool.kill_all()
            commits.commit(force=True)
        self.progress.stop()
        return producers, consumers

    def _split_progress(self, splits: list[Any]) -> Callable[[], list[SplitProgress]]:
        """``--progress splits``: per split, rows read (committed before this run + read by it), committed, done.

        Read from the commit log's ledgers and the read counts dispatch keeps: no backend call, and the
        display asks at most every ``progress.SPLITS_EVERY_S``.
        """
        commits, read = self._commits, self.state.split_rows_read
        before = {s.id: commits[s.id].committed.rows for s in splits}
        totals = {s.id: s.total_rows for s in splits}

        def snapshot() -> list[SplitProgress]:
            return [
                SplitProgress(sid, rows + read.get(sid, 0), commits[sid].committed.rows, totals[sid], commits[sid].done)
                for sid, rows in before.items()
            ]

        return snapshot

    def _end_if_failed_or_interrupted(self, backend: Any) -> None:
        job = self._job
        if self.state.failure is not None:
            message, _ = self.state.failure
            backend.set_job_status(job.id, JobStatus.FAILED, message[:2000], restarts=self._restarts())
            where = f"; log: {self.log_file}" if self.log_file else ""
            hint = (
                "Run the same command to resume."
                if self.state.failure_resumable
                # a transform or an engine setting is not part of the job's identity: fixing it resumes the job
                else "A rerun as is fails the same way: fix the cause, then the job resumes from its committed cursors."
            )
            raise JobFailed(
                f"job {job.id} failed: {message}{where}. {hint}",
                part=self.state.failure_role or None,
                error=message,
                job_id=job.id,
                rows=self._commits.committed_rows(),
            )
        if self.interrupts:
            backend.set_job_status(job.id, JobStatus.CANCELLED, "interrupted", restarts=self._restarts())
            raise Interrupted(
                f"Interrupted: {self._commits.committed_rows()} rows committed for job {job.id}. "
                "Run the same command to resume where it stopped."
            )

    def _publish(self, destination: Any, backend: Any) -> None:
        """Every split is done and committed: publish the destination and close the job."""
        cursors = self._commits.cursors()
        inc.verify(self.cfg, self.plan, cursors)  # a job without a watermark to store publishes nothing
        destination.publish()
        fault_point("supervisor.after_publish")  # published, job still running: a rerun must publish nothing twice
        destination.close()
        inc.finish(backend, self.cfg, self.plan, self.job, cursors)
        self.schema_changes = list(getattr(destination, "schema_changes", None) or [])
        backend.set_job_status(
            self._job.id,
            JobStatus.SUCCEEDED,
            restarts=self._restarts(),
            schema_changes="\n".join(self.schema_changes) or None,
        )

    def _summary(self, started: float, resumed: bool, splits: int, producers: int, consumers: int) -> RunSummary:
        return RunSummary(
            job_id=self._job.id,
            status="succeeded",
            rows=self.state.rows,
            total_rows=self._commits.committed_rows(),
            nbytes=self.state.nbytes,
            batches=self.state.batches,
            seconds=time.monotonic() - started,
            restarts=self.pool.restarts,
            resumed=resumed,
            splits=splits,
            producers=producers,
            consumers=consumers,
            delivery=self.delivery,
            output=self.cfg.destination.config.describe_output(self.cfg.source.name, self.cfg.source.stream),
            log_file=self.log_file,
            schema_changes=self.schema_changes,
            extra={"recovery_s": self.pool.recoveries},
        )

    # ------------------------------------------------------------ workers

    def _spec(self, role: str, index: int) -> WorkerSpec:
        dest = self.cfg.destination.config
        spec = WorkerSpec(
            role=role,
            index=index,
            source=self.source_cfg,
            destination_name=self.cfg.destination.name,
            destination=self.dest_cfg,
            transforms=[t.model_dump(mode="json", exclude_none=True) for t in self.cfg.transforms],
            context=self._worker_context(role),
            store=None,
            batch_bytes=1
            if self.streaming
            else int(batch_size_mb(self.cfg.engine.queue.config, self.state.holds_a_core) * MiB),
            buffer_bytes=0 if self.streaming else int(dest.buffer_size * MiB),
            flush_timeout=float(dest.buffer_flush_timeout),
            max_held=2,
            parent_pid=os.getpid(),
            log_level=self.cfg.engine.runner.log_level,
            log_file=self.log_file,
            log_format=self.log_format,
            log_to_stderr=self.log_to_stderr,
            threaded=self.threaded,
            incremental=self.plan.run if self.plan else None,
            streaming=self.streaming,
        )
        return self.dispatch.spec(spec)

    def _worker_context(self, role: str) -> DestinationContext:
        """The job's context; a consumer's carries the formatting threads it may use."""
        assert self.context is not None
        if role != "consumer":
            return self.context
        return msgspec.structs.replace(self.context, threads=self._dest_threads)

    def _run_workers(self, producers: int, consumers: int, prepare: Callable[[], None] | None = None) -> None:
        self._dest_threads = destination_threads(consumers, busy=producers if self.state.holds_a_core else 0)
        with self.dispatch.opened(producers, consumers, self._job.id):
            try:
                with self._stop_signals():
                    self.workers_started = time.monotonic()
                    for role, count in self.dispatch.roles(producers, consumers):
                        for i in range(count):
                            self._start(role, i)
                    if prepare is not None:  # the workers start meanwhile; none is handed a batch before the loop
                        prepare()
                    self._loop()
            finally:
                self.pool.kill_all()

    def _start(self, role: str, index: int) -> None:
        self.dispatch.started(self.pool.start(self._spec(role, index)))

    @contextlib.contextmanager
    def _stop_signals(self) -> Iterator[None]:
        """Ctrl-C, and SIGTERM (a stop request from k8s or systemd): drain and commit, then exit 130."""
        previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupts += 1
        if self.interrupts >= 2:
            raise KeyboardInterrupt

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._ended():
            ready = self.pool.wait(LOOP_TIMEOUT_S)
            self._hear(ready)
            self._upkeep()

    def _ended(self) -> bool:
        """Start a stop when one is due; True when the run is over (done, failed, or its drain overdue)."""
        state = self.state
        if state.failure is not None and not state.drain_on_failure:
            self.pool.kill_all()
            self._commits.commit(force=True)
            return True
        if state.stopping and time.monotonic() - self.stop_started > self.drain_timeout:
            self._abandon_drain()
            return True
        if state.failure is not None and not state.stopping:
            # a source error: what was read before it is good data; write and commit it, then fail
            self._begin_stop("source failed: writing what was read before the error, then failing the job")
        if self.interrupts and not state.stopping:
            self._begin_stop(
                f"Interrupted: draining in-flight batches and committing for up to {self.drain_timeout:g}s "
                "(Ctrl-C again to abort now)"
            )
        if self.dispatch.finished():
            self._commits.commit(force=True)
            for w in self.pool.workers:
                if w.role == "consumer":
                    self.pool.send(w, m.Stop())
            self.pool.join_all(timeout=10)
            return True
        return False

    def _hear(self, ready: list[Any]) -> None:
        """Read what the workers sent; handle the deaths their sentinels (or ended threads) show."""
        for w in list(self.pool.workers):
            if w.conn in ready:
                self.pool.drain(w, self._handle)
        for w in list(self.pool.workers):
            dead = (w.sentinel is not None and w.sentinel in ready) or (w.process is None and not w.alive())
            if dead and not w.exited:
                self.pool.drain(w, self._handle)
                self._on_exit(w)

    def _upkeep(self) -> None:
        """Once per turn: stalls, due restarts, the dispatch part's periodic work, the spare, commits, progress."""
        self.pool.check_stalls(self.stall_timeout, self.dispatch.held_work)
        self._restart_due()
        self.dispatch.tick()
        if self.pool.spare is None and self.state.batches and time.monotonic() - self.workers_started >= SPARE_AFTER_S:
            self._ensure_spare()  # once the workers are busy, not competing with their start nor a small job's end
        self._commits.commit()
        self.progress.update(self.state.rows_read, self.state.rows, self.state.bytes_read, self.state.nbytes)
        self.metrics.update()
        self.datadog.update()

    def _handle(self, w: WorkerHandle, msg: m.Msg) -> None:
        if self.dispatch.handle(w, msg):
            return
        if isinstance(msg, m.Failed):
            # the CLI prints the one-line error; the worker logged its traceback (engine/worker.py) into the same
            # log just before it sent this message: one line here, so the log holds the traceback once
            log.error("%s failed: %s (its traceback is logged above)", w.name, msg.error, extra={"console": False})
            self.state.fail(msg.error, msg.detail, resumable=msg.resumable, drain=w.role == "producer", role=w.role)
        elif isinstance(msg, m.Started):
            self.pool.started(w, msg)

    def _tell_producers(self, committed: list[SplitLedger]) -> None:
        """Stream mode: tell each producer how far its split is committed (its source may commit offsets)."""
        by_split = {led.split_id: led for led in committed}
        for w in self.pool.live("producer"):
            led = by_split.get(w.split_id) if w.split_id is not None else None
            if led is not None:
                position = led.committed_position if led.committed.seq >= 0 else None
                self.pool.send(w, m.Committed(led.split_id, led.committed.seq, position))

    # ------------------------------------------------------------ stopping, deaths and restarts

    def _begin_stop(self, note: str) -> None:
        self.state.stopping = True
        self.stop_started = time.monotonic()
        log.warning("%s", note, extra={"console": False})
        self.progress.note(note)
        self.dispatch.stop()
        for w in self.pool.live("producer"):
            self.pool.send(w, m.Stop())

    def _abandon_drain(self) -> None:
        """The stop's drain ran past ``drain_timeout_s``: kill the stragglers and commit what is durable.

        A stop must end even when a worker never will (stopped, hung in a write): what was written is
        committed, the rest is read again by the next run, which resumes from the committed cursors.
        """
        late = [f"{w.name} (pid {w.pid})" for w in self.pool.live()]
        log.warning(
            "the drain did not finish within %gs (engine.runner.config.drain_timeout_s): killing %s; "
            "committing what was written",
            self.drain_timeout,
            ", ".join(late) or "no worker",
        )
        self.pool.kill_all()
        self._commits.commit(force=True)

    def _on_exit(self, w: WorkerHandle) -> None:
        desc = self.pool.exited(w)
        clean = w.process is None or w.process.exitcode == 0
        crashed = not clean or (w.role == "producer" and w.split_id is not None and not self.state.stopping)
        if w.role == "consumer" and not self.state.stopping and not self.dispatch.consumer_may_exit():
            crashed = True
        self.dispatch.reclaim(w)
        self.pool.remove(w)
        if self.state.failure is not None or not crashed:
            self.dispatch.settle()
            return
        if w.role == "producer" and w.split_id is not None:
            self.dispatch.requeue(w.split_id)
        if not self.pool.crashed(w, desc):
            self.state.fail(
                f"{w.name} died ({desc}) and the restart budget is spent "
                f"(engine.runner.config.max_restarts={self.pool.max_restarts})",
                role=w.role,
            )
            return
        self.dispatch.settle()

    def _restart_due(self) -> None:
        due = self.pool.due_now()
        if not due:
            return
        for restart in due:
            if self.state.stopping and restart.role == "producer":
                continue
            self._start(restart.role, restart.index)
        self._ensure_spare()

    def _ensure_spare(self) -> None:
        """Keep one hot spare while the run needs workers (process mode only)."""
        if self.state.stopping or self.state.failure is not None:
            return
        self.pool.ensure_spare(lambda: self._spec("spare", 0))
