"""How every process of a run writes its log lines: text, or one JSON object per line (``--log-format json``).

The supervisor (``cli/logs.py``) and each worker process (``engine/channel.py``) configure their own
logging but must write the same format into the same file, so both take their formatter and handler
from here. Workers append to the supervisor's file concurrently: every record is written with one
``os.write`` on an ``O_APPEND`` descriptor, so lines from different processes never interleave and
every line of a JSON log parses on its own (a buffered ``FileHandler`` may split a long record, such
as a traceback, into several writes).
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime

import msgspec

#: a thread worker's thread is named like its handle (``producer-0``, ``consumer-1``, ``spare-0``):
#: its records are labelled with that name, as a worker process's are
WORKER_THREAD = re.compile(r"(?:producer|consumer|spare)-\d+")

TEXT = "text"
JSON = "json"
FORMATS = (TEXT, JSON)

#: the logger whose records are printed on the console as well as logged, by every process of a run: the
#: ``logger`` destination's (bizon's debugging sink prints a line per record; that is the point of it)
CONSOLE_LOGGER = "bizon_fast.destination.logger"

_encode = msgspec.json.Encoder().encode


def process_of(record: logging.LogRecord, default: str) -> str:
    """The run process a record comes from: a thread worker's name, else ``default`` (this process)."""
    name = record.threadName or ""
    return name if WORKER_THREAD.fullmatch(name) else default


def from_worker_thread(record: logging.LogRecord) -> bool:
    """True for a thread worker's record: it belongs in the log file, as a worker process's does, not the console."""
    return bool(WORKER_THREAD.fullmatch(record.threadName or ""))


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO consumer-0 bizon_fast.worker: message``: the process between level and logger."""

    def __init__(self, process: str) -> None:
        super().__init__("%(asctime)s %(levelname)s %(bf_process)s %(name)s: %(message)s")
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        record.bf_process = process_of(record, self.process)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (ISO 8601, UTC), ``level``, ``process``, ``logger``, ``message``,
    ``pipeline``, and ``exc_info`` (the traceback text) when the record carries one.

    A log shipper indexes these keys without parsing free text. A worker logs its failure with
    ``exc_info`` (``engine/worker.py``), so a failure looks the same whichever process logged it.
    """

    def __init__(self, process: str, pipeline: str) -> None:
        super().__init__()
        self.process = process
        self.pipeline = pipeline

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        exc = ""
        if record.exc_info:
            exc = self.formatException(record.exc_info)
        elif record.exc_text:
            exc = record.exc_text
        if record.stack_info:
            exc = f"{exc}\n{self.formatStack(record.stack_info)}" if exc else self.formatStack(record.stack_info)
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": process_of(record, self.process),
            "logger": record.name,
            "message": message,
            "pipeline": self.pipeline,
        }
        if exc:
            doc["exc_info"] = exc.rstrip("\n")
        return json_line(doc)


def json_line(doc: dict[str, str]) -> str:
    """``doc`` as one line of JSON (newlines inside values are escaped, so a record is always one line)."""
    try:
        return _encode(doc).decode()
    except (msgspec.EncodeError, UnicodeError):  # a lone surrogate in a message: escape rather than drop the record
        return json.dumps(doc, ensure_ascii=True)


def formatter(log_format: str, process: str, pipeline: str) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``) for records of ``process``."""
    if log_format == JSON:
        return JsonFormatter(process, pipeline)
    if log_format == TEXT:
        return TextFormatter(process)
    raise ValueError(f"unknown log format {log_format!r}: expected one of {', '.join(FORMATS)}")


class LineHandler(logging.Handler):
    """Writes each record as one ``os.write`` to a descriptor: a file opened ``O_APPEND`` (shared by the
    run's processes) or stderr. A partial write (a pipe that is full, a signal) is finished, not dropped.
    """

    def __init__(self, fd: int, *, owned: bool) -> None:
        super().__init__()
        self.fd = fd
        self.owned = owned

    @classmethod
    def append_to(cls, path: str) -> LineHandler:
        """A handler appending to ``path``: created private to the user (0600) if it does not exist yet."""
        return cls(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600), owned=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never take the run down: the stdlib's report instead
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """``line`` and a newline in one write (finished if the kernel took part of it); OSError if it cannot."""
        data = (line + "\n").encode("utf-8", "backslashreplace")
        while data:
            data = data[os.write(self.fd, data) :]

    def close(self) -> None:
        self.acquire()
        try:
            if self.owned and self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
        finally:
            self.release()
        super().close()
