"""Who holds the lock a Postgres destination's transaction waits for: reported while it waits, named when it fails.

``lock_timeout`` bounds every wait; these make the wait visible. A watcher thread with its own
connection asks ``pg_blocking_pids`` while a supervisor-side transaction runs, and after a timeout
the sessions holding locks on the destination's tables are listed, so the error names who to wait for.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

from bizon_fast.clients import postgres as pgconn

log = logging.getLogger("bizon_fast.destination.postgres")

LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a statement cancelled by lock_timeout
LOCK_NOTICE_S = 2.0  # a transaction waiting for a lock this long is reported, with who holds the lock
LOCK_REPEAT_S = 30.0  # ... and again every so often while it still waits

#: what our session ``%s`` waits for, and the sessions in its way
WAITING_SQL = """
SELECT coalesce(l.relation::regclass::text, l.locktype), b.pid, coalesce(b.application_name, ''),
       coalesce(host(b.client_addr), 'local'), coalesce(b.state, ''), coalesce(b.query, '')
FROM pg_locks l
CROSS JOIN LATERAL unnest(pg_blocking_pids(l.pid)) AS blocker(pid)
JOIN pg_stat_activity b ON b.pid = blocker.pid
WHERE l.pid = %s AND NOT l.granted
"""
#: sessions holding locks on the relations ``%s`` (in that order of interest), other than this one
HOLDERS_SQL = """
SELECT l.relation::regclass::text, a.pid, coalesce(a.application_name, ''),
       coalesce(host(a.client_addr), 'local'), coalesce(a.state, ''), coalesce(a.query, '')
FROM unnest(%s::text[]) WITH ORDINALITY AS r(name, i)
JOIN pg_locks l ON l.relation = to_regclass(r.name) AND l.granted AND l.pid <> pg_backend_pid()
JOIN pg_stat_activity a ON a.pid = l.pid
ORDER BY r.i, a.pid
"""


class Blocker(NamedTuple):
    """A session in the way of ours: what it locks and what it is doing."""

    relation: str
    pid: int
    application: str
    client: str
    state: str
    query: str

    def describe(self) -> str:
        query = " ".join(self.query.split())
        query = query if len(query) <= 120 else query[:117] + "..."
        app = f"application {self.application!r}" if self.application else "no application_name"
        return f"pid {self.pid} ({app}, client {self.client}, {self.state or 'state unknown'}, last query {query!r})"


class LockWatch:
    """While a transaction runs, reports a lock wait of our session, and remembers who was in the way.

    A thread with its own connection asks ``pg_blocking_pids`` after ``LOCK_NOTICE_S`` (then every
    ``LOCK_REPEAT_S``): a wait then shows in the log while it lasts, not only when it times out.
    """

    def __init__(self, info: str, key: str, pid: int, what: str, timeout: float) -> None:
        self.info = info
        self.key = key
        self.pid = pid
        self.what = what
        self.timeout = timeout
        self.blockers: list[Blocker] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bizon-fast-pg-lockwatch", daemon=True)

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(1.0)  # a check in flight finishes on its own (daemon); its result is not needed

    def _run(self) -> None:
        conn = None
        delay = min(LOCK_NOTICE_S, self.timeout / 2)
        try:
            while not self._done.wait(delay):
                delay = LOCK_REPEAT_S
                if conn is None:
                    conn = pgconn.connect(self.info, key=self.key, autocommit=True)
                rows = [Blocker(*row) for row in conn.execute(WAITING_SQL, (self.pid,)).fetchall()]
                if rows and not self._done.is_set():
                    self.blockers = rows
                    log.warning(
                        "postgres destination: %s waits for a lock on %s held by %s; giving up after %gs "
                        "(destination.config.lock_timeout)",
                        self.what,
                        rows[0].relation,
                        describe_blockers(rows),
                        self.timeout,
                    )
        except Exception as exc:  # noqa: BLE001 - only a report: the wait itself is bounded by lock_timeout
            log.debug("postgres destination: lock check failed: %s", exc)
        finally:
            if conn is not None:
                conn.close()


def _unique(blockers: list[Blocker]) -> list[Blocker]:
    """One entry per session (a session can hold several of the locks), at most three."""
    seen: dict[int, Blocker] = {}
    for b in blockers:
        seen.setdefault(b.pid, b)
    return list(seen.values())[:3]


def describe_blockers(blockers: list[Blocker]) -> str:
    """The sessions in the way, for a message: one entry per session, at most three."""
    return "; ".join(b.describe() for b in _unique(blockers))


def lock_holders(info: str, key: str, relations: list[str]) -> list[Blocker]:
    """Sessions holding locks on ``relations``, asked after a wait ended (best effort: [] when the query fails)."""
    try:
        with pgconn.connect(info, key=key, autocommit=True) as conn:
            return [Blocker(*row) for row in conn.execute(HOLDERS_SQL, (relations,)).fetchall()]
    except Exception as exc:  # noqa: BLE001 - the error is raised anyway, with or without its holder
        log.debug("postgres destination: could not list lock holders: %s", exc)
        return []
