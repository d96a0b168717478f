"""``run --result-json PATH`` and bizon's status line: a run's outcome in bizon 0.6.4's own words.

Why this exists: a pipeline switched from bizon keeps its scheduler, and the scheduler reads bizon's result
file (``status``, ``failure_class``, ``records_written``...) and greps bizon's ``Pipeline finished with status
Failure (...)`` line to decide what to alert on. bizon-fast has no producer/consumer status pair of its own
(a run is a supervisor and many workers), so this module translates what it does know -- the worker role
whose failure failed the job, the error that worker reported, the job and its committed rows -- into
bizon's vocabulary: ``failure_class`` (the side that failed first) and the per-side statuses bizon's
runner reports for that failure (``source_error`` on both sides for a source failure; ``killed_by_runner``
for the producer when the consumer's transform or destination fails). Where bizon itself reports a failure
by raising (a config error, a source whose check fails, an unknown error) there are no side statuses, and,
as in bizon, no status line.

The file says ``running`` as soon as the command starts, so a run killed from outside (OOM, a deadline)
leaves that behind rather than a previous run's outcome; the outcome replaces it atomically (a temporary
file renamed over it), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bizon_fast.errors import ConfigError, DataError, Interrupted, JobFailed, UserError

RUNNING = "running"
SUCCESS = "success"
FAILURE = "failure"

#: bizon's ``PipelineReturnStatus`` values this module reports
SUCCESS_STATUS = "success"
KILLED = "killed_by_runner"

#: the failure classes bizon 0.6.4 writes (``failure_class``)
FAILURE_CLASSES = ("config", "source", "destination", "backend", "queue", "transform", "stream", "killed", "unknown")


@dataclass
class Outcome:
    """One state of the result file: bizon 0.6.4's fields but ``started_at`` and ``duration_s`` (the file's own)."""

    status: str
    failure_class: str | None = None
    job_id: str | None = None
    producer: str | None = None
    consumer: str | None = None
    stream: str | None = None
    records_written: int | None = None
    error: str | None = None

    def status_line(self) -> str | None:
        """bizon's ``Pipeline finished with status ...`` line for a failed run, None where bizon prints none.

        bizon prints it (as click's ``Error: ...``) when its runner returned a failed status pair; a failure
        it raises instead (config, a source check, anything unforeseen) ends in a traceback without it.
        """
        if self.status != FAILURE:
            return None
        if self.stream is not None:
            return f"Pipeline finished with status Failure (Stream: {self.stream})"
        if self.producer is None or self.consumer is None:
            return None
        return f"Pipeline finished with status Failure (Producer: {self.producer}, Consumer: {self.consumer})"


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` (bizon's ``error`` is one line), or the text if it has none."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


def success(summary: Any, *, stream: bool) -> Outcome:  # noqa: ANN401 - engine.supervisor.RunSummary
    """A finished job: both sides (or the stream) succeeded; ``records_written`` counts every attempt's rows.

    bizon counts the rows its destination cursors hold for the job, which a resumed job keeps adding to:
    the summary's ``total_rows`` is the same count (this run's rows plus those committed before it).
    """
    sides = {"stream": SUCCESS_STATUS} if stream else {"producer": SUCCESS_STATUS, "consumer": SUCCESS_STATUS}
    return Outcome(SUCCESS, job_id=summary.job_id, records_written=summary.total_rows, **sides)


def dry_run() -> Outcome:
    """``run --dry-run``: the config and the plan were fine; no job ran, nothing was written."""
    return Outcome(SUCCESS)


def failure(exc: BaseException, *, configured: bool, stream: bool) -> Outcome:
    """The outcome of a run that ended with ``exc``; ``configured``: the pipeline config had loaded by then.

    A worker's failure names its side: the producer runs the source; a consumer runs the transforms (a
    transform that raises on the data is a ``DataError``) and the destination.
    """
    error = first_line(f"{type(exc).__name__}: {exc}")
    if not configured or isinstance(exc, ConfigError):  # a config rule checked only once the source is open
        return Outcome(FAILURE, failure_class="config", error=error)
    if isinstance(exc, Interrupted):  # Ctrl-C or SIGTERM: drained and committed, stopped from outside
        return Outcome(FAILURE, failure_class="killed", error=error)
    if not isinstance(exc, JobFailed):  # a user error met while running, a step that failed, a bug
        return Outcome(FAILURE, failure_class="unknown", error=error)
    reported = first_line(exc.error) if exc.error else error
    # bizon sums the rows its job wrote: a job that wrote none has null there, not 0
    outcome = Outcome(FAILURE, job_id=exc.job_id, records_written=exc.rows or None, error=reported)
    if exc.part == "source":  # the source's own check, before any job: bizon raises a ConnectionError there
        outcome.failure_class = "source"
        return outcome
    if exc.part == "producer":
        outcome.failure_class = "source"
        producer = consumer = "source_error"  # bizon's consumer reports the producer's failure too
    elif exc.part == "consumer":
        outcome.failure_class = "transform" if reported.startswith(f"{DataError.__name__}:") else "destination"
        producer, consumer = KILLED, f"{outcome.failure_class}_error"
    else:  # a failure no worker reported (another machine's, in distributed mode)
        outcome.failure_class = "unknown"
        return outcome
    if stream:
        outcome.stream = consumer if exc.part == "consumer" else producer
    else:
        outcome.producer, outcome.consumer = producer, consumer
    return outcome


class ResultFile:
    """``--result-json PATH``: ``running`` from the start, then the outcome; nothing at all without a path."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self.write(Outcome(RUNNING))

    def write(self, outcome: Outcome) -> None:
        """Replace the file with ``outcome`` (bizon's field order, two-space indent); UserError if unwritable."""
        if self.path is None:
            return
        doc = asdict(outcome)
        doc = {
            **{k: doc[k] for k in ("status", "failure_class", "job_id", "producer", "consumer", "stream")},
            "records_written": doc["records_written"],
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "duration_s": None if outcome.status == RUNNING else round(time.monotonic() - self._started, 3),
            "error": doc["error"],
        }
        tmp = Path(f"{self.path}.tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise UserError(f"--result-json: cannot write {self.path}: {exc.strerror or exc}") from None
