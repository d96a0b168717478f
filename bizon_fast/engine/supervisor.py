"""The supervisor: plans splits, brokers ring slots, commits cursors, restarts crashed workers.

It is the only process that decides anything shared. Workers report what they did (a slot filled,
a run of batches written); the supervisor keeps the ledger, commits cursors once batches are
durable, and when a worker dies it knows exactly which slots and which split position to reclaim.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from bizon_fast.checkpoint.base import JobStatus
from bizon_fast.checkpoint.factory import create_backend
from bizon_fast.config.models import PipelineConfig
from bizon_fast.cursor import Cursor, encode_position
from bizon_fast.destination.base import DestinationContext
from bizon_fast.engine import incremental as inc
from bizon_fast.engine import messages as m
from bizon_fast.engine.build import build_destination, build_source
from bizon_fast.engine.handles import WorkerHandle, promote, start_fork_server, start_worker
from bizon_fast.engine.job import fingerprint, resolve_job
from bizon_fast.engine.ledger import SplitLedger
from bizon_fast.engine.progress import Progress
from bizon_fast.engine.spec import WorkerSpec
from bizon_fast.engine.streaming import notify_committed
from bizon_fast.errors import Interrupted, JobFailed, UserError
from bizon_fast.faults import fault_point
from bizon_fast.transport import cleanup_stale_segments, create_store
from bizon_fast.transport.base import BatchStore

log = logging.getLogger("bizon_fast.supervisor")

MiB = 1024 * 1024
GRANTS_PER_PRODUCER = 2
COMMIT_INTERVAL_S = 0.5
LOOP_TIMEOUT_S = 0.2


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class Supervisor:
    #: broker roles on several machines join one run, so they hold the pipeline's run lock shared
    run_lock_shared = False

    def __init__(self, cfg: PipelineConfig, *, progress: Progress, log_file: str | None = None) -> None:
        self.cfg = cfg
        self.progress = progress
        self.log_file = log_file
        runner = cfg.engine.runner
        self.threaded = runner.type == "thread" or cfg.engine.queue.type == "python_queue"
        self.streaming = inc.is_streaming(cfg)  # continuous: a batch per page, each written and committed
        self.plan: inc.Plan | None = None  # incremental watermark / stream reset of this run
        self.max_restarts = runner.config.max_restarts
        self.stall_timeout = runner.config.stall_timeout_s  # a silent worker holding work is killed after this
        self.drain_timeout = runner.config.drain_timeout_s  # a stop's drain is abandoned after this
        self.source_cfg = cfg.source.model_dump(mode="json")
        self.dest_cfg = cfg.destination.config.model_dump(mode="json", by_alias=True)
        self.workers: list[WorkerHandle] = []
        self.store: BatchStore | None = None
        self.ready: deque[tuple[int, int, str, int, int]] = deque()  # (slot, nbytes, split, seq, rows)
        self.free: list[int] = []
        self.waiting: deque[WorkerHandle] = deque()  # producers waiting for a slot
        self.pending_splits: deque[str] = deque()
        self.ledgers: dict[str, SplitLedger] = {}
        self.splits: dict[str, Any] = {}
        self.dirty: set[str] = set()
        self.durable_since_commit = 0
        self.last_commit = time.monotonic()
        self.restarts = 0
        self.crashes: dict[tuple[str, int], int] = {}
        self.restart_due: list[tuple[float, str, int]] = []
        self.home: dict[str, WorkerHandle] = {}  # split -> the consumer its batches go to
        self.spare: WorkerHandle | None = None  # a warmed-up process that replaces a crashed worker at once
        self.died_at: dict[tuple[str, int], float] = {}
        self.recoveries: list[float] = []  # seconds from a worker's death to its replacement working again
        self.failure: tuple[str, str] | None = None
        self.failure_resumable = True  # False when a rerun as is would fail the same way (see messages.Failed)
        self.drain_on_failure = False  # a source failure still writes what was read before it
        self.stop_started = 0.0
        self.interrupts = 0
        self.stopping = False
        self.rows = 0
        self.nbytes = 0
        self.batches = 0

    # ------------------------------------------------------------ setup

    def _sizes(self, producers: int, consumers: int) -> tuple[int, int, int]:
        """Slot size, slot count and per-consumer held-slot budget."""
        qcfg = self.cfg.engine.queue.config
        batch_bytes = int(qcfg.batch_size_mb * MiB)
        slot_size = max(64 * 1024, math.ceil(2 * batch_bytes / 4096) * 4096)
        buffer_bytes = int(self.cfg.destination.config.buffer_size * MiB)
        max_held = 2 if buffer_bytes == 0 else max(2, math.ceil(buffer_bytes / batch_bytes) + 1)
        minimum = producers * GRANTS_PER_PRODUCER + consumers * 2 + 1
        if qcfg.ring_size_mb:
            n_slots = int(qcfg.ring_size_mb * MiB) // slot_size
            if n_slots < minimum:
                raise UserError(
                    f"engine.queue.config.ring_size_mb: {qcfg.ring_size_mb} MiB holds {n_slots} slots of "
                    f"{slot_size // MiB} MiB; {producers} producers and {consumers} consumers need at least "
                    f"{math.ceil(minimum * slot_size / MiB)} MiB (or lower engine.queue.config.batch_size_mb)"
                )
            max_held = max(2, min(max_held, (n_slots - producers * GRANTS_PER_PRODUCER) // consumers))
        else:
            n_slots = producers * GRANTS_PER_PRODUCER + consumers * max_held + 2
        return slot_size, n_slots, max_held

    def _spec(self, role: str, index: int) -> WorkerSpec:
        dest = self.cfg.destination.config
        return WorkerSpec(
            role=role,
            index=index,
            source=self.source_cfg,
            destination_name=self.cfg.destination.name,
            destination=self.dest_cfg,
            transforms=[t.model_dump(mode="json", exclude_none=True) for t in self.cfg.transforms],
            context=self.context,
            store=self.store.spec if self.store is not None else None,
            batch_bytes=1 if self.streaming else int(self.cfg.engine.queue.config.batch_size_mb * MiB),
            buffer_bytes=0 if self.streaming else int(dest.buffer_size * MiB),
            flush_timeout=float(dest.buffer_flush_timeout),
            max_held=self.max_held,
            parent_pid=os.getpid(),
            log_level=self.cfg.engine.runner.log_level,
            log_file=self.log_file,
            threaded=self.threaded,
            incremental=self.plan.run if self.plan else None,
            streaming=self.streaming,
        )

    # ------------------------------------------------------------ run

    def run(self) -> RunSummary:
        cfg = self.cfg
        started = time.monotonic()
        if not self.threaded:
            start_fork_server()
        source = build_source(self.source_cfg)
        ok, error = source.check_connection()
        if not ok:
            raise JobFailed(f"source '{cfg.source.name}' check_connection failed: {error}")
        inc.check_cursor_field(source, cfg)  # a cursor_field the source lacks is a config error, before any job
        splits = source.splits()
        self.splits = {s.id: s for s in splits}
        total_rows = source.total_rows()

        backend = create_backend(cfg.engine.backend)
        backend.open()
        self.backend = backend
        self.job = None
        try:
            # one live run per pipeline: a second one is refused here, before it touches a job or the destination
            backend.hold_run(cfg.name, cfg.source.name, cfg.source.stream, shared=self.run_lock_shared)
            plan = inc.prepare(backend, cfg)
            resolved = self._resolve_job(
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
            )
            destination = build_destination(cfg.destination.name, self.dest_cfg, self.context)
            for split in splits:
                cursor = resolved.cursors.get(split.id, Cursor(split_id=split.id))
                pos = encode_position(cursor.position) if cursor.seq >= 0 else None
                self.ledgers[split.id] = SplitLedger.from_cursor(cursor, pos)
            self._prepare_destination(destination, {sid: led.committed.seq for sid, led in self.ledgers.items()})
            resumed_rows = sum(led.committed.rows for led in self.ledgers.values())
            self.pending_splits = deque(s.id for s in splits if not self.ledgers[s.id].done)
            if resolved.resumed:
                log.info(
                    "resuming job %s (attempt %d): %d of %d splits left, %d rows already committed",
                    self.job.id,
                    self.job.attempt,
                    len(self.pending_splits),
                    len(splits),
                    resumed_rows,
                )
            producers = min(cfg.engine.runner.config.producer_count(), max(1, len(self.pending_splits)))
            consumers = cfg.engine.runner.config.consumer_count()
            self.progress.start(total_rows, resumed_rows)
            try:
                if self.pending_splits:
                    self._run_workers(producers, consumers)
            except KeyboardInterrupt:
                self.interrupts = max(self.interrupts, 2)
                self._kill_all()
                self._commit(force=True)
            self.progress.stop()
            if self.failure is not None:
                message, _ = self.failure
                backend.set_job_status(self.job.id, JobStatus.FAILED, message[:2000])
                where = f"; log: {self.log_file}" if self.log_file else ""
                hint = (
                    "Run the same command to resume."
                    if self.failure_resumable
                    # a transform or an engine setting is not part of the job's identity: fixing it resumes the job
                    else "A rerun as is fails the same way: fix the cause, then the job resumes from its committed "
                    "cursors."
                )
                raise JobFailed(f"job {self.job.id} failed: {message}{where}. {hint}")
            if self.interrupts:
                backend.set_job_status(self.job.id, JobStatus.CANCELLED, "interrupted")
                committed = sum(led.committed.rows for led in self.ledgers.values())
                raise Interrupted(
                    f"Interrupted: {committed} rows committed for job {self.job.id}. "
                    "Run the same command to resume where it stopped."
                )
            self._complete(destination, backend)
            committed = sum(led.committed.rows for led in self.ledgers.values())
            return RunSummary(
                job_id=self.job.id,
                status="succeeded",
                rows=self.rows,
                total_rows=committed,
                nbytes=self.nbytes,
                batches=self.batches,
                seconds=time.monotonic() - started,
                restarts=self.restarts,
                resumed=resolved.resumed,
                splits=len(splits),
                producers=producers,
                consumers=consumers,
                extra={"recovery_s": self.recoveries},
            )
        except (JobFailed, Interrupted):
            raise
        except BaseException as exc:
            # a user error or a bug after the job was created: record it, so the job is not left "running"
            if getattr(self, "job", None) is not None:
                with contextlib.suppress(Exception):
                    backend.set_job_status(self.job.id, JobStatus.FAILED, f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finally:
            self.progress.stop()
            backend.close()

    # ------------------------------------------------------------ hooks (broker mode overrides them)

    def _resolve_job(self, backend: Any, **kw: Any) -> Any:
        return resolve_job(backend, **kw)

    def _prepare_destination(self, destination: Any, committed: dict[str, int]) -> None:
        destination.check_connection()
        destination.prepare(committed)

    def _complete(self, destination: Any, backend: Any) -> None:
        """Every split is done and committed: publish the destination and close the job."""
        cursors = [led.committed for led in self.ledgers.values()]
        inc.verify(self.cfg, self.plan, cursors)  # a job without a watermark to store publishes nothing
        destination.publish()
        fault_point("supervisor.after_publish")  # published, job still running: a rerun must publish nothing twice
        destination.close()
        inc.finish(backend, self.cfg, self.plan, self.job, cursors)
        backend.set_job_status(self.job.id, JobStatus.SUCCEEDED)

    def _requeue_split(self, split_id: str) -> None:
        """A producer died reading ``split_id``: someone reads it again from its committed cursor."""
        self.pending_splits.appendleft(split_id)

    def _tick(self) -> None:
        """Once per loop turn: periodic work of a subclass."""

    def _consumer_may_exit(self) -> bool:
        """A consumer that exits now is done, not crashed."""
        return self._finished()

    def _run_workers(self, producers: int, consumers: int) -> None:
        slot_size, n_slots, self.max_held = self._sizes(producers, consumers)
        kind = "memory" if self.threaded else "shm"
        if kind == "shm":
            for name in cleanup_stale_segments():
                log.warning("removed the shared-memory segment %s of a dead earlier run", name)
        self.store = create_store(kind, slot_size, n_slots)
        self.free = list(range(n_slots - 1, -1, -1))
        log.info(
            "job %s: %d producers, %d consumers, ring of %d x %d KiB slots (%s)",
            self.job.id,
            producers,
            consumers,
            n_slots,
            slot_size // 1024,
            kind,
        )
        try:
            with self._stop_signals():
                for i in range(consumers):
                    self._start("consumer", i)
                for i in range(producers):
                    self._start("producer", i)
                self._loop()
        finally:
            self._kill_all()
            self.store.destroy()

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

    def _start(self, role: str, index: int) -> None:
        spec = self._spec(role, index)
        spare, self.spare = self.spare, None
        if spare is not None and spare.alive():
            try:
                handle = promote(spare, spec)
                log.debug("promoted the hot spare (pid %s) to %s", spare.pid, handle.name)
            except OSError:
                spare.kill()
                handle = start_worker(spec)
        else:
            handle = start_worker(spec)
        handle.started_at = handle.last_heard = time.monotonic()
        self.workers.append(handle)
        if role == "producer":
            self._assign(handle)

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while True:
            if self.failure is not None and not self.drain_on_failure:
                self._kill_all()
                self._commit(force=True)
                return
            if self._drain_overdue():
                self._abandon_drain()
                return
            if self.failure is not None and not self.stopping:
                # a source error: what was read before it is good data; write and commit it, then fail
                self._begin_stop("source failed: writing what was read before the error, then failing the job")
            if self.interrupts and not self.stopping:
                self._begin_stop(
                    f"Interrupted: draining in-flight batches and committing for up to {self.drain_timeout:g}s "
                    "(Ctrl-C again to abort now)"
                )
            if self._finished():
                self._commit(force=True)
                for w in self.workers:
                    if w.role == "consumer":
                        self._send(w, m.Stop())
                self._join_all(timeout=10)
                return
            waitables: list[Any] = [w.conn for w in self.workers if not w.exited]
            waitables += [w.sentinel for w in self.workers if w.sentinel is not None and not w.exited]
            timeout = LOOP_TIMEOUT_S
            if self.restart_due:
                timeout = max(0.0, min(timeout, min(t for t, _, _ in self.restart_due) - time.monotonic()))
            ready = wait(waitables, timeout) if waitables else (time.sleep(timeout) or [])
            for w in list(self.workers):
                if w.conn in ready:
                    self._drain(w)
            for w in list(self.workers):
                dead = (w.sentinel is not None and w.sentinel in ready) or (w.process is None and not w.alive())
                if dead and not w.exited:
                    self._drain(w)
                    self._on_exit(w)
            self._check_stalls()
            self._restart_due()
            self._tick()
            if self.spare is None and self.batches:
                self._ensure_spare()  # once the workers are busy, not competing with their start
            self._maybe_flush()
            self._commit()
            self.progress.update(self.rows, self.nbytes)

    def _drain(self, w: WorkerHandle) -> None:
        try:
            while not w.conn.closed and w.conn.poll(0):
                msg = m.decode(w.conn.recv_bytes())
                w.last_heard = time.monotonic()
                if not isinstance(msg, m.Heartbeat):
                    self._handle(w, msg)
        except (EOFError, ConnectionResetError, OSError):
            pass

    def _send(self, w: WorkerHandle, msg: m.Msg) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):  # death: seen via the sentinel
            w.conn.send_bytes(m.encode(msg))

    def _recovered(self, w: WorkerHandle) -> None:
        died = self.died_at.pop((w.role, w.index), None)
        if died is not None:
            self.recoveries.append(time.monotonic() - died)
            log.info("%s working again %.3fs after its predecessor died", w.name, self.recoveries[-1])

    def _handle(self, w: WorkerHandle, msg: m.Msg) -> None:
        if isinstance(msg, m.Filled):
            self._recovered(w)
            w.granted.remove(msg.slot)
            self.ledgers[msg.split_id].publish(msg.seq, msg.position, msg.rows, msg.watermark)
            self.ready.append((msg.slot, msg.nbytes, msg.split_id, msg.seq, msg.rows))
            self._top_up(w)
            self._dispatch()
        elif isinstance(msg, m.Written):
            self._recovered(w)
            for slot in msg.slots:
                w.delivered.pop(slot, None)
                self.free.append(slot)
            w.flush_requested = False
            if self.ledgers[msg.split_id].mark_durable(msg.first_seq, msg.last_seq):
                self.dirty.add(msg.split_id)
            self.durable_since_commit += msg.last_seq - msg.first_seq + 1
            self.rows += msg.rows
            self.nbytes += msg.nbytes
            self.batches += msg.last_seq - msg.first_seq + 1
            self._serve_waiting()
            self._dispatch()
        elif isinstance(msg, m.SplitDone):
            if self.ledgers[msg.split_id].finish(msg.last_seq):
                self.dirty.add(msg.split_id)
            w.split_id = None
            self._assign(w)
        elif isinstance(msg, m.Failed):
            # the CLI prints the one-line error; the traceback belongs in the log file only
            log.error("%s failed: %s\n%s", w.name, msg.error, msg.detail, extra={"console": False})
            if self.failure is None:
                self.failure = (msg.error, msg.detail)
                self.failure_resumable = msg.resumable
                self.drain_on_failure = w.role == "producer"
        elif isinstance(msg, m.Started):
            log.debug("%s started (pid %d) %.3fs after spawn", w.name, msg.pid, time.monotonic() - w.started_at)
            died = self.died_at.get((w.role, w.index))
            if died is not None:
                log.info("%s replacement up %.3fs after its predecessor died", w.name, time.monotonic() - died)

    # ------------------------------------------------------------ slots and splits

    def _assign(self, w: WorkerHandle) -> None:
        if self.stopping or not self.pending_splits:
            self._send(w, m.NoMoreSplits())
            return
        split_id = self.pending_splits.popleft()
        led = self.ledgers[split_id]
        w.split_id = split_id
        self._send(
            w, m.Assign(self.splits[split_id], led.published_position, led.published_seq + 1, led.published_rows)
        )
        self._top_up(w)

    def _top_up(self, w: WorkerHandle) -> None:
        if w.exited or w.split_id is None:
            return
        while len(w.granted) < GRANTS_PER_PRODUCER and self.free:
            slot = self.free.pop()
            w.granted.append(slot)
            self._send(w, m.Grant(slot))
        if not w.granted and w not in self.waiting:
            self.waiting.append(w)

    def _serve_waiting(self) -> None:
        while self.waiting and self.free:
            self._top_up(self.waiting.popleft())
        for w in self.workers:
            if w.role == "producer" and w.split_id is not None and len(w.granted) < GRANTS_PER_PRODUCER and self.free:
                self._top_up(w)

    def _dispatch(self) -> None:
        """Hand ready batches to consumers, keeping each split on one consumer (its home).

        A consumer writes one part per run of consecutive seqs of a split, so a split whose batches
        alternate between consumers turns into many one-batch writes (measured on 20M rows to parquet:
        197 parts instead of 44, and 25% more consumer CPU). A split moves only to a consumer that is idle.
        """
        consumers = [w for w in self.workers if w.role == "consumer" and not w.exited]
        if not consumers or not self.ready:
            return
        kept: deque[tuple[int, int, str, int, int]] = deque()
        while self.ready:
            info = self.ready.popleft()
            home = self.home.get(info[2])
            if home is None or home.exited:
                load = {id(c): 0 for c in consumers}
                for h in self.home.values():
                    if id(h) in load:
                        load[id(h)] += 1
                home = min(consumers, key=lambda c: (load[id(c)], len(c.delivered)))
                self.home[info[2]] = home
            if len(home.delivered) >= self.max_held:
                idle = [c for c in consumers if not c.delivered]
                if not idle:
                    kept.append(info)  # its home writes what it holds, then takes more
                    continue
                home = self.home[info[2]] = idle[0]
            home.delivered[info[0]] = info
            self._send(home, m.Deliver(info[0], info[1], info[2], info[3], info[4]))
        self.ready = kept

    def _maybe_flush(self) -> None:
        """Tell consumers to write what they hold when nothing more is coming soon."""
        if self.ready:
            return
        active = [w for w in self.workers if w.role == "producer" and not w.exited and w.split_id is not None]
        if active and not all(not w.granted for w in active):
            return
        for c in self.workers:
            if c.role == "consumer" and c.delivered and not c.flush_requested and not c.exited:
                c.flush_requested = True
                self._send(c, m.Flush())

    def _finished(self) -> bool:
        if self.stopping:
            producers_left = any(w.role == "producer" and not w.exited for w in self.workers)
            consumers_busy = any(w.role == "consumer" and w.delivered and not w.exited for w in self.workers)
            return bool(not producers_left and not self.ready and not consumers_busy)
        return all(led.done for led in self.ledgers.values())

    def _commit(self, force: bool = False) -> None:
        if not self.dirty:
            return
        every = max(1, getattr(self.cfg.engine.backend.config, "syncCursorInDBEvery", 1))
        due = self.durable_since_commit >= every or time.monotonic() - self.last_commit >= COMMIT_INTERVAL_S
        if not (force or due or self.streaming):  # stream mode commits every batch
            return
        cursors = [self.ledgers[s].committed for s in sorted(self.dirty)]
        self.backend.commit_cursors(self.job.id, cursors)
        if self.streaming:
            notify_committed(self.workers, self._send, cursors)
        self.dirty.clear()
        self.durable_since_commit = 0
        self.last_commit = time.monotonic()

    # ------------------------------------------------------------ stopping, deaths and restarts

    def _begin_stop(self, note: str) -> None:
        self.stopping = True
        self.stop_started = time.monotonic()
        log.warning("%s", note, extra={"console": False})
        self.progress.note(note)
        self.pending_splits.clear()
        for w in self.workers:
            if w.role == "producer" and not w.exited:
                self._send(w, m.Stop())

    def _drain_overdue(self) -> bool:
        return self.stopping and time.monotonic() - self.stop_started > self.drain_timeout

    def _abandon_drain(self) -> None:
        """The stop's drain ran past ``drain_timeout_s``: kill the stragglers and commit what is durable.

        A stop must end even when a worker never will (stopped, hung in a write): what was written is
        committed, the rest is read again by the next run, which resumes from the committed cursors.
        """
        late = [f"{w.name} (pid {w.pid})" for w in self.workers if not w.exited]
        log.warning(
            "the drain did not finish within %gs (engine.runner.config.drain_timeout_s): killing %s; "
            "committing what was written",
            self.drain_timeout,
            ", ".join(late) or "no worker",
        )
        self._kill_all()
        self._commit(force=True)

    def _held_work(self, w: WorkerHandle) -> str | None:
        """What the run waits on ``w`` for, said for the log; None when it holds nothing and may idle."""
        if w.role == "producer":
            if w.split_id is not None:
                return f"split {w.split_id}"
            return f"{len(w.granted)} ring slots" if w.granted else None
        splits = sorted({info[2] for info in w.delivered.values()})
        return f"{len(w.delivered)} batches of split {', '.join(splits)}" if splits else None

    def _check_stalls(self) -> None:
        """Kill a worker process that went silent while it holds work; its death is then handled as a crash.

        Every worker process beats once a second from a thread of its own, so silence for
        ``stall_timeout_s`` means the whole process stopped running (SIGSTOP, a frozen cgroup, a C call
        that holds the GIL), not that it is busy: without this the run would wait for it forever. The
        SIGKILL (which also ends a stopped process) fires its sentinel, and the usual death path takes
        over: its slots are reclaimed, its split or batches go to a replacement, a restart is counted.
        Process mode only: thread workers cannot be killed, so a hung thread is not detected.
        """
        if self.threaded:
            return
        now = time.monotonic()
        for w in self.workers:
            if w.process is None or w.exited or w.stalled or now - w.last_heard <= self.stall_timeout:
                continue
            holding = self._held_work(w)
            if holding is None:
                continue
            log.warning(
                "%s (pid %s) stalled: silent for %.1fs (engine.runner.config.stall_timeout_s=%g) while holding %s; "
                "killing it so a replacement resumes its work",
                w.name,
                w.pid,
                now - w.last_heard,
                self.stall_timeout,
                holding,
            )
            w.stalled = True
            w.kill()

    def _on_exit(self, w: WorkerHandle) -> None:
        w.exited = True
        if w.process is not None:
            w.process.join(2)  # the sentinel fires a moment before the exit status can be reaped
        desc = w.exit_description()
        if w.stalled:
            desc = f"stalled, {desc}"
        for slot in w.granted:  # empty or half-written: nothing was published from them
            self.free.append(slot)
        w.granted.clear()
        if w in self.waiting:
            self.waiting.remove(w)
        clean = w.process is None or w.process.exitcode == 0
        crashed = not clean or (w.role == "producer" and w.split_id is not None and not self.stopping)
        if w.role == "consumer" and not self.stopping and not self._consumer_may_exit():
            crashed = True
        if w.delivered:
            # hand its batches to someone else, in order; a half-written part is replaced idempotently
            for info in sorted(w.delivered.values(), key=lambda i: (i[2], i[3]), reverse=True):
                self.ready.appendleft(info)
            w.delivered.clear()
        self.workers.remove(w)
        w.join(0.1)
        if self.failure is not None or not crashed:
            self._serve_waiting()
            self._dispatch()
            return
        if w.role == "producer" and w.split_id is not None:
            self._requeue_split(w.split_id)
        self.restarts += 1
        log.warning("%s died (%s); restart %d of %d", w.name, desc, self.restarts, self.max_restarts)
        if self.restarts > self.max_restarts:
            self.failure = (
                f"{w.name} died ({desc}) and the restart budget is spent "
                f"(engine.runner.config.max_restarts={self.max_restarts})",
                "",
            )
            return
        key = (w.role, w.index)
        self.died_at.setdefault(key, time.monotonic())
        n = self.crashes.get(key, 0)
        self.crashes[key] = n + 1
        delay = 0.0 if n == 0 else min(5.0, 0.25 * 2 ** (n - 1))
        self.restart_due.append((time.monotonic() + delay, w.role, w.index))
        self._serve_waiting()
        self._dispatch()

    def _restart_due(self) -> None:
        now = time.monotonic()
        due = [r for r in self.restart_due if r[0] <= now]
        if not due:
            return
        self.restart_due = [r for r in self.restart_due if r[0] > now]
        for _, role, index in due:
            if self.stopping and role == "producer":
                continue
            self._start(role, index)
            self._dispatch()
        self._ensure_spare()

    def _ensure_spare(self) -> None:
        """Keep one hot spare while the run needs workers (process mode only)."""
        if self.threaded or self.stopping or self.failure is not None:
            return
        if self.spare is None or not self.spare.alive():
            self.spare = start_worker(self._spec("spare", 0))

    def _kill_all(self) -> None:
        if self.spare is not None:
            self.spare.kill()
            self.spare.join(1)
            self.spare = None
        for w in self.workers:
            w.kill()
        for w in self.workers:
            w.join(2)
        self.workers = [w for w in self.workers if w.alive()]

    def _join_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.join(max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            w.kill()
        self.workers = []
