"""Slack alerts of a run (bizon's ``alerting: slack``): log records at the configured levels, and the run's failure.

Why it exists: a bizon user's on-call channel gets a message when a pipeline fails, and switching to bizon-fast
must keep that. The message is bizon's (the same lines: sync, source and stream, destination, message, file,
function, level), so whatever the channel's readers or workflows match keeps matching.

How it differs from bizon, and why:

* bizon posts from a loguru sink, in the thread that logged, and waits for Slack. Here a logging handler on the
  supervisor puts the alert in a bounded queue and returns; a daemon thread posts it. A slow or unreachable
  webhook never holds the run loop, which keeps workers fed.
* Every post is retried with backoff (connection errors, 5xx, 429 with its ``Retry-After``); a 4xx other than
  429 is a bad webhook and is not retried. However Slack answers, the job's outcome is the job's own.
* Only the supervisor posts. A worker's error reaches the supervisor as a ``Failed`` message, which the
  supervisor logs as an ERROR line: that line is the alert. A worker's other lines (process or thread) are
  not alerts, so both runners alert alike.
* The same message twice in one run (two consumers failing on the same transform error) is posted once; the
  job's final failure is posted unless its error was posted already (a worker's failure line says it).
* At the end of the run what is queued is sent within ``FLUSH_S``; what is still unsent then is counted in
  the log, never waited for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bizon_fast.engine.logformat import from_worker_thread
from bizon_fast.errors import Interrupted, JobFailed

if TYPE_CHECKING:
    from bizon_fast.config.alerting import AlertingConfig
    from bizon_fast.config.pipeline import PipelineConfig
    from bizon_fast.engine.run_state import RunState

log = logging.getLogger("bizon_fast.alerts")

#: alerts waiting for the sender; more are dropped (and counted): a flood of log lines must not grow memory
QUEUE_SIZE = 256
#: the waits between tries of one post (5 tries in all); a 429's Retry-After replaces the wait, up to MAX_WAIT_S
BACKOFF_S = (0.5, 1.0, 2.0, 4.0)
MAX_WAIT_S = 30.0
REQUEST_TIMEOUT_S = 10.0
#: how long the end of a run waits for queued alerts to be posted
FLUSH_S = 5.0
#: loggers whose records are never alerts: this module's own (a failed post must not post about itself) and
#: the datadog client's (its send errors are throttled in the log, engine/datadog.py)
NOT_ALERTS = ("bizon_fast.alerts", "datadog")
#: a message longer than this is cut (Slack shows about 4,000 characters of a message's text)
MAX_MESSAGE = 3000
#: distinct messages remembered for the "posted once" rule; a long stream run starts over past this
MAX_REMEMBERED = 1000
#: a worker's name in a message: "consumer-0 failed: X" and "consumer-1 failed: X" are one alert
WORKER_NAME = re.compile(r"\b(producer|consumer|spare)-\d+\b")


@dataclass
class Alert:
    """One message for the channel: what bizon's payload shows."""

    level: str
    message: str
    file: str
    line: int
    function: str


def slack_payload(cfg: PipelineConfig, alert: Alert) -> dict[str, str]:
    """bizon's Slack message (the same lines, in the same order) for ``alert`` of pipeline ``cfg``."""
    message = alert.message if len(alert.message) <= MAX_MESSAGE else alert.message[: MAX_MESSAGE - 1] + "…"
    text = (
        ":rotating_light: *Bizon Pipeline Alert* :rotating_light:\n\n"
        f"*Sync*: `{cfg.name}`\n"
        f"*Source*: `{cfg.source.name}` - `{cfg.source.stream}`\n"
        f"*Destination*: `{cfg.destination.name}`\n\n"
        f"*Message:*\n```{message}```\n"
        f"*File:* `{alert.file}:{alert.line}`\n"
        f"*Function:* `{alert.function}`\n"
        f"*Level:* `{alert.level}`\n"
    )
    return {"text": text}


def webhook_host(url: str) -> str:
    """The webhook's host, for log lines: the URL's path is its secret."""
    return urllib.parse.urlsplit(url).netloc or "the webhook"


