"""The supervisor's parts, one by one, and whole runs in-process through the thread runner.

The CLI tests prove the product end to end through subprocesses; these prove each part's rules directly
and fast: the slot pool's grants, the commit log's ordering, the worker pool's restart budget and
backoff, the ring dispatch's homes, and a supervisor (threads, in-memory store) that dispatches, handles
a worker's exit, and restarts a worker that vanished holding a split.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from bizon_fast.checkpoint.base import JobStatus
from bizon_fast.checkpoint.sqlite import SqliteBackend
from bizon_fast.connectors.pipeline import parse_config
from bizon_fast.cursor import Cursor, decode_position, encode_position
from bizon_fast.engine import messages as m
from bizon_fast.engine.commits import CommitLog
from bizon_fast.engine.dispatch import RingDispatch
from bizon_fast.engine.handles import WorkerHandle
from bizon_fast.engine.progress import Progress
from bizon_fast.engine.run_state import RunState
from bizon_fast.engine.slots import GRANTS_PER_PRODUCER, MiB, SlotPool, ring_layout
from bizon_fast.engine.supervisor import Supervisor
from bizon_fast.engine.workers import WorkerPool, backoff
from bizon_fast.errors import JobFailed, UserError


class FakeConn:
    """A worker's pipe end as the supervisor sees it: what was sent, decoded."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[m.Msg] = []

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(m.decode(data))

    def close(self) -> None:
        self.closed = True


def handle(role: str, index: int = 0) -> WorkerHandle:
    return WorkerHandle(role, index, FakeConn())  # type: ignore[arg-type]


def sent(w: WorkerHandle) -> list[m.Msg]:
    return w.conn.sent  # type: ignore[attr-defined]


def send(w: WorkerHandle, msg: m.Msg) -> None:
    w.conn.send_bytes(m.encode(msg))


# ---------------------------------------------------------------- slot pool


def test_slot_pool_grants_ahead_and_serves_the_waiting_first() -> None:
    pool = SlotPool(3, send)
    a, b = handle("producer", 0), handle("producer", 1)
    a.split_id = b.split_id = "s"
    pool.top_up(a)
    assert a.granted == [0, 1] and [type(x) for x in sent(a)] == [m.Grant, m.Grant]
    assert len(a.granted) == GRANTS_PER_PRODUCER
    pool.top_up(b)
    assert b.granted == [2] and not pool.waiting
    pool.filled(b, 2)
    pool.top_up(b)
    assert b.granted == [] and list(pool.waiting) == [b], "no free slot: the producer waits in line"
    pool.release([2])  # a consumer wrote the batch in slot 2
    pool.serve([a, b])
    assert b.granted == [2] and not pool.waiting


def test_slot_pool_takes_back_a_dead_producers_grants() -> None:
    pool = SlotPool(2, send)
    a = handle("producer")
    a.split_id = "s"
    pool.top_up(a)
    assert pool.free == []
    pool.reclaim(a)
    assert sorted(pool.free) == [0, 1] and a.granted == []


def test_a_producer_without_a_split_gets_no_grant() -> None:
    pool = SlotPool(2, send)
    idle = handle("producer")
    pool.top_up(idle)
    assert idle.granted == [] and sent(idle) == [] and not pool.waiting


def test_ring_layout_sizes_slots_from_the_batch_and_refuses_a_small_ring() -> None:
    layout = ring_layout(batch_size_mb=1, ring_size_mb=None, buffer_size_mb=0, producers=2, consumers=2)
    assert layout.slot_size == 2 * MiB and layout.max_held == 2
    assert layout.n_slots == 2 * GRANTS_PER_PRODUCER + 2 * 2 + 2
    with pytest.raises(UserError, match="ring_size_mb"):
        ring_layout(batch_size_mb=1, ring_size_mb=4, buffer_size_mb=0, producers=2, consumers=2)


def test_smaller_batches_keep_the_configs_slots_and_fill_the_same_buffer() -> None:
    """A bizon source's 1 MiB batches under the default 4: slots stay 8 MiB (the largest row a slot takes), the
    held-slot budget counts 1 MiB batches (a 20 MiB buffer still fills before a write)."""
    layout = ring_layout(
        batch_size_mb=1, ring_size_mb=None, buffer_size_mb=20, producers=1, consumers=1, slot_batch_mb=4
    )
    assert layout.slot_size == 8 * MiB and layout.max_held == 21
    assert layout.n_slots == GRANTS_PER_PRODUCER + 21 + 2


# ---------------------------------------------------------------- commit log


class RecordingBackend:
    def __init__(self) -> None:
        self.commits: list[list[Cursor]] = []

    def commit_cursors(self, job_id: str, cursors: list[Cursor]) -> None:
        self.commits.append(cursors)


