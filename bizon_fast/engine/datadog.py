"""Datadog metrics of a run (bizon's ``monitoring: datadog``): DogStatsD over UDP to the configured agent.

Why it exists: a bizon user's dashboards and monitors read ``bizon_pipeline.*`` from their Datadog agent;
switching to bizon-fast must keep them working, and should add what bizon-fast knows that bizon did not.

What is sent, every ``SEND_EVERY_S`` from the supervisor's loop and once more at the end (the names are
listed in docs/operations.md):

* bizon's: ``bizon_pipeline.status`` (a count, tagged ``pipeline_status:<status>``: ``running`` when the
  work starts, then ``success``, ``killed_by_runner`` (interrupted), or the failure's kind:
  ``source_error``, ``transform_error``, ``destination_error``, ``backend_error``, ``queue_error``, or
  ``error`` where none of these says where; in stream mode also ``success`` at every send while the run
  is healthy, as bizon sends it after every stream iteration: the heartbeat its users' monitors watch) and
  ``bizon_pipeline.records_synced`` (a count: the rows the destination made durable) and
  ``bizon_pipeline.large_records`` (a count, tagged ``destination_id:<id>`` as bizon tags it: of those rows, the
  ones over bizon's large-row threshold; only the BigQuery streaming destinations have any, see
  ``Destination.large_rows``);
* bizon-fast's, under ``bizon_fast.``: rows, bytes and batches read and written, worker restarts and
  stalls (counts), and per split ``bizon_fast.split_lag_rows`` (a gauge tagged ``split:<id>``: rows read
  but not committed), ``bizon_fast.splits`` and ``bizon_fast.splits_done``.

Every metric carries bizon's tags (``pipeline_name``, ``pipeline_stream``, ``pipeline_source``,
``pipeline_destination``) and the configured ones. The numbers are the ones the Prometheus metrics read
(engine/metrics.py: the run state's totals, the worker pool's counts, the commit log's per-split lag), sent
as deltas, so nothing is counted twice. The ``datadog`` package's ``DogStatsd`` sends each metric as one UDP
datagram without waiting (a full socket drops it), so the loop is never held by the agent; with no agent
listening, its per-datagram warnings are cut to one a minute in the log.

``enable_tracing``: the run is one ddtrace span (``bizon_fast.run``, resource: the pipeline) with the same
tags, when ddtrace is installed; without it a warning says so and the run goes on, as in bizon.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bizon_fast.engine.incremental import is_streaming
from bizon_fast.engine.metrics import split_lags
from bizon_fast.errors import DataError, Interrupted, UserError

if TYPE_CHECKING:
    from bizon_fast.config.alerting import MonitoringConfig
    from bizon_fast.config.pipeline import PipelineConfig
    from bizon_fast.engine.metrics import RunMetrics

log = logging.getLogger("bizon_fast.datadog")

SEND_EVERY_S = 2.0  # the agent aggregates over 10 s: a few sends per interval keep the graphs current
STATUS = "bizon_pipeline.status"
RECORDS_SYNCED = "bizon_pipeline.records_synced"
LARGE_RECORDS = "bizon_pipeline.large_records"
PREFIX = "bizon_fast."
#: run state attribute or worker pool attribute -> the count it is sent as
COUNTS = {
    "rows_read": "rows_read",
    "bytes_read": "bytes_read",
    "batches_read": "batches_read",
    "rows": "rows_written",
    "nbytes": "bytes_written",
    "batches": "batches_written",
}
POOL_COUNTS = {"restarts": "worker_restarts", "stalls": "worker_stalls"}
#: where an exception was raised (a module path in its traceback) -> bizon's status for it
FAILED_IN = (
    ("bizon_fast/transform/", "transform_error"),
    ("bizon_fast/checkpoint/", "backend_error"),
    ("bizon_fast/transport/", "queue_error"),
    ("bizon_fast/connectors/destinations/", "destination_error"),
    ("bizon_fast/destination/", "destination_error"),
    ("bizon_fast/connectors/sources/", "source_error"),
    ("bizon_fast/source/", "source_error"),
    ("bizon_fast/compat/", "source_error"),
)
LOG_EVERY_S = 60.0


class _Throttle(logging.Filter):
    """One record a minute from the datadog client: with no agent, every datagram would log a warning."""

    def __init__(self) -> None:
        super().__init__()
        self.last = -LOG_EVERY_S

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.last < LOG_EVERY_S:
            return False
        self.last = now
        return True


def bizon_destination_id(cfg: PipelineConfig) -> str:
    """The ``destination_id`` tag bizon puts on ``large_records``: its destination's ``destination_id``.

    That is the configured one; with ``unnest`` and a single record schema, that schema's; else none, which
    bizon formats as ``None`` -- kept, so a monitor written against bizon's tag still matches.
    """
    details = cfg.destination.config
    if details.destination_id:
        return details.destination_id
    schemas = details.record_schemas or []
    if details.unnest and len(schemas) == 1:
        return schemas[0].destination_id
    return "None"


def failure_status(role: str, error: str) -> str:
    """bizon's status for a worker's failure: a producer's is the source's; a consumer's the transform's or the
    destination's (a transform's error is a ``DataError`` naming the transformation). No role: another machine
    failed the job (broker mode), which says no more."""
    if role == "producer":
        return "source_error"
    if role == "consumer":
        return (
            "transform_error" if error.startswith(DataError.__name__) and "transform" in error else "destination_error"
        )
    return "error"


def raised_status(exc: BaseException) -> str:
    """bizon's status for an exception of the supervisor: by the innermost package of its traceback."""
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename.replace("\\", "/"), tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    for filename, function in reversed(frames):
        if function == "_plan_splits":
            return "source_error"  # the source's check_connection or splits()
        for where, status in FAILED_IN:
            if where in filename:
                return status
    return "error"  # none of bizon's kinds says where: still not a success, for a monitor on the status


