"""Prometheus metrics of a run, served at ``/metrics`` from the supervisor for as long as the run lasts.

Why it exists: a long run is watched by a scraper, not by a person at its terminal. Everything a run's
health is judged by is already in the supervisor's parts (the run state's read and written totals, the
worker pool's restarts and stalls, the commit log's ledgers, the ring's slot pool); this module copies
those numbers into a private ``CollectorRegistry`` (never prometheus_client's global one, so two runs in
one process, as in the tests, do not collide) and serves it with prometheus_client's own WSGI server on a
daemon thread.

Cost: the supervisor calls :meth:`RunMetrics.update` once per loop turn; it does its work at most every
``UPDATE_EVERY_S``, and not at all when no ``engine.monitoring.prometheus`` (or ``--metrics-port``) is
set. The HTTP thread only reads the registry's values, never the supervisor's structures, so a scrape
cannot see them half-changed. Commit latency is timed by the commit log itself (``CommitLog.observer``),
so every commit is observed, not one per update.

The metric names are listed in ``docs/operations.md``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bizon_fast.errors import Interrupted, UserError

# prometheus_client and the WSGI server are imported where a run serves metrics, not here: the supervisor imports
# this module for every run, and most runs serve none (the imports are ~60 ms of every run's start-up)
if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.exposition import ThreadingWSGIServer

    from bizon_fast.checkpoint.base import JobRecord
    from bizon_fast.config.engine import PrometheusConfig
    from bizon_fast.config.pipeline import PipelineConfig
    from bizon_fast.engine.commits import CommitLog
    from bizon_fast.engine.ledger import SplitLedger
    from bizon_fast.engine.run_state import RunState
    from bizon_fast.engine.workers import WorkerPool

log = logging.getLogger("bizon_fast.metrics")

UPDATE_EVERY_S = 0.5  # the supervisor's loop turns every 0.2 s at most; scrapers look every 10-60 s
RUN_STATES = ("starting", "running", "stopping", "succeeded", "failed", "interrupted")
#: backend commits take ~1 ms (sqlite) to seconds (BigQuery)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PREFIX = "bizon_fast_"
#: how often the serving thread looks for the end of the run: the run's last step waits up to this for it
#: (prometheus_client's start_wsgi_server polls every 0.5 s, which added half a second to every run's end)
SERVE_POLL_S = 0.05


def metrics_url(host: str, port: int) -> str:
    """The address a scraper uses (an IPv6 host in brackets)."""
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


def serve(registry: CollectorRegistry, host: str, port: int) -> ThreadingWSGIServer:
    """prometheus_client's WSGI app on a daemon thread at ``host:port`` (0: a free port); OSError if it cannot bind.

    Like ``start_wsgi_server`` (an IPv6 host gets an IPv6 socket), but its thread notices ``shutdown()``
    within ``SERVE_POLL_S``.
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    class QuietHandler(WSGIRequestHandler):
        """No access log line per scrape on the run's stderr."""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            """Every request's log line dropped (Prometheus scrapes every few seconds)."""

    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    server = make_server(sockaddr[0], port, make_wsgi_app(registry), Server, handler_class=QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": SERVE_POLL_S}, name="bf-metrics", daemon=True
    )
    thread.start()
    return server


def split_lags(commits: CommitLog, reading: set[str]) -> tuple[dict[str, int], int]:
    """Rows read but not yet committed of each active split (being read, or read and not all committed), and
    how many splits are done. Shared by the Prometheus gauges and the Datadog metrics (engine/datadog.py)."""
    lags: dict[str, int] = {}
    done = 0
    for sid, led in commits.ledgers.items():
        if led.done:
            done += 1
            continue
        lag = led.published_rows - led.committed.rows
        if sid not in reading and lag <= 0:
            continue
        lags[sid] = max(0, lag)
    return lags, done