def filled(split: str, seq: int, end: int) -> m.Filled:
    return m.Filled(seq, 10, split, seq, encode_position([end, 0]), 10)


def test_commit_log_commits_only_a_contiguous_prefix_of_durable_batches() -> None:
    backend = RecordingBackend()
    log = CommitLog(backend, "job", every=1)  # type: ignore[arg-type]
    log.load(["a"], {})
    for seq in range(3):
        log.published(filled("a", seq, (seq + 1) * 10))
    log.durable("a", 1, 2)  # out of order: seq 0 is not written yet
    log.commit(force=True)
    assert backend.commits == [], "nothing may be committed past an unwritten batch"
    log.durable("a", 0, 0)
    log.commit()
    [[cursor]] = backend.commits
    assert (cursor.seq, cursor.rows, cursor.position) == (2, 30, [30, 0])
    assert decode_position(log["a"].committed_position) == [30, 0]
    log.finished("a", 2)
    log.commit(force=True)
    assert backend.commits[-1][0].done and log.all_done()


def test_commit_log_waits_for_its_interval_unless_forced_and_tells_on_commit() -> None:
    backend = RecordingBackend()
    told: list[list[str]] = []
    log = CommitLog(backend, "job", every=5, on_commit=lambda leds: told.append([led.split_id for led in leds]))  # type: ignore[arg-type]
    log.load(["b", "a"], {})
    for split in ("b", "a"):
        log.published(filled(split, 0, 10))
        log.durable(split, 0, 0)
    log.last_commit = time.monotonic()
    log.commit()
    assert backend.commits == [], "2 durable batches of 5, inside the interval: not yet"
    log.commit(force=True)
    assert [c.split_id for c in backend.commits[0]] == ["a", "b"] and told == [["a", "b"]]


def test_commit_log_resumes_from_a_loaded_cursor_as_producer_bytes() -> None:
    log = CommitLog(RecordingBackend(), "job")  # type: ignore[arg-type]
    log.load(["a", "b"], {"a": Cursor(split_id="a", seq=4, position=[50, 3], rows=53)})
    assert decode_position(log["a"].published_position) == [50, 3] and log["a"].published_seq == 4
    assert log["b"].published_position is None and log.committed_seqs() == {"a": 4, "b": -1}


# ---------------------------------------------------------------- worker pool


def test_backoff_is_immediate_then_doubles_up_to_five_seconds() -> None:
    assert [backoff(n) for n in range(7)] == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0]


def test_worker_pool_spends_its_restart_budget_with_backoff_per_worker() -> None:
    pool = WorkerPool(max_restarts=2, threaded=True)
    w = handle("consumer", 1)
    assert pool.crashed(w, "exit code 3")
    [first] = pool.due_now()
    assert (first.role, first.index) == ("consumer", 1), "the first restart is immediate"
    assert pool.crashed(w, "exit code 3")
    assert pool.due_now() == [], "the second crash of the same worker waits"
    assert 0.2 < pool.due[0].at - time.monotonic() <= 0.25
    assert not pool.crashed(w, "exit code 3"), "the third crash is over the budget of 2"
    assert pool.restarts == 3


# ---------------------------------------------------------------- ring dispatch


def ring_cfg(tmp_path: Path, source: dict[str, Any] | None = None, **runner: Any) -> Any:
    return parse_config(
        {
            "name": "parts",
            "source": source
            or {"name": "synthetic", "stream": "events", "rows": 20_000, "splits": 4, "batch_rows": 500},
            "destination": {"name": "noop", "config": {"buffer_size": 0}},
            "engine": {
                "backend": {"type": "sqlite", "config": {"database": str(tmp_path / "state")}},
                "queue": {"type": "python_queue", "config": {"batch_size_mb": 0.01}},
                "runner": {"type": "thread", "config": {"max_workers": 2} | runner},
            },
        }
    )


def test_ring_dispatch_keeps_a_split_on_its_home_consumer(tmp_path: Path) -> None:
    state, pool = RunState(), WorkerPool(max_restarts=0, threaded=True)
    dispatch = RingDispatch(ring_cfg(tmp_path), state, pool, Progress())
    dispatch.max_held = 2
    dispatch.slots = SlotPool(4, send)
    c0, c1 = handle("consumer", 0), handle("consumer", 1)
    pool.workers = [c0, c1]
    for slot, (split, seq) in enumerate([("a", 0), ("b", 0), ("a", 1), ("a", 2)]):
        dispatch.ready.append(m.Deliver(slot, 1, split, seq, 1))
    dispatch.dispatch()
    home_a = dispatch.home["a"]
    assert dispatch.home["b"] is not home_a, "a new split goes to the least loaded consumer"
    assert [(d.split_id, d.seq) for d in sent(home_a)] == [("a", 0), ("a", 1)]
    assert [(d.split_id, d.seq) for d in dispatch.ready] == [("a", 2)], "its home is full and no consumer is idle"
    dispatch.reclaim(home_a)  # the home consumer died: its batches go back first, in order
    assert [(d.split_id, d.seq) for d in dispatch.ready] == [("a", 0), ("a", 1), ("a", 2)]


