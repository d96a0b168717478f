"""Stream mode and ``max_iterations``: how a producer walks a source, and the stream-mode commit handshake.

``source_pages`` is what a producer iterates for a split:

- normally ``source.read(split, position)``;
- in stream mode (``sync_mode: stream`` or bizon's ``stream`` runner), a source with ``poll`` (every
  bizon-style source, and the dummy) is polled forever: bizon's stream contract, where the source keeps
  its own position (a Kafka consumer group) and ``get()`` takes no pagination. A source that also has
  a real ``commit`` is committed only after the supervisor confirms that everything it returned so far
  is durable (the ``Committed`` message), so a crash never loses what the source already acknowledged.
  An empty poll is an iteration too: it sleeps ``IDLE_SLEEP_S`` like bizon's stream runner;
- ``max_iterations`` caps the pages at exactly N (bizon fetched N + 1).

In stream mode a producer also sends every batch on its own (``batch_bytes=1``), consumers write every
batch (``buffer_bytes=0``), and the supervisor commits cursors after every write and tells the producers
(``Committed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import pyarrow as pa

from bizon_fast.engine import messages as m
from bizon_fast.engine.spec import WorkerSpec
from bizon_fast.source.base import SourceBatch, Split
from bizon_fast.source.records import SOURCE_RECORDS_SCHEMA

IDLE_SLEEP_S = 2.0  # after an empty poll, as bizon's stream runner


def source_pages(
    source: Any, spec: WorkerSpec, split: Split, position: Any, wait_committed: Callable[[str], None]
) -> Iterator[SourceBatch]:
    """The pages a producer reads for ``split`` from ``position`` (see the module docstring).

    ``wait_committed(split_id)`` blocks until the supervisor reports committed every batch sent so far.
    """
    cap = getattr(source.config, "max_iterations", None) or None
    if spec.streaming and callable(getattr(source, "poll", None)):
        return _polled(source, split, cap, wait_committed)
    pages = iter(source.read(split, position))
    return islice(pages, cap) if cap else pages


def _polled(source: Any, split: Split, cap: int | None, wait_committed: Callable[[str], None]) -> Iterator[SourceBatch]:
    commits = bool(getattr(source, "has_commit", False))
    polls = 0
    while cap is None or polls < cap:
        page = source.poll(split)
        polls += 1
        if page is None or page.batch.num_rows == 0:
            yield SourceBatch(empty_batch() if page is None else page.batch, None)
            if cap is None or polls < cap:
                time.sleep(IDLE_SLEEP_S)
            continue
        yield page  # the producer sends it on before asking for the next one
        if commits:  # including after the last page: the source acknowledges everything it returned
            wait_committed(split.id)
            source.commit()


def empty_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=SOURCE_RECORDS_SCHEMA)


def commit_source_offsets(source: Any, split: Split | None, msg: m.Committed) -> None:
    """Producer side: hand a committed cursor's position to a source that reports its own offsets
    (the ``kafka`` source commits them to its consumer group, for lag dashboards)."""
    commit = getattr(source, "commit_offsets", None)
    if commit is None or split is None or split.id != msg.split_id or msg.position is None:
        return
    from bizon_fast.cursor import decode_position

    source_position, _ = decode_position(msg.position)
    commit(split, source_position)
