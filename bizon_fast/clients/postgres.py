"""PostgreSQL connections for the postgres source, destination and checkpoint backend.

One place decides how bizon's connection keys become a libpq conninfo, how a failure to connect
is worded (the config key and ``host:port/database``, never the password), which errors mean
"the connection is gone, reconnect and try again" and how long to keep trying. psycopg is imported
lazily so that configs validate without the ``postgres`` extra installed.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bizon_fast.errors import UserError

if TYPE_CHECKING:
    import psycopg
    import pyarrow as pa

log = logging.getLogger("bizon_fast.postgres")

T = TypeVar("T")

#: reconnect attempts after a lost connection, and the first pause between them (doubled each time)
RETRIES = 5
FIRST_PAUSE_S = 0.5
CONNECT_TIMEOUT_S = 10
#: SQLSTATEs that mean the session is gone or the server is restarting: reconnecting may help
_TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03", "53300")
#: libpq's words for a session that is gone, in the text of an error raised while a result streams (ADBC's
#: reader surfaces it through Arrow as a plain OSError "[libpq] ...", without a SQLSTATE): a FATAL ends the
#: session (an administrator's pg_terminate_backend, a shutdown), the others are a broken socket
_LOST_SESSION_TEXT = (
    "FATAL:",
    "server closed the connection",
    "no connection to the server",
    "could not receive data from server",
    "could not send data to server",
    "connection to server",
)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the extra is part of the test install
        raise UserError("postgres needs psycopg: pip install 'bizon-fast[postgres]'") from None
    return psycopg


def conninfo(
    *,
    dsn: str | None = None,
    host: str | None = None,
    port: int | None = None,
    database: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """A libpq conninfo from a ``dsn`` or bizon's keys. Keys given next to a dsn override it."""
    from psycopg.conninfo import make_conninfo

    extra = {"host": host, "port": port, "dbname": database, "user": username, "password": password}
    kwargs: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if dsn and "port" in kwargs and "host" not in kwargs:
        kwargs.pop("port")  # the model's default port must not override a dsn's own
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    return make_conninfo(dsn or "", **kwargs)