class SlackSender:
    """A daemon thread posting queued payloads to the webhook, with retries; closed with a deadline."""

    def __init__(self, url: str) -> None:
        self.url = url
        # unbounded as a queue, bounded by submit(): the closing sentinel always fits
        self.queue: queue.Queue[dict[str, str] | None] = queue.Queue()
        self.deadline = float("inf")  # set by close(): no wait or request lasts past it
        self.accepted = 0
        self.sent = 0
        self.failed = 0  # given up after the tries, or refused by Slack
        self.full = 0  # dropped: the queue held QUEUE_SIZE alerts already
        self.thread = threading.Thread(target=self._run, name="bf-alerts", daemon=True)
        self.thread.start()

    @property
    def not_sent(self) -> int:
        """Alerts neither posted nor given up on: dropped at a full queue, or still queued when the run ended."""
        return self.full + self.accepted - self.sent - self.failed

    def submit(self, payload: dict[str, str]) -> None:
        """Queue ``payload`` without waiting: a full queue drops it."""
        if self.queue.qsize() >= QUEUE_SIZE:
            self.full += 1
            return
        self.accepted += 1
        self.queue.put_nowait(payload)

    def close(self, timeout: float = FLUSH_S) -> None:
        """Post what is queued, for ``timeout`` seconds at most; what is left then is counted, not waited for."""
        self.deadline = time.monotonic() + timeout
        self.queue.put_nowait(None)
        self.thread.join(timeout + 0.5)  # a request in flight ends by the deadline (its timeout is cut to it)
        if self.failed or self.not_sent:
            log.warning(
                "slack alerts: %d sent, %d failed, %d not sent (queue full or the run's end came first)",
                self.sent,
                self.failed,
                self.not_sent,
            )

    def _left(self) -> float:
        return self.deadline - time.monotonic()

    def _run(self) -> None:
        while (payload := self.queue.get()) is not None:
            if self._left() > 0:
                self._deliver(payload)
            # past the deadline the rest is only drained: close() counts it as not sent

    def _deliver(self, payload: dict[str, str]) -> None:
        import urllib.error  # here, with urllib.request in _post: a run that sends no alert never loads them

        body = json.dumps(payload).encode()
        for attempt, backoff in enumerate((*BACKOFF_S, None)):
            wait = backoff
            try:
                self._post(body)
                self.sent += 1
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    log.warning("slack alert refused by %s: HTTP %d %s", webhook_host(self.url), exc.code, exc.reason)
                    self.failed += 1
                    return
                reason = f"HTTP {exc.code}"
                after = exc.headers.get("Retry-After") if exc.headers else None
                if wait is not None and after and after.isdigit():
                    wait = min(max(float(after), wait), MAX_WAIT_S)
            except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections are OSErrors
                reason = str(getattr(exc, "reason", exc))
            if wait is None or not self._wait(wait):  # out of tries, or the run's end comes before the next one
                log.warning(
                    "slack alert not sent to %s after %d tries: %s", webhook_host(self.url), attempt + 1, reason
                )
                self.failed += 1
                return

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` before the next try; False, at once, if the run's end comes first.

        Slept in short steps, so a run that ends during a long ``Retry-After`` is noticed.
        """
        resume = time.monotonic() + seconds
        while (now := time.monotonic()) < resume:
            if resume >= self.deadline:
                return False
            time.sleep(min(0.1, resume - now))
        return True

    def _post(self, body: bytes) -> None:
        import urllib.request

        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        timeout = max(0.1, min(REQUEST_TIMEOUT_S, self._left()))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()


class AlertHandler(logging.Handler):
    """The supervisor's log records at or above the configured level, as alerts (deduplicated per run)."""

    def __init__(self, alerts: Alerts, level: int) -> None:
        super().__init__(level)
        self.alerts = alerts

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(NOT_ALERTS) or from_worker_thread(record):
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the logging call's problem, not the alert's
            message = str(record.msg)
        self.alerts.alert(Alert(record.levelname, message, record.pathname, record.lineno, record.funcName))


class Alerts:
    """The run's Slack alerts: inert without ``alerting:``; :meth:`sending` wraps the run."""

    def __init__(self, cfg: PipelineConfig, state: RunState) -> None:
        self.cfg = cfg
        self.settings: AlertingConfig | None = cfg.alerting
        self.state = state
        self.sender: SlackSender | None = None
        self.posted: set[str] = set()  # messages (worker names dropped) already queued in this run

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """Alert on the supervisor's log records during the run, and on its failure; flush at the end."""
        if self.settings is None:
            yield
            return
        settings = self.settings
        self.sender = SlackSender(settings.config.webhook_url)
        handler = AlertHandler(self, settings.min_level)
        root = logging.getLogger()
        root.addHandler(handler)
        log.info(
            "slack alerts to %s for %s and above",
            webhook_host(settings.config.webhook_url),
            logging.getLevelName(settings.min_level),
        )
        try:
            yield
        except Interrupted as exc:
            self._final(logging.WARNING, str(exc), exc)
            raise
        except BaseException as exc:
            self._final(logging.ERROR, self._failure_text(exc), exc)
            raise
        finally:
            root.removeHandler(handler)
            self.sender.close()

    def alert(self, alert: Alert) -> None:
        """Queue ``alert`` unless the same message was queued in this run already."""
        assert self.sender is not None
        key = WORKER_NAME.sub(r"\1", alert.message)
        if key in self.posted:
            return
        if len(self.posted) >= MAX_REMEMBERED:
            self.posted.clear()
        self.posted.add(key)
        self.sender.submit(slack_payload(self.cfg, alert))

    def _failure_text(self, exc: BaseException) -> str:
        return str(exc) if isinstance(exc, JobFailed) else f"{type(exc).__name__}: {exc}"

    def _final(self, level: int, message: str, exc: BaseException) -> None:
        """The run's outcome as an alert, at ``level``, unless its error was already posted."""
        assert self.settings is not None
        if level < self.settings.min_level:
            return
        failure = WORKER_NAME.sub(r"\1", self.state.failure[0]) if self.state.failure is not None else None
        if failure and any(failure in posted for posted in self.posted):
            return  # the worker's failure line carried this error already
        frames = traceback.extract_tb(exc.__traceback__)
        where = frames[-1] if frames else None
        self.alert(
            Alert(
                logging.getLevelName(level),
                message,
                where.filename if where else "",
                (where.lineno or 0) if where else 0,
                where.name if where else "",
            )
        )
