"""The cursor codec, the commit ledger and the sqlite checkpoint backend."""

from __future__ import annotations

import pytest

from bizon_fast.checkpoint.base import JobStatus
from bizon_fast.checkpoint.sqlite import SqliteBackend
from bizon_fast.cursor import Cursor, decode_cursor, decode_position, encode_cursor, encode_position
from bizon_fast.engine.ledger import SplitLedger


def test_cursor_round_trip_keeps_positions_of_any_shape() -> None:
    for position in [None, 17, "token", {"cursor": "final-cursor", "flag": True, "none": None}, [{"a": 1}, 3]]:
        cursor = Cursor(split_id="s1", seq=4, position=position, rows=100, done=False)
        assert decode_cursor(encode_cursor(cursor)) == cursor
    assert decode_position(encode_position([None, 0])) == [None, 0]


def _ledger() -> SplitLedger:
    return SplitLedger.from_cursor(Cursor(split_id="s"), None)


def test_ledger_advances_only_over_a_contiguous_prefix() -> None:
    led = _ledger()
    for seq in range(4):
        led.publish(seq, encode_position([seq * 10 + 10, 0]), 10)
    assert not led.mark_durable(1, 2)  # seq 0 not durable yet: nothing may be committed
    assert led.committed.seq == -1
    assert led.mark_durable(0, 0)
    assert led.committed.seq == 2 and led.committed.rows == 30 and led.committed.position == [30, 0]
    assert not led.done
    led.finish(3)
    assert not led.done
    led.mark_durable(3, 3)
    assert led.done and led.committed.rows == 40


def test_ledger_resumes_from_a_committed_cursor() -> None:
    cursor = Cursor(split_id="s", seq=5, position=[60, 0], rows=60)
    led = SplitLedger.from_cursor(cursor, encode_position(cursor.position))
    assert led.published_seq == 5 and led.published_rows == 60
    led.publish(6, encode_position([70, 0]), 10)
    assert led.mark_durable(6, 6)
    assert led.committed == Cursor(split_id="s", seq=6, position=[70, 0], rows=70)


def test_empty_split_is_done_when_finished() -> None:
    led = _ledger()
    assert led.finish(-1)
    assert led.done


@pytest.fixture
def backend(tmp_path):
    b = SqliteBackend(str(tmp_path / "ckpt"))
    b.open()
    yield b
    b.close()


def test_sqlite_backend_jobs_and_cursors(backend: SqliteBackend) -> None:
    job = backend.create_job(
        name="p", source_name="synthetic", stream_name="events", sync_mode="full_refresh", fingerprint="f", total_rows=9
    )
    assert backend.find_unfinished_job("p", "synthetic", "events").id == job.id
    backend.commit_cursors(job.id, [Cursor(split_id="a", seq=1, position=[5, 0], rows=5)])
    backend.commit_cursors(job.id, [Cursor(split_id="a", seq=2, position=[9, 0], rows=9, done=True)])
    assert backend.load_cursors(job.id) == {"a": Cursor(split_id="a", seq=2, position=[9, 0], rows=9, done=True)}
    backend.set_job_status(job.id, JobStatus.FAILED, "boom")
    again = backend.start_attempt(job.id)
    assert again.attempt == 2 and again.status == "running" and again.error is None
    backend.set_job_status(job.id, JobStatus.SUCCEEDED)
    assert backend.find_unfinished_job("p", "synthetic", "events") is None
    assert backend.last_succeeded_job("p", "synthetic", "events").id == job.id


def test_sqlite_file_survives_reopen(tmp_path) -> None:
    b = SqliteBackend(str(tmp_path / "db"))
    b.open()
    job = b.create_job(
        name="p", source_name="s", stream_name="t", sync_mode="full_refresh", fingerprint="f", total_rows=None
    )
    b.commit_cursors(job.id, [Cursor(split_id="x", seq=0, position=1, rows=1)])
    b.close()
    b2 = SqliteBackend(str(tmp_path / "db"))
    b2.open()
    assert b2.load_cursors(job.id)["x"].position == 1
    b2.close()