def where(info: str) -> str:
    """``host:port/database`` of a conninfo, for messages (no credentials)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(info)
    except Exception:  # noqa: BLE001 - only used to word a message
        return "the configured server"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


def connect(
    info: str, *, key: str, autocommit: bool = False, application_name: str = "bizon-fast"
) -> psycopg.Connection:
    """A connection, or a one-line UserError naming the config ``key`` and ``host:port/database``.

    ``application_name`` shows in ``pg_stat_activity``: the checkpoint backend puts its pid and host
    there, so that a run refused by a lock can name the process that holds it.
    """
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(info, autocommit=autocommit, application_name=application_name)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"{key}: cannot connect to PostgreSQL at {where(info)}: {reason}") from None
    return conn


class ArrowSession:
    """An autocommit ADBC PostgreSQL session whose statements come back as Arrow tables.

    Why ADBC next to psycopg: a statement without bind parameters comes back as a binary COPY that the
    driver decodes into Arrow arrays in C, with no Python object per value (the source's bulk reads).
    Why the driver manager's own objects rather than its DB-API module: that module imports polars and
    pandas when they are installed (~0.1 s in every worker that opens a session), and a table per
    statement is all this needs. The GIL is released while a statement runs and while its rows are read.
    """

    def __init__(self, database: Any, conn: Any) -> None:
        self.database = database
        self.conn = conn

    @classmethod
    def open(cls, info: str, *, key: str, application_name: str = "bizon-fast", database: Any = None) -> ArrowSession:
        """A new session (on ``database``, an ``AdbcDatabase`` from an earlier session, when given: opening one
        loads the server's type catalog, ~50 ms), or a one-line UserError like ``connect``'s."""
        from psycopg.conninfo import make_conninfo

        try:
            import adbc_driver_manager
            import adbc_driver_postgresql
        except ImportError:  # pragma: no cover - the extra is part of the test install
            raise UserError("postgres needs adbc-driver-postgresql: pip install 'bizon-fast[postgres]'") from None
        try:
            if database is None:
                database = adbc_driver_postgresql.connect(make_conninfo(info, application_name=application_name))
            conn = adbc_driver_manager.AdbcConnection(database)
            conn.set_autocommit(True)
        except adbc_driver_manager.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise UserError(f"{key}: cannot connect to PostgreSQL at {where(info)}: {reason}") from None
        return cls(database, conn)

    def table(self, sql: str) -> pa.Table:
        """The rows of one statement (no bind parameters: the driver reads them by binary COPY)."""
        import adbc_driver_manager
        import pyarrow as pa

        stmt = adbc_driver_manager.AdbcStatement(self.conn)
        try:
            stmt.set_sql_query(sql)
            handle, _ = stmt.execute_query()
            with pa.RecordBatchReader.from_stream(handle) as reader:
                return reader.read_all()
        finally:
            stmt.close()

    def execute(self, sql: str) -> None:
        """A statement without rows (``SET``, ``CREATE TEMP TABLE ... AS``)."""
        import adbc_driver_manager

        stmt = adbc_driver_manager.AdbcStatement(self.conn)
        try:
            stmt.set_sql_query(sql)
            stmt.execute_update()
        finally:
            stmt.close()

    def close(self, *, database: bool = True) -> None:
        """Close the session (and its database, unless ``database=False`` keeps it for the next session)."""
        self.conn.close()
        if database:
            self.database.close()


def is_transient(exc: BaseException, conn: Any = None) -> bool:
    """True when ``exc`` means the connection is lost (or the server restarting): reconnect and retry.

    Both clients' errors count: psycopg's ``OperationalError`` and ADBC's (which says ``IO`` and may lack
    a SQLSTATE when the socket is gone, as psycopg's does), and a session lost while ADBC's reader streams a
    result (Arrow raises it as an ``OSError`` holding libpq's text).
    """
    adbc = sys.modules.get("adbc_driver_manager")  # an ADBC error can only come from an imported ADBC
    if adbc is not None and isinstance(exc, adbc.OperationalError):
        state = getattr(exc, "sqlstate", None)
        return state is None or state.startswith(_TRANSIENT_STATES)
    if adbc is not None and type(exc) is OSError and str(exc).startswith("[libpq]"):  # lost mid-stream
        return any(text in str(exc) for text in _LOST_SESSION_TEXT)
    psycopg = _psycopg()
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if conn is not None and (conn.closed or conn.broken):
        return True
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(_TRANSIENT_STATES)


def with_retries(
    op: Callable[[], T], *, reconnect: Callable[[], None], what: str, retries: int = RETRIES, conn: Callable[[], Any]
) -> T:
    """Run ``op``; on a lost connection reconnect and run it again, pausing 0.5, 1, 2 ... s.

    ``op`` must be safe to repeat (its transaction either committed or left nothing). After
    ``retries`` reconnects the error is raised as a UserError that says what was being done.
    """
    pause = FIRST_PAUSE_S
    for attempt in range(retries + 1):
        try:
            return op()
        except Exception as exc:
            if not is_transient(exc, conn()):
                raise
            if attempt == retries:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                message = f"{what}: lost the PostgreSQL connection and {retries} reconnects failed: {reason}"
                raise UserError(message) from None
            log.warning("%s: connection lost (%s); reconnecting in %.1fs", what, exc, pause)
            time.sleep(pause)
            pause *= 2
            try:
                reconnect()
            except UserError as err:
                log.warning("%s: reconnect failed: %s", what, err)
    raise AssertionError("unreachable")


def split_name(name: str, default_schema: str) -> tuple[str, str]:
    """``schema.table`` or ``table`` (in ``default_schema``); double quotes keep dots and case."""
    parts: list[str] = []
    buf, quoted, i = "", False, 0
    while i < len(name):
        ch = name[i]
        if ch == '"':
            if quoted and name[i + 1 : i + 2] == '"':
                buf += '"'
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
        i += 1
    parts.append(buf)
    if len(parts) == 1 and parts[0]:
        return default_schema, parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise UserError(f"not a table name: {name!r} (expected table or schema.table)")


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_*lock`` from text parts."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def conninfo_of(details: Any) -> str:
    """The conninfo of a config block: its ``dsn`` (plus keys set next to it) or bizon's keys.

    One rule for the backend, the source and the destination, which all accept the same keys.
    """
    keys = ("host", "port", "database", "username", "password")
    if details.dsn:
        chosen = {k: getattr(details, k) for k in keys if k in details.model_fields_set}
        return conninfo(dsn=details.dsn, **chosen)
    return conninfo(**{k: getattr(details, k) for k in keys})