class DatadogMonitor:
    """The run's DogStatsD metrics: inert without ``monitoring:``; :meth:`reporting` wraps the run."""

    def __init__(self, cfg: PipelineConfig, metrics: RunMetrics) -> None:
        self.cfg = cfg
        self.settings: MonitoringConfig | None = cfg.monitoring
        self.metrics = metrics  # its run state, worker pool and commit log are what is sent
        self.streaming = is_streaming(cfg)
        self.client: Any = None
        self.last_send = 0.0
        self.seen: dict[str, int] = {}
        self.lagging: set[str] = set()  # splits sent with a lag last time: a split that leaves gets a last 0
        self.throttle = _Throttle()

    def tags(self) -> list[str]:
        """bizon's tags for the pipeline, then the configured ones."""
        assert self.settings is not None
        cfg = self.cfg
        return [
            f"pipeline_name:{cfg.name}",
            f"pipeline_stream:{cfg.source.stream}",
            f"pipeline_source:{cfg.source.name}",
            f"pipeline_destination:{cfg.destination.name}",
            *self.settings.config.tag_list(),
        ]

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """Send the run's status and metrics around the run; the last numbers and the outcome at its end."""
        if self.settings is None:
            yield
            return
        self._connect(self.settings)
        span = self._span(self.settings)
        status = "success"
        try:
            self._status("running")
            yield
        except Interrupted:
            status = "killed_by_runner"
            raise
        except BaseException as exc:
            state = self.metrics.state
            failure = state.failure  # a worker's failure is the run's (the JobFailed raised says it again)
            status = failure_status(state.failure_role, failure[0]) if failure else raised_status(exc)
            if span is not None:
                span.set_exc_info(type(exc), exc, exc.__traceback__)
            raise
        finally:
            try:
                self.update(force=True)
                self._status(status)
            except Exception:  # never hide the run's own outcome behind a metrics problem
                log.warning("datadog: the run's last metrics were not sent", exc_info=True)
            if span is not None:
                span.finish()
            self.client.close_socket()
            logging.getLogger("datadog.dogstatsd").removeFilter(self.throttle)

    def _connect(self, settings: MonitoringConfig) -> None:
        try:
            from datadog.dogstatsd import DogStatsd
        except ImportError:
            raise UserError(
                "monitoring: datadog needs the datadog package: pip install 'bizon-fast[datadog]'"
            ) from None
        details = settings.config
        host = details.agent_host()
        if host is None:
            log.warning(
                "monitoring.config.datadog_host_env_var: %s is not set and no datadog_agent_host is given: "
                "the datadog client picks DD_AGENT_HOST, else localhost",
                details.datadog_host_env_var,
            )
        logging.getLogger("datadog.dogstatsd").addFilter(self.throttle)
        self.client = DogStatsd(
            host=host,
            port=details.datadog_agent_port,
            constant_tags=self.tags(),
            disable_telemetry=True,  # the client's own datadog.dogstatsd.* metrics are not the pipeline's
        )
        log.info("sending Datadog metrics to %s:%d", self.client.host, self.client.port)

    def _span(self, settings: MonitoringConfig) -> Any:
        if not settings.config.enable_tracing:
            return None
        try:
            from ddtrace import tracer
        except ImportError:
            log.warning("monitoring: enable_tracing needs ddtrace (pip install ddtrace): the run is not traced")
            return None
        span = tracer.trace("bizon_fast.run", resource=self.cfg.name)
        for tag in self.tags():
            key, _, value = tag.partition(":")
            span.set_tag(key, value)
        return span

    def _status(self, status: str) -> None:
        self.client.increment(STATUS, tags=[f"pipeline_status:{status}"])

    def update(self, *, force: bool = False) -> None:
        """Send what changed since the last send: once per loop turn at most, every ``SEND_EVERY_S``."""
        if self.client is None:
            return
        now = time.monotonic()
        if not force and now - self.last_send < SEND_EVERY_S:
            return
        self.last_send = now
        m = self.metrics
        if self.streaming and not force and m.state.failure is None and not m.state.stopping:
            self._status("success")
        written = self._delta("rows", m.state.rows)
        if written:
            self.client.increment(RECORDS_SYNCED, value=written)
            self.client.increment(PREFIX + COUNTS["rows"], value=written)
        if large := self._delta("large_rows", m.state.large_rows):
            self.client.increment(LARGE_RECORDS, value=large, tags=[f"destination_id:{bizon_destination_id(self.cfg)}"])
        for attr, name in COUNTS.items():
            if attr != "rows" and (delta := self._delta(attr, getattr(m.state, attr))):
                self.client.increment(PREFIX + name, value=delta)
        for attr, name in POOL_COUNTS.items():
            if delta := self._delta(attr, getattr(m.pool, attr)):
                self.client.increment(PREFIX + name, value=delta)
        if m.commits is not None:
            reading = {w.split_id for w in m.pool.live("producer") if w.split_id is not None}
            lags, done = split_lags(m.commits, reading)
            for sid in self.lagging - set(lags):
                self.client.gauge(PREFIX + "split_lag_rows", 0, tags=[f"split:{sid}"])
            for sid, lag in lags.items():
                self.client.gauge(PREFIX + "split_lag_rows", lag, tags=[f"split:{sid}"])
            self.lagging = set(lags)
            self.client.gauge(PREFIX + "splits", len(m.commits.ledgers))
            self.client.gauge(PREFIX + "splits_done", done)

    def _delta(self, key: str, total: int) -> int:
        delta = total - self.seen.get(key, 0)
        if delta > 0:
            self.seen[key] = total
            return delta
        return 0
