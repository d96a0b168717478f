"""The destination write every consumer (ring or broker) makes, with its retry policy.

Its own module so ``worker`` and ``broker_worker`` share it without importing each other.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa

from bizon_fast.errors import StepFailed, UserError

log = logging.getLogger("bizon_fast.worker")

WRITE_RETRIES = 3  # attempts after the first for a failing destination write


def write_with_retries(destination: Any, split_id: str, first: int, last: int, batches: list[pa.RecordBatch]) -> None:
    """A destination write, retried with backoff: a transient outage is not worth a restart.

    A UserError or StepFailed is final: retrying a lock wait that hit ``lock_timeout`` would multiply it.
    """
    for attempt in range(WRITE_RETRIES + 1):
        try:
            destination.write(split_id, first, last, batches)
            return
        except (UserError, StepFailed):
            raise
        except Exception as exc:
            if attempt == WRITE_RETRIES:
                raise
            delay = 0.5 * 2**attempt
            log.warning("write of %s seq %d-%d failed (%s); retrying in %.1fs", split_id, first, last, exc, delay)
            time.sleep(delay)
