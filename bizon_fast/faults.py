"""Named fault points: crash tests kill a process at an exact step instead of at a random moment.

A random SIGKILL mostly lands while a worker waits, so the paths that matter (a part half written, a
batch written but not yet reported, a publish half done) are rarely exercised by it. Product code marks
those steps with ``fault_point("consumer.after_write")``; a test sets

    BIZON_FAST_FAULT=<point>[@<n>]          kill the process the n-th time (default 1st) it reaches <point>
    BIZON_FAST_FAULT_MARK=<file>            ...only once per test: the first kill creates <file>, and no
                                            process kills itself again while it exists (a replacement or a
                                            rerun passes the point unharmed)

and the process logs ``fault point <point> reached (pass <n>): SIGKILL pid <pid>`` and SIGKILLs itself: the
same death as the OOM killer's, with no cleanup, no ``finally``, no flush. The check is one dict lookup
when no fault is set, so the points stay in the product code, where they prove the real path.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("bizon_fast.faults")

ENV_POINT = "BIZON_FAST_FAULT"
ENV_MARK = "BIZON_FAST_FAULT_MARK"


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, nth = spec.partition("@")
    return point.strip(), max(1, int(nth)) if nth.strip() else 1


_ARMED = _parse(os.environ.get(ENV_POINT, ""))
_passes: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process here when the test armed ``name`` (see the module docstring); else nothing."""
    if _ARMED is None or _ARMED[0] != name:
        return
    n = _passes[name] = _passes.get(name, 0) + 1
    if n != _ARMED[1]:
        return
    mark = os.environ.get(ENV_MARK)
    if mark:
        try:  # O_EXCL: of several processes reaching the point at once, exactly one dies
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return
    log.warning("fault point %s reached (pass %d): SIGKILL pid %d", name, n, os.getpid())
    for handler in logging.getLogger().handlers:  # the line must reach the log before the process is gone
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
