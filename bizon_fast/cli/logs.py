"""The run's log file and logging: where a run (and a run that failed early) says what happened.

A log file per run, private to the user (it holds config values and errors); the console gets
warnings and one line per failure, the file everything at the chosen level.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

LOG_DIR_ENV = "BIZON_FAST_LOG_DIR"


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


def record_failure(log_file: str | None, name: str, exc: BaseException, *, with_traceback: bool) -> str | None:
    """Append ``exc`` to the run's log, creating one (named ``name``) if the run failed before it had one.

    A failed run must leave a log that says why: one that failed while loading its config or
    starting up used to leave none, or an empty one. Written directly rather than through logging,
    so no log level can drop it and the console stays at one line. Returns the log, None if unwritable.
    """
    try:
        log_file = log_file or log_file_for(name)
        text = "".join(traceback.format_exception(exc)) if with_traceback else f"{type(exc).__name__}: {exc}\n"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} ERROR supervisor bizon_fast.cli: run failed: {text}")
    except OSError:
        return None
    return log_file


def setup_logging(level: str, log_file: str | None) -> None:
    level_no = getattr(logging, "DEBUG" if level == "TRACE" else level, logging.INFO)
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level_no)
    fmt = logging.Formatter("%(asctime)s %(levelname)s supervisor %(name)s: %(message)s")
    if log_file:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(max(level_no, logging.WARNING))
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    console.addFilter(lambda record: getattr(record, "console", True))
    root.addHandler(console)
    # the logger destination prints records: it is the point of that destination
    dest_logger = logging.getLogger("bizon_fast.destination.logger")
    if level_no <= logging.INFO:
        info = logging.StreamHandler(sys.stderr)
        info.setFormatter(logging.Formatter("%(message)s"))
        dest_logger.addHandler(info)
        dest_logger.propagate = True
