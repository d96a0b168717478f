"""The run's log file and logging: where a run (and a run that failed early) says what happened.

A log file per run, private to the user (it holds config values and errors); the console gets
warnings and one line per failure, the file everything at the chosen level. ``--log-format json``
makes every line of the file one JSON object (``engine/logformat.py``: the workers write the same
format into the same file), and with ``--quiet`` puts those lines on stderr too, for a log collector.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from bizon_fast.engine.logformat import CONSOLE_LOGGER, TEXT, LineHandler, formatter, from_worker_thread
from bizon_fast.errors import Interrupted, JobFailed, UserError

LOG_DIR_ENV = "BIZON_FAST_LOG_DIR"
#: the stream ``--log-format json --quiet`` copies the log's lines to
STDERR_FD = 2


def log_file_for(pipeline: str) -> str:
    """Create this run's log file, private to the user (0600 in a 0700 folder): it holds config values and errors.

    Created here, before any handler opens it, so its mode is ours; the workers append to it.
    """
    log_dir = Path(os.environ.get(LOG_DIR_ENV, ".bizon_fast/logs"))
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in pipeline)
    path = log_dir / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    return str(path)


def traceback_helps(exc: BaseException) -> bool:
    """Whether the log should hold ``exc``'s traceback, or its one line says it all.

    A user error (config, connection, missing table) is one line by design: the traceback would only
    show where the check was made. A failed job's cause was logged where it happened (a worker logs its
    traceback; the supervisor logs what it saw), and an interrupt is no error. Anything else (a step that
    failed, a bug) is logged with the traceback that shows where.
    """
    return not isinstance(exc, (UserError, JobFailed, Interrupted))


def record_failure(
    log_file: str | None,
    name: str,
    exc: BaseException,
    *,
    with_traceback: bool | None = None,
    log_format: str = TEXT,
    pipeline: str | None = None,
    to_stderr: bool = False,
) -> str | None:
    """Append ``exc`` to the run's log, creating one (named ``name``) if the run failed before it had one.

    A failed run must leave a log that says why: one that failed while loading its config or
    starting up used to leave none, or an empty one. Written directly rather than through logging,
    so no log level can drop it and the console stays at one line; in the run's format (``to_stderr``:
    also on stderr, as ``--log-format json --quiet`` puts every log line). ``with_traceback`` None
    decides by the error's kind (:func:`traceback_helps`). Returns the log, None if unwritable.
    """
    if with_traceback is None:
        with_traceback = traceback_helps(exc)
    what = "run interrupted" if isinstance(exc, Interrupted) else "run failed"
    record = logging.LogRecord(
        "bizon_fast.cli",
        logging.ERROR,
        __file__,
        0,
        "%s: %s: %s",
        (what, type(exc).__name__, exc),
        (type(exc), exc, exc.__traceback__) if with_traceback else None,
    )
    line = formatter(log_format, "supervisor", pipeline or name).format(record)
    if to_stderr:
        with contextlib.suppress(OSError):
            LineHandler(STDERR_FD, owned=False).write_line(line)
    try:
        log_file = log_file or log_file_for(name)
        handler = LineHandler.append_to(log_file)
        try:
            handler.write_line(line)
        finally:
            handler.close()
    except OSError:
        return None
    return log_file


def setup_logging(
    level: str, log_file: str | None, *, log_format: str = TEXT, pipeline: str = "", json_stderr: bool = False
) -> None:
    """The supervisor's logging: the run's file in ``log_format``, and the console.

    The console gets warnings as plain lines, without the workers' (thread workers log in this process;
    worker processes log to the file only), or, with ``json_stderr`` (``--log-format json --quiet``),
    exactly the file's lines and nothing else. The ``logger`` destination's records are printed too, bare,
    whichever process logs them (worker processes: ``engine/channel.py``), as bizon prints them.
    """
    level_no = getattr(logging, "DEBUG" if level == "TRACE" else level, logging.INFO)
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers.clear()
    root.setLevel(level_no)
    fmt = formatter(log_format, "supervisor", pipeline)
    if log_file:
        fh = LineHandler.append_to(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if json_stderr:
        err = LineHandler(STDERR_FD, owned=False)
        err.setFormatter(fmt)
        root.addHandler(err)
    else:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(max(level_no, logging.WARNING))
        console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        console.addFilter(lambda record: getattr(record, "console", True) and not from_worker_thread(record))
        root.addHandler(console)
    logging.captureWarnings(True)  # a library's warning is a log line too, not a stray one on stderr
    # the logger destination prints records: it is the point of that destination (json --quiet: as JSON, above)
    dest_logger = logging.getLogger(CONSOLE_LOGGER)
    dest_logger.handlers.clear()
    if level_no <= logging.INFO and not json_stderr:
        info = logging.StreamHandler(sys.stderr)
        info.setFormatter(logging.Formatter("%(message)s"))
        dest_logger.addHandler(info)
        dest_logger.propagate = True