# ---------------------------------------------------------------- whole runs, in-process


VANISHING_SOURCE = '''
"""Split s0 vanishes once (its producer ends without a word) while the flag file exists."""

from pathlib import Path

import pyarrow as pa

from bizon_fast.engine.channel import SupervisorGone
from bizon_fast.source.base import Source, SourceBatch, SourceConfig, Split


class VanishingConfig(SourceConfig):
    rows: int = 4000
    flag: str = ""
    explode: bool = False


class VanishingSource(Source):
    @staticmethod
    def streams():
        return ["numbers"]

    @staticmethod
    def get_config_class():
        return VanishingConfig

    def splits(self):
        half, rows = self.config.rows // 2, self.config.rows
        return [Split(id="s0", params={"start": 0, "stop": half}), Split(id="s1", params={"start": half, "stop": rows})]

    def total_rows(self):
        return self.config.rows

    def read(self, split, position):
        start = split.params["start"] if position is None else position
        while start < split.params["stop"]:
            if split.id == "s0" and start >= 1000 and Path(self.config.flag).exists():
                if self.config.explode:
                    raise RuntimeError("source exploded")
                Path(self.config.flag).unlink()
                raise SupervisorGone()  # the thread ends as a killed process would: no Failed, no SplitDone
            end = min(split.params["stop"], start + 250)
            yield SourceBatch(pa.record_batch({"id": pa.array(range(start, end), pa.int64())}), end)
            start = end
'''


def vanishing(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    path = tmp_path / "vanishing.py"
    path.write_text(textwrap.dedent(VANISHING_SOURCE))
    flag = tmp_path / "vanish.flag"
    flag.touch()
    return {"name": "vanishing", "stream": "numbers", "source_file_path": str(path), "flag": str(flag), **extra}


def committed(tmp_path: Path, job_id: str) -> dict[str, Cursor]:
    backend = SqliteBackend(str(tmp_path / "state"))
    backend.open()
    try:
        return backend.load_cursors(job_id)
    finally:
        backend.close()


def test_thread_run_dispatches_every_split_and_commits_them(tmp_path: Path) -> None:
    summary = Supervisor(ring_cfg(tmp_path), progress=Progress()).run()
    assert summary.status == "succeeded" and summary.restarts == 0
    assert summary.rows == summary.total_rows == 20_000 and summary.splits == 4
    cursors = committed(tmp_path, summary.job_id)
    assert len(cursors) == 4
    assert all(c.done for c in cursors.values()) and sum(c.rows for c in cursors.values()) == 20_000


def test_thread_run_restarts_a_producer_that_vanished_holding_a_split(tmp_path: Path) -> None:
    summary = Supervisor(ring_cfg(tmp_path, vanishing(tmp_path)), progress=Progress()).run()
    assert summary.restarts == 1, "the producer ended holding split s0: a crash, restarted"
    assert summary.total_rows == 4000
    cursors = committed(tmp_path, summary.job_id)
    assert cursors["s0"].done and cursors["s0"].rows == 2000 and cursors["s0"].position == [2000, 0]


def test_thread_run_fails_when_the_restart_budget_is_spent(tmp_path: Path) -> None:
    cfg = ring_cfg(tmp_path, vanishing(tmp_path), max_restarts=0, max_workers=1)
    with pytest.raises(JobFailed, match=r"producer-\d died \(thread ended\) and the restart budget is spent"):
        Supervisor(cfg, progress=Progress()).run()


def test_thread_run_with_a_failing_source_commits_what_was_read_and_fails(tmp_path: Path) -> None:
    cfg = ring_cfg(tmp_path, vanishing(tmp_path, explode=True))
    supervisor = Supervisor(cfg, progress=Progress())
    with pytest.raises(JobFailed, match="source exploded"):
        supervisor.run()
    assert supervisor.job is not None
    cursors = committed(tmp_path, supervisor.job.id)
    assert not cursors.get("s0", Cursor(split_id="s0")).done, "the failed split is not done"
    backend = SqliteBackend(str(tmp_path / "state"))
    backend.open()
    try:
        job = backend.get_job(supervisor.job.id)
    finally:
        backend.close()
    assert job is not None and job.status == JobStatus.FAILED and "source exploded" in (job.error or "")