class _Families:
    """The run's metric families in one private registry (their names are documented in docs/operations.md)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info

        r = self.registry = CollectorRegistry(auto_describe=True)
        p = PREFIX
        self.up = Gauge(f"{p}up", "1 while the run serves its metrics", registry=r)
        self.state = Enum(f"{p}run_state", "the run's state", states=list(RUN_STATES), registry=r)
        self.job = Info(f"{p}job", "the job this run works on", registry=r)
        self.rows_read = Counter(f"{p}rows_read", "rows producers read (batches filled or sent)", registry=r)
        self.bytes_read = Counter(f"{p}bytes_read", "Arrow IPC bytes producers read", registry=r)
        self.batches_read = Counter(f"{p}batches_read", "batches producers read", registry=r)
        self.rows_written = Counter(f"{p}rows_written", "rows the destination made durable", registry=r)
        self.bytes_written = Counter(f"{p}bytes_written", "bytes the destination made durable", registry=r)
        self.batches_written = Counter(f"{p}batches_written", "batches the destination made durable", registry=r)
        self.large_rows_written = Counter(
            f"{p}large_rows_written",
            "rows made durable over bizon's large-row threshold (bizon_pipeline.large_records)",
            registry=r,
        )
        self.restarts = Counter(f"{p}worker_restarts", "workers restarted after a crash or a stall", registry=r)
        self.stalls = Counter(f"{p}worker_stalls", "workers killed for going silent while holding work", registry=r)
        self.workers = Gauge(f"{p}workers", "live workers", ["role"], registry=r)
        self.commit_seconds = Histogram(
            f"{p}commit_seconds",
            "time of each cursor commit to the checkpoint backend",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.ring_used = Gauge(f"{p}ring_slots_used", "ring slots holding or granted for a batch", registry=r)
        self.ring_slots = Gauge(f"{p}ring_slots", "slots in the shared-memory ring", registry=r)
        self.ring_occupancy = Gauge(f"{p}ring_occupancy", "ring slots in use / slots in the ring", registry=r)
        self.splits = Gauge(f"{p}splits", "splits of the job", registry=r)
        self.splits_done = Gauge(f"{p}splits_done", "splits read to the end and committed", registry=r)
        self.split_lag_rows = Gauge(
            f"{p}split_lag_rows", "rows of an active split read but not yet committed", ["split"], registry=r
        )
        self.split_commit_age = Gauge(
            f"{p}split_seconds_since_commit",
            "seconds since an active split's cursor was last committed (since the work started if not yet)",
            ["split"],
            registry=r,
        )


class RunMetrics:
    """The run's metrics: inert unless ``engine.monitoring.prometheus`` is set, served by :meth:`serving`."""

    def __init__(
        self,
        cfg: PipelineConfig,
        state: RunState,
        pool: WorkerPool,
        dispatch: Any,
        *,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.settings: PrometheusConfig | None = cfg.engine.monitoring.prometheus
        self.state = state
        self.pool = pool
        self.dispatch = dispatch  # RingDispatch reports its ring's occupancy; BrokerDispatch has no ring
        self.note = note  # the progress display's note: a port picked by the system is shown on the console
        self.families: _Families | None = None
        self.server: ThreadingWSGIServer | None = None
        self.url: str | None = None
        self.commits: CommitLog | None = None
        self.work_started = time.monotonic()
        self.last_update = 0.0
        self.seen: dict[str, int] = {}  # the totals already added to each counter
        self.committed_at: dict[str, float] = {}  # split -> monotonic time of its last cursor commit
        self.split_labels: set[str] = set()  # splits with per-split series now

    # ------------------------------------------------------------ serving

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Serve ``/metrics`` around the run; the final state is set, then the port is closed.

        Bound before anything else of the run, so a port in use is a user error before any job exists.
        """
        if self.settings is None:
            yield
            return
        self._start(self.settings)
        assert self.families is not None
        outcome = "failed"
        try:
            yield
            outcome = "succeeded"
        except Interrupted:
            outcome = "interrupted"
            raise
        finally:
            try:
                self.update(force=True)  # the final numbers, for a scrape racing the end
            except Exception:  # never hide the run's own outcome behind a metrics problem
                log.warning("metrics: the final update failed", exc_info=True)
            self.families.state.state(outcome)
            self.families.up.set(0)
            self._stop()

    def _start(self, settings: PrometheusConfig) -> None:
        self.families = _Families()
        self.families.state.state("starting")
        self._label_job("")  # planning: no job yet
        try:
            server = serve(self.families.registry, settings.host, settings.port)
        except OSError as exc:
            where = metrics_url(settings.host, settings.port)
            reason = exc.strerror or str(exc)
            raise UserError(
                f"engine.monitoring.prometheus: cannot serve metrics at {where}: {reason} "
                "(choose another port with --metrics-port or engine.monitoring.prometheus.port; 0 picks a free one)"
            ) from None
        self.server = server
        self.families.up.set(1)
        self.url = metrics_url(settings.host, server.server_address[1])
        log.info("serving Prometheus metrics at %s", self.url)
        if settings.port == 0 and self.note is not None:
            self.note(f"metrics: {self.url}")

    def _stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()  # the serving thread leaves its loop (within SERVE_POLL_S)
            self.server.server_close()  # the port is closed when the run is over
            self.server = None
            log.info("stopped serving metrics at %s", self.url)

    # ------------------------------------------------------------ what is measured

    def watch(self, commits: CommitLog, job: JobRecord) -> None:
        """The job is known and its ledgers loaded: time its commits, label the run with it."""
        self.commits = commits  # read by the Datadog metrics too (engine/datadog.py), served or not
        if self.families is None:
            return
        commits.observer = self._committed
        self.work_started = time.monotonic()
        self._label_job(job.id)
        self.families.splits.set(len(commits.ledgers))
        self.families.state.state("running")

    def _label_job(self, job_id: str) -> None:
        """The info metric's labels: the same names from the start, the job id once the job is joined."""
        assert self.families is not None
        cfg = self.cfg
        self.families.job.info(
            {
                "pipeline": cfg.name,
                "job_id": job_id,
                "source": cfg.source.name,
                "stream": cfg.source.stream,
                "destination": cfg.destination.name,
            }
        )

    def _committed(self, seconds: float, ledgers: list[SplitLedger]) -> None:
        """The commit log's observer: one backend commit of ``ledgers`` took ``seconds``."""
        assert self.families is not None
        self.families.commit_seconds.observe(seconds)
        now = time.monotonic()
        for led in ledgers:
            self.committed_at[led.split_id] = now

    def update(self, *, force: bool = False) -> None:
        """Copy the run's numbers into the registry: once per loop turn at most, every ``UPDATE_EVERY_S``."""
        f = self.families
        if f is None:
            return
        now = time.monotonic()
        if not force and now - self.last_update < UPDATE_EVERY_S:
            return
        self.last_update = now
        s, pool = self.state, self.pool
        self._add(f.rows_read, "rows_read", s.rows_read)
        self._add(f.bytes_read, "bytes_read", s.bytes_read)
        self._add(f.batches_read, "batches_read", s.batches_read)
        self._add(f.rows_written, "rows", s.rows)
        self._add(f.bytes_written, "nbytes", s.nbytes)
        self._add(f.batches_written, "batches", s.batches)
        self._add(f.large_rows_written, "large_rows", s.large_rows)
        self._add(f.restarts, "restarts", pool.restarts)
        self._add(f.stalls, "stalls", pool.stalls)
        producers = pool.live("producer")
        f.workers.labels("producer").set(len(producers))
        f.workers.labels("consumer").set(len(pool.live("consumer")))
        occupancy = getattr(self.dispatch, "ring_occupancy", None)
        ring = occupancy() if occupancy is not None else None
        if ring is not None:
            used, total = ring
            f.ring_used.set(used)
            f.ring_slots.set(total)
            f.ring_occupancy.set(used / total if total else 0.0)
        if s.stopping:
            f.state.state("stopping")
        if self.commits is not None:
            self._splits(now, {w.split_id for w in producers if w.split_id is not None})

    def _add(self, counter: Counter, key: str, total: int) -> None:
        delta = total - self.seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self.seen[key] = total

    def _splits(self, now: float, reading: set[str]) -> None:
        """Per-split lag of the active splits (being read, or read and not all committed); done ones drop out."""
        assert self.families is not None and self.commits is not None
        f = self.families
        lags, done = split_lags(self.commits, reading)
        active = set(lags)
        for sid, lag in lags.items():
            f.split_lag_rows.labels(sid).set(lag)
            f.split_commit_age.labels(sid).set(now - self.committed_at.get(sid, self.work_started))
        for sid in self.split_labels - active:
            f.split_lag_rows.remove(sid)
            f.split_commit_age.remove(sid)
        self.split_labels = active
        f.splits.set(len(self.commits.ledgers))
        f.splits_done.set(done)
