"""Worker entry points: a producer reads splits into ring slots, a consumer writes slots to the destination.

Workers never decide anything shared: the supervisor hands out splits and slots and commits
cursors. A worker may therefore be SIGKILLed at any instant; it holds no lock and its slots are
reclaimed by the supervisor. Every blocking wait has a timeout and checks that the supervisor lives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import pyarrow as pa

from bizon_fast.cursor import decode_position, encode_position
from bizon_fast.engine import messages as m
from bizon_fast.engine.build import build_destination, build_source
from bizon_fast.engine.channel import POLL_S, Channel, StopRequested, SupervisorGone, die_with_parent, setup_process
from bizon_fast.engine.incremental import apply_to_source
from bizon_fast.engine.spec import WorkerSpec, decode_spec
from bizon_fast.engine.streaming import commit_source_offsets, source_pages
from bizon_fast.engine.writes import write_with_retries
from bizon_fast.errors import DataError, UserError
from bizon_fast.faults import fault_point
from bizon_fast.source.incremental import batch_watermark
from bizon_fast.source.records import EXTRACTED_AT_KEY
from bizon_fast.transport import open_store
from bizon_fast.transport.base import BatchStore
from bizon_fast.transport.fit import fit_to_slots

log = logging.getLogger("bizon_fast.worker")

LINGER_S = 0.5  # a producer writes what it has after this long, even below batch_bytes


# ---------------------------------------------------------------- producer


class Producer:
    def __init__(self, chan: Channel, spec: WorkerSpec, store: BatchStore) -> None:
        self.chan = chan
        self.spec = spec
        self.store = store
        self.source = build_source(spec.source)
        apply_to_source(self.source, spec.incremental)  # incremental: the watermark to read after
        self.slots: deque[int] = deque()
        self.stopping = False
        self.filled: dict[str, int] = {}  # split -> last seq sent (stream mode waits for its commit)
        self.committed: dict[str, int] = {}  # split -> seq the supervisor reported committed
        self.split: Any = None  # the split being read

    def _handle(self, msg: m.Msg) -> None:
        if isinstance(msg, m.Grant):
            self.slots.append(msg.slot)
        elif isinstance(msg, m.Stop):
            self.stopping = True
        elif isinstance(msg, m.Committed):
            self.committed[msg.split_id] = msg.seq
            commit_source_offsets(self.source, self.split, msg)
        else:
            raise RuntimeError(f"producer got unexpected {type(msg).__name__}")

    def _poll_control(self) -> None:
        while True:
            msg = self.chan.recv(0)
            if msg is None:
                return
            self._handle(msg)
            if self.stopping:
                raise StopRequested()

    def _acquire_slot(self) -> int:
        while not self.slots:
            msg = self.chan.recv(None)
            self._handle(msg)
            if self.stopping:
                raise StopRequested()
        return self.slots.popleft()

    def run(self) -> None:
        while True:
            msg = self.chan.recv(None)
            if isinstance(msg, m.Assign):
                self.read_split(msg)
            elif isinstance(msg, m.NoMoreSplits):
                return
            else:
                self._handle(msg)
                if self.stopping:
                    return

    def read_split(self, assign: m.Assign) -> None:
        split = self.split = assign.split
        if assign.position is None:
            source_pos, skip = None, 0
        else:
            source_pos, skip = decode_position(assign.position)
        seq = assign.next_seq
        pending: list[pa.RecordBatch] = []
        pending_bytes = 0
        first_at = 0.0
        # position of the source before the first pending batch, and rows of it already published
        base_pos, base_skip = source_pos, skip

        def emit(end_pos: Any) -> None:
            nonlocal seq, pending, pending_bytes, base_pos, base_skip
            extracted = str(time.time_ns() // 1000).encode()
            stamped = [
                b.replace_schema_metadata({**(b.schema.metadata or {}), EXTRACTED_AT_KEY: extracted}) for b in pending
            ]
            groups = fit_to_slots(stamped, self.store.spec.slot_size)
            done_rows = 0
            total = sum(b.num_rows for b in pending)
            for i, group in enumerate(groups):
                rows = sum(b.num_rows for b in group)
                done_rows += rows
                # first: a batch without its cursor_field fails the job before it takes a slot
                mark = batch_watermark(group, self.spec.incremental.cursor_field) if self.spec.incremental else None
                slot = self._acquire_slot()
                nbytes = self.store.write(slot, group)
                fault_point("producer.after_fill")  # the slot holds the batch, the supervisor does not know it
                # a group that ends inside the pending rows resumes by skipping what it covered
                position = [end_pos, 0] if i == len(groups) - 1 else [base_pos, base_skip + done_rows]
                self.chan.send(m.Filled(slot, nbytes, split.id, seq, encode_position(position), rows, mark))
                self.filled[split.id] = seq
                seq += 1
            assert done_rows == total
            pending, pending_bytes = [], 0
            base_pos, base_skip = end_pos, 0

        last_pos = source_pos
        for batch, position in source_pages(self, split, source_pos):  # max_iterations, stream mode
            self._poll_control()
            if skip:
                if batch.num_rows <= skip:
                    skip -= batch.num_rows
                    last_pos, base_pos, base_skip = position, position, skip
                    continue
                batch = batch.slice(skip)
                skip = 0
            last_pos = position
            if batch.num_rows == 0:
                if not pending:
                    base_pos, base_skip = position, 0
                continue
            if not pending:
                first_at = time.monotonic()
            pending.append(batch)
            pending_bytes += batch.nbytes
            if pending_bytes >= self.spec.batch_bytes or time.monotonic() - first_at >= LINGER_S:
                emit(position)
        if pending:
            emit(last_pos)
        self.chan.send(m.SplitDone(split.id, seq - 1))


# ---------------------------------------------------------------- consumer


class Consumer:
    def __init__(self, chan: Channel, spec: WorkerSpec, store: BatchStore) -> None:
        from bizon_fast.transform.apply import build_transforms

        self.chan = chan
        self.spec = spec
        self.store = store
        context = msgspec.structs.replace(spec.context, worker=f"consumer-{spec.index}")
        self.destination = build_destination(spec.destination_name, spec.destination, context)
        self.transform = build_transforms(spec.transforms)
        # split -> list of (seq, slot, batches, rows, nbytes)
        self.buffer: dict[str, list[tuple[int, int, list[pa.RecordBatch], int, int]]] = {}
        self.buffered_bytes = 0
        self.held = 0
        self.oldest = 0.0

    def run(self) -> None:
        try:
            while True:
                timeout = None
                if self.held and self.spec.flush_timeout > 0:
                    timeout = max(0.0, self.oldest + self.spec.flush_timeout - time.monotonic())
                msg = self.chan.recv(timeout)
                if msg is None:
                    self.flush()
                elif isinstance(msg, m.Deliver):
                    self.take(msg)
                elif isinstance(msg, m.Flush):
                    self.flush()
                elif isinstance(msg, m.Stop):
                    self.flush()
                    return
                else:
                    raise RuntimeError(f"consumer got unexpected {type(msg).__name__}")
        finally:
            self.destination.close()

    def take(self, msg: m.Deliver) -> None:
        batches = self.store.read(msg.slot, msg.nbytes)
        if self.transform is not None:
            batches = self.transform(batches)
        nbytes = sum(b.nbytes for b in batches)
        if not self.held:
            self.oldest = time.monotonic()
        self.buffer.setdefault(msg.split_id, []).append((msg.seq, msg.slot, batches, msg.rows, nbytes))
        self.buffered_bytes += nbytes
        self.held += 1
        if self.buffered_bytes >= self.spec.buffer_bytes or self.held >= self.spec.max_held:
            self.flush()

    def flush(self) -> None:
        buffer, self.buffer = self.buffer, {}
        self.buffered_bytes = 0
        self.held = 0
        for split_id, items in buffer.items():
            items.sort(key=lambda it: it[0])
            run: list[tuple[int, int, list[pa.RecordBatch], int, int]] = []
            for item in items:
                if run and item[0] != run[-1][0] + 1:
                    self._write_run(split_id, run)
                    run = []
                run.append(item)
            self._write_run(split_id, run)

    def _write_run(self, split_id: str, run: list) -> None:
        first, last = run[0][0], run[-1][0]
        batches = [b for item in run for b in item[2]]
        write_with_retries(self.destination, split_id, first, last, batches)
        fault_point("consumer.after_write")  # durable but unreported: the supervisor must replay it
        slots = [item[1] for item in run]
        rows = sum(item[3] for item in run)
        nbytes = sum(item[4] for item in run)
        del batches, run  # no reference into the slots may outlive the report that frees them
        self.chan.send(m.Written(split_id, first, last, slots, rows, nbytes))


# ---------------------------------------------------------------- entry point


def _wait_as_spare(conn: Connection, spare: WorkerSpec) -> tuple[WorkerSpec, BatchStore | None]:
    """A hot spare: imports done, connectors loaded, waiting to be told which worker to become.

    Spawning a fresh interpreter and importing pyarrow costs about a second on a busy machine; a
    spare turns a crashed worker's replacement into one pipe message.
    """
    die_with_parent(spare.parent_pid, f"bf-spare-{spare.index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):  # warm the connector modules; a real error shows when promoted
        from bizon_fast.connectors.registry import destination_class, source_class

        source_class(spare.source["name"], spare.source["stream"], spare.source.get("source_file_path"))
        destination_class(spare.destination_name)
    store = open_store(spare.store) if spare.store is not None else None  # mapped and populated ahead of need
    ppid = os.getppid()
    while True:
        try:
            if conn.poll(POLL_S):
                return decode_spec(conn.recv_bytes()), store
        except (EOFError, ConnectionResetError, OSError):
            os._exit(0)
        if os.getppid() != ppid:
            os._exit(0)


def worker_main(conn: Connection, spec_bytes: bytes) -> None:
    """Process (or thread) entry point. Errors are reported to the supervisor, then the worker exits."""
    spec = decode_spec(spec_bytes)
    store = None
    if spec.role == "spare":
        spec, store = _wait_as_spare(conn, spec)
    if not spec.threaded:
        setup_process(spec)
    chan = Channel(conn, spec)
    try:
        if spec.broker is not None:
            from bizon_fast.engine.broker_worker import BrokerConsumer, BrokerProducer

            worker: Any = BrokerProducer(chan, spec) if spec.role == "producer" else BrokerConsumer(chan, spec)
        else:
            if store is None:
                assert spec.store is not None
                store = open_store(spec.store)
            worker = Producer(chan, spec, store) if spec.role == "producer" else Consumer(chan, spec, store)
        chan.send(m.Started(os.getpid()))
        worker.run()
    except (SupervisorGone, StopRequested):
        pass
    except BaseException as exc:  # noqa: BLE001 - everything goes to the supervisor, which decides
        detail = traceback.format_exc()
        log.error("%s-%d failed: %s\n%s", spec.role, spec.index, exc, detail)
        with contextlib.suppress(SupervisorGone):
            resumable = not isinstance(exc, (UserError, DataError))
            chan.send(m.Failed(f"{type(exc).__name__}: {exc}", detail, resumable))
        if not spec.threaded:
            os._exit(3)
    finally:
        if store is not None:
            store.close()
    if not spec.threaded:
        logging.shutdown()
        os._exit(0)
