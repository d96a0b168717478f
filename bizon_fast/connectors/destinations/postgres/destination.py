"""The ``postgres`` destination: binary COPY into a staging table, effectively-once, published atomically.

``destination_id`` names the table (``schema.table`` allowed; else ``config.schema``). Rows go to a
staging table ``<table>__bizon_fast_stage_<job>`` (the table part is shortened with a hash, and
the job id cut to 16 characters, to fit PostgreSQL's 63-byte names) in the same schema:

- **full_refresh**: ``publish`` swaps the staging table in, in one transaction (drop the old table,
  rename the stage): readers see the old table or the new one, never a partial load.
- **incremental**: ``publish`` appends the staged rows (``INSERT ... SELECT``) and drops the stage,
  in one transaction, so a failed job adds nothing. A new target is created by the same swap.
- **merge** (``write_disposition: merge``): ``publish`` takes the stage's last version of each key
  (``DISTINCT ON (key) ... ORDER BY key, <cursor_field> DESC, split DESC, arrival DESC``; each row is staged
  with ``_bizon_fast_pos`` = seq << 32 | row), deletes the keys whose ``deleted_flag`` is true and
  upserts the others (``INSERT ... ON CONFLICT (key) DO UPDATE``), in one statement of the publish's
  transaction. The key is ``primary_key``, else the source's (the schema metadata
  ``bizon_fast.primary_key``, recorded as the stage's comment by the consumer that creates it); none
  fails the job before anything is published. A new target (or a full refresh / reset) is created from
  the merged rows with the key as its primary key; an existing one needs a primary key or unique index
  on the key. A rerun after a crash merges the same stage again, or sees the job published: exact.
- ``write_disposition`` ``replace`` / ``append`` force the swap / the append whatever the sync mode.

**Schema evolution** (appending or merging into an existing table, ``schema_evolution``; see
``evolution.py``): the consumer that creates the stage compares the rows' columns with the table's; new
columns and compatible widenings are staged with their own types and applied by ``publish`` (``ALTER
TABLE ... ADD COLUMN`` / ``ALTER COLUMN ... TYPE``, one INFO line each) in its transaction; an
incompatible change fails the job before anything is published, naming the column and both types.
``freeze`` keeps the table's columns and types: new columns are dropped, a widening fails the job (the
rows would not fit). A merge fails (nothing published) on a NULL in the key or a non-boolean ``deleted_flag``.

**Types and keys** (``columns.py``): a table the destination creates gets the source's exact column types where
the source tagged them (the Postgres source does: ``jsonb``, ``numeric(p,s)``, ``uuid``, arrays, ``interval``...),
NOT NULL for non-nullable fields, and a primary key (``primary_key``: ``auto``, the source's, for a full refresh
and a merge; ``none``; or a list of columns, also for a new append target), added to the stage before the swap so
the old table is locked only for the swap itself. Types the encoder does not write are staged as text and cast
when the table is created (``ALTER COLUMN ... TYPE`` before the swap, ``CAST`` in a merge's ``CREATE TABLE AS``).

Columns: a typed batch keeps its Arrow columns (types mapped by ``pgbinary.ddl_type``), a bizon
source-records batch becomes bizon's six envelope columns, and ``unnest`` with ``record_schemas``
writes the declared columns with their declared types (BigQuery names such as STRING, INTEGER,
TIMESTAMP are mapped; anything else is taken as a PostgreSQL type). An incremental run into an
existing table stages the columns with the table's own types (types the binary encoder cannot
write are staged as text and cast when publishing), so the target's schema decides.

**Exactly-once.** Each ``write(split, first_seq, last_seq)`` is one transaction that

1. inserts one row per seq of the range into ``bizon_fast_destination_cursors`` (key
   ``destination, job, split, seq``) with ``ON CONFLICT DO NOTHING``, all tagged with a fresh
   random ``write_id``. The unique key is the lock: a concurrent writer of the same seq waits
   for the other transaction and then sees its outcome, so no two writes ever own one seq;
2. if every seq was free, COPYs the rows into the stage with ``_bizon_fast_write = write_id``;
3. if every seq already belongs to a single earlier write of exactly this range, it is a replay
   of a durable write: nothing is done;
4. otherwise (a replay grouped differently, e.g. ``[5,9]`` written by a consumer that died before
   reporting, now replayed as ``[5,6]`` and ``[7,12]``), the earlier writes overlapping the range
   are removed whole -- their staged rows (by ``_bizon_fast_write``) and their seq rows -- and the
   range is written as in 2.

Why 4 is safe: within a run a seq always carries the same rows (a producer that dies is replaced
after its last published batch; a consumer's unreported batches are replayed from the ring), and
every seq of a removed write is replayed: it was never reported durable, or its seqs would not be
written again. Across runs the engine re-reads from the committed cursor, possibly cut into other
batches, so ``prepare(committed)`` first removes every write of this job past its split's
committed seq (and of splits the new plan does not have): the stage then holds exactly what the
checkpoint says. A write straddling a committed seq cannot exist (the checkpoint only advances
over whole reported writes) and is refused rather than guessed at. ``publish`` records
``(destination, job)`` in ``bizon_fast_destination_published`` in the transaction of the swap, so
a publish that is repeated (the supervisor died before marking the job succeeded) does nothing.

Why a row per seq rather than one ``last_seq`` per split: consumers finish out of order, so a
split's ``[10,12]`` may commit before its ``[5,9]``; a high-water mark would then skip ``[5,9]``.
There are few rows (one per ring slot, ~4 MiB of data each) and they are deleted at publish.

**Lock waits are bounded.** Every session of the destination runs with ``lock_timeout`` (the
``destination.config.lock_timeout`` key, 60 s by default): the swap's ``DROP TABLE`` behind a
reader's long query or an idle transaction's ``LOCK TABLE`` used to wait silently for ever (and
every new reader of the table queued behind it). A supervisor-side transaction (bookkeeping DDL,
``prepare``, ``publish``) still waiting after a couple of seconds logs a warning naming the session
that holds the lock (``pg_blocking_pids``); past the timeout the transaction is rolled back -- a
full refresh keeps the old table, nothing is published -- and the job fails with one line naming
the table and that session. The failure is not retried (a retry would wait the timeout again), so
the job ends within ``lock_timeout`` of the wait starting; rerunning once the lock is released
resumes the job and publishes it.

Stages of other jobs are left alone (another pipeline may be appending to the same table); a
warning names them. A full refresh replaces the table object: indexes, constraints, grants and
views of the old table are not carried over (a view depending on it makes the swap fail).
Dropping ``_bizon_fast_write`` at the swap is instant, but the 8 bytes per row it held stay in the
table until it is rewritten (VACUUM FULL, CLUSTER).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from bizon_fast.clients import postgres as pgconn
from bizon_fast.config.destination import DestinationDetails
from bizon_fast.connectors.destinations.postgres.columns import StageColumn, source_key, table_columns
from bizon_fast.connectors.destinations.postgres.config import CAPABILITIES, PostgresDestinationDetails
from bizon_fast.connectors.destinations.postgres.evolution import INCOMPATIBLE, WIDEN, decide, widens
from bizon_fast.connectors.destinations.postgres.locks import (
    LOCK_NOT_AVAILABLE,
    Blocker,
    LockWatch,
    describe_blockers,
    lock_holders,
)
from bizon_fast.connectors.destinations.postgres.pgbinary import (
    BPCHAR,
    SIGNATURE,
    TRAILER,
    VARCHAR,
    Encoder,
    PgColumn,
)
from bizon_fast.connectors.destinations.sourcetypes import pg_type
from bizon_fast.destination.base import Destination, DestinationContext
from bizon_fast.errors import StepFailed, UserError
from bizon_fast.faults import fault_point
from bizon_fast.source.records import is_source_records

log = logging.getLogger("bizon_fast.destination.postgres")

KEY = "destination.config"
WRITE_COLUMN = "_bizon_fast_write"
#: merge: a row's arrival within its split (seq << 32 | row), the tie-break after the cursor field
POS_COLUMN = "_bizon_fast_pos"
INTERNAL = (WRITE_COLUMN, POS_COLUMN)
NO_KEY = (
    "destination.config.primary_key: merge needs a key: set destination.config.primary_key (a list of columns), "
    "or read a source table that has a primary key"
)
#: a merge's one-line failures, the same for every destination
NULL_KEY = "destination.config.primary_key: {count} rows have a NULL in the merge key ({key}); nothing was published"
NOT_BOOLEAN = "destination.config.deleted_flag: column {flag!r} is {kind}, a boolean is needed; nothing was published"
CURSORS = "bizon_fast_destination_cursors"
PUBLISHED = "bizon_fast_destination_published"
COPY_CHUNK = 8 << 20
#: bizon's record_schema type names (BigQuery's) -> PostgreSQL; other names are used as they are
DECLARED_TYPES = {
    "STRING": "text",
    "INTEGER": "bigint",
    "INT64": "bigint",
    "INT": "bigint",
    "FLOAT": "double precision",
    "FLOAT64": "double precision",
    "NUMERIC": "numeric(38,9)",
    "BIGNUMERIC": "double precision",
    "BOOLEAN": "boolean",
    "BOOL": "boolean",
    "TIMESTAMP": "timestamp with time zone",
    "DATETIME": "timestamp without time zone",
    "DATE": "date",
    "TIME": "time without time zone",
    "JSON": "jsonb",
    "RECORD": "jsonb",
    "BYTES": "bytea",
    "GEOGRAPHY": "text",
}
_DDL = """
CREATE TABLE IF NOT EXISTS {s}.bizon_fast_destination_cursors (
    destination TEXT NOT NULL,
    job_id TEXT NOT NULL,
    split_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    write_id BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    written_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, job_id, split_id, seq)
);
CREATE TABLE IF NOT EXISTS {s}.bizon_fast_destination_published (
    destination TEXT NOT NULL,
    job_id TEXT NOT NULL,
    sync_mode TEXT NOT NULL,
    published_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, job_id)
);
"""

_CATALOG_COLUMNS = """
SELECT a.attname, coalesce(nullif(t.typbasetype, 0), a.atttypid),
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""


def stage_name(table: str, job_id: str) -> str:
    """``<table>__bizon_fast_stage_<job16>``, the table part hashed down so the whole fits 63 bytes."""
    suffix = f"__bizon_fast_stage_{job_id[:16]}"
    room = 63 - len(suffix.encode())
    if len(table.encode()) > room:
        digest = hashlib.blake2b(table.encode(), digest_size=4).hexdigest()
        table = table.encode()[: room - 9].decode(errors="ignore") + "_" + digest
    return table + suffix


def _ident(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def _literal(cur: Any, value: str) -> str:
    """A value as an SQL literal (statements built around utility commands take no parameters)."""
    from psycopg import sql

    return sql.Literal(value).as_string(cur)


class PostgresDestination(Destination):
    name = "postgres"
    config_class = PostgresDestinationDetails
    capabilities = CAPABILITIES

    def __init__(self, config: DestinationDetails, context: DestinationContext) -> None:
        if not isinstance(config, PostgresDestinationDetails):
            config = PostgresDestinationDetails.model_validate(config.model_dump(by_alias=True, exclude_unset=True))
        super().__init__(config, context)
        self.config: PostgresDestinationDetails = config
        self.info = pgconn.conninfo_of(config)
        if not config.destination_id:
            raise UserError("destination.config.destination_id: the postgres destination needs the table name")
        self.schema, self.table = pgconn.split_name(config.destination_id, config.schema_name)
        self.target = _ident(self.schema, self.table)
        self.stage_table = stage_name(self.table, context.job_id)
        self.stage = _ident(self.schema, self.stage_table)
        self.destination = f"{self.schema}.{self.table}"
        self.declared = None
        if config.unnest:
            from bizon_fast.connectors.destinations.envelope import record_columns  # polars: only when needed

            self.declared = record_columns(config.record_schemas, config.destination_id)
        self.conn: Any = None
        self.encoder: Encoder | None = None
        self.stage_columns: list[str] | None = None
        full = context.sync_mode == "full_refresh"
        #: append | replace | merge; unset: replace for a full refresh (or a reset), append otherwise
        self.disposition = config.write_disposition or ("replace" if full else "append")
        self.merging = self.disposition == "merge"
        #: the job's rows become the table (a merge of a full refresh too: the table holds the merged rows)
        self.replacing = self.disposition == "replace" or (self.merging and full)
        self.policy = config.schema_evolution

    # ------------------------------------------------------------ connection

    def _connection(self) -> Any:
        if self.conn is None or self.conn.closed or self.conn.broken:
            if self.conn is not None:
                self.conn.close()
            self.conn = pgconn.connect(self.info, key=KEY)
            # every statement of the session: a lock wait ends with an error instead of lasting for ever
            timeout_ms = max(1, round(self.config.lock_timeout * 1000))
            self.conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{timeout_ms}ms",))
            self.conn.commit()
        return self.conn

    def _tx(self, fn: Any, what: str, *, watch: bool = False) -> Any:
        """``fn(cursor)`` in one transaction, retried on a new connection when the old one is lost.

        ``watch``: report a lock wait while it lasts (supervisor-side transactions; a consumer's writes
        are many and short, and their rare lock wait is still bounded and named when it times out).
        """
        watcher: LockWatch | None = None

        def attempt() -> Any:
            nonlocal watcher
            conn = self._connection()
            if watch:
                watcher = LockWatch(self.info, KEY, conn.info.backend_pid, what, self.config.lock_timeout)
            with watcher or contextlib.nullcontext(), conn.transaction(), conn.cursor() as cur:
                return fn(cur)

        def reconnect() -> None:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            self._connection()

        where = f"destination ({pgconn.where(self.info)} {self.destination}): {what}"
        try:
            return pgconn.with_retries(attempt, reconnect=reconnect, what=where, conn=lambda: self.conn)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            raise self._lock_failure(what, watcher.blockers if watcher is not None else []) from None

    def _lock_failure(self, what: str, seen: list[Blocker]) -> StepFailed:
        """The one-line error of a lock wait that hit lock_timeout: the table, and the session holding it."""
        blockers = seen or self._holders()
        relation = blockers[0].relation if blockers else self.destination
        who = describe_blockers(blockers) if blockers else "a session that has let go since"
        published = "nothing was published" if what == "publishing" else "nothing of it is visible"
        return StepFailed(
            f"destination {self.destination}: {what}: gave up waiting for a lock on {relation} after "
            f"{self.config.lock_timeout:g}s (destination.config.lock_timeout); it is held by {who}. "
            f"The transaction was rolled back ({published}); run the same command once the lock is released"
        )

    def _holders(self) -> list[Blocker]:
        """Sessions holding locks on the tables we touch, asked after the wait ended (best effort)."""
        relations = [self.target, self.stage, _ident(self.schema, CURSORS), _ident(self.schema, PUBLISHED)]
        return lock_holders(self.info, KEY, relations)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _ddl(self, cur: Any) -> None:
        """The schema and the bookkeeping tables, created only when missing (creating needs privileges)."""
        tables = [_ident(self.schema, CURSORS), _ident(self.schema, PUBLISHED)]
        if all(self._exists(cur, t) for t in tables):
            return
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (pgconn.lock_key("bizon_fast_destination_ddl", self.schema),))
        if not cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone():
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(self.schema)}")
        cur.execute(_DDL.replace("{s}", _ident(self.schema)))

    def _exists(self, cur: Any, relation: str) -> bool:
        return cur.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()[0]

    def _published(self, cur: Any) -> bool:
        return bool(
            cur.execute(
                f"SELECT 1 FROM {_ident(self.schema, PUBLISHED)} WHERE destination=%s AND job_id=%s",
                (self.destination, self.context.job_id),
            ).fetchone()
        )

    # ------------------------------------------------------------ supervisor

    def check_connection(self) -> None:
        self._tx(self._ddl, "creating the destination's bookkeeping tables", watch=True)

    def check(self) -> str:
        """Read the catalog only (no DDL): the schema exists or may be created, tables may be created in it
        (the stage), and an existing target may be replaced (full refresh: its owner) or appended to."""
        where = pgconn.where(self.info)
        with pgconn.connect(self.info, key=KEY, autocommit=True) as conn:
            user, may_create_schema = conn.execute(
                "SELECT current_user, has_database_privilege(current_database(), 'CREATE')"
            ).fetchone()
            row = conn.execute(
                "SELECT has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchone()
            if row is None:
                if not may_create_schema:
                    raise UserError(f"{where}: schema {self.schema!r} does not exist and {user} may not create it")
                return f"{where} table {self.destination} (new; schema {self.schema!r} to be created)"
            if not row[0]:
                raise UserError(f"{where}: {user} may not create tables in schema {self.schema!r} (the stage)")
            target = conn.execute(
                "SELECT c.relkind, pg_has_role(c.relowner, 'USAGE'), has_table_privilege(c.oid, 'INSERT'),"
                " array(SELECT attname::text FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0"
                " AND NOT attisdropped) FROM pg_class c WHERE c.oid = to_regclass(%s)",
                (self.target,),
            ).fetchone()
            key = self.config.primary_key if isinstance(self.config.primary_key, list) else []
            keyed = not (target and key and self.merging and not self.replacing) or self._unique_on(conn, key)
        if target is None:
            return f"{where} table {self.destination} (new)"
        kind, owner, may_insert, columns = target
        if kind not in ("r", "p"):
            raise UserError(f"{where}: {self.destination} exists and is not a table (relkind {kind!r})")
        if self.replacing and not owner:
            raise UserError(f"{where}: a full refresh replaces {self.destination}, which {user} does not own")
        if not self.replacing:
            if not may_insert:
                raise UserError(f"{where}: {user} may not insert into {self.destination}")
            missing = [name for name, _ in self.declared or [] if name not in columns]
            if missing:
                raise UserError(f"{where}: {self.destination} has no column {', '.join(missing)} (record_schemas)")
            if not keyed:
                raise UserError(
                    f"{where}: merge needs a primary key or unique index on ({', '.join(key)}) of {self.destination}"
                )
        return f"{where} table {self.destination} (exists, {len(columns)} columns)"

    def prepare(self, committed: dict[str, int]) -> None:
        """Remove this job's writes past each split's committed seq (and of splits no longer planned)."""

        def fn(cur: Any) -> None:
            self._ddl(cur)
            if self._published(cur):
                log.info("postgres destination: job %s was already published to %s", self.context.job_id, self.target)
                return
            rows = cur.execute(
                f"SELECT write_id, split_id, min(first_seq), max(last_seq) FROM {_ident(self.schema, CURSORS)}"
                " WHERE destination=%s AND job_id=%s GROUP BY write_id, split_id",
                (self.destination, self.context.job_id),
            ).fetchall()
            stale = []
            for write_id, split_id, first, last in rows:
                seq = committed.get(split_id)
                if seq is not None and last <= seq:
                    continue
                if seq is not None and first <= seq:
                    raise RuntimeError(
                        f"destination {self.destination}: write {first}-{last} of split {split_id} straddles the "
                        f"committed seq {seq}; the checkpoint and the destination disagree"
                    )
                stale.append(write_id)
            if stale:
                job = self.context.job_id
                log.info("postgres destination: removing %d uncommitted writes of job %s", len(stale), job)
                if self._exists(cur, self.stage):
                    cur.execute(f"DELETE FROM {self.stage} WHERE {WRITE_COLUMN} = ANY(%s)", (stale,))
                cur.execute(
                    f"DELETE FROM {_ident(self.schema, CURSORS)} WHERE destination=%s AND job_id=%s"
                    " AND write_id = ANY(%s)",
                    (self.destination, self.context.job_id, stale),
                )
            if self.declared is not None and not self._exists(cur, self.stage):
                self._create_stage(cur, [StageColumn(n, self._declared_type(t)) for n, t in self.declared])
            others = cur.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname LIKE %s AND c.relname <> %s",
                (self.schema, self.stage_table[: -len(self.context.job_id[:16])] + "%", self.stage_table),
            ).fetchall()
            if others:
                names = ", ".join(r[0] for r in others)
                log.warning("postgres destination: staging tables of other jobs are left in place: %s", names)

        self._tx(fn, "preparing the stage", watch=True)

    def publish(self) -> None:
        full = self.replacing
        timeout = self.config.lock_timeout

        def fn(cur: Any) -> None:
            self.schema_changes = []  # a retried transaction starts over
            self._ddl(cur)
            done = cur.execute(
                f"INSERT INTO {_ident(self.schema, PUBLISHED)} (destination, job_id, sync_mode) VALUES (%s,%s,%s)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (self.destination, self.context.job_id, self.context.sync_mode),
            ).fetchone()
            if not done:
                log.info("postgres destination: job %s was already published", self.context.job_id)
                return
            if not self._exists(cur, self.stage):
                if full and self._exists(cur, self.target):
                    cur.execute(f"TRUNCATE {self.target}")  # an empty source: the table is replaced by nothing
                log.info("postgres destination: job %s staged no rows for %s", self.context.job_id, self.target)
            elif self.merging:
                self._merge(cur, replace=full or not self._exists(cur, self.target))
            elif full or not self._exists(cur, self.target):
                # the table's final shape (types cast, the key's index built) before the old table is locked
                note = self._note(cur)
                alters = [f"DROP COLUMN {WRITE_COLUMN}"]
                alters += [f"ALTER COLUMN {_ident(n)} TYPE {t} USING {_ident(n)}::{t}" for n, t in self._casts(note)]
                cur.execute(f"ALTER TABLE {self.stage} {', '.join(alters)}")
                # auto: the source's key where the table holds one row per key (a full refresh); an append's table
                # gets later versions of the same keys, so only an explicit primary_key is created for it
                key = self._stage_key(cur) if full or isinstance(self.config.primary_key, list) else None
                if key:
                    self._add_key(cur, self.stage, key)
                log.info("postgres destination: swapping in %s (waits up to %gs for its lock)", self.target, timeout)
                cur.execute(f"DROP TABLE IF EXISTS {self.target}")
                cur.execute(f"ALTER TABLE {self.stage} RENAME TO {_ident(self.table)}")
                if key:
                    self._name_key(cur)
            else:
                target_types = self._evolve(cur)
                staged = [name for name, *_ in self._catalog(cur, self.stage) if name not in INTERNAL]
                names = ", ".join(_ident(n) for n in staged)
                casts = ", ".join(f"CAST({_ident(n)} AS {target_types[n]})" for n in staged)
                log.info("postgres destination: appending to %s (waits up to %gs for its lock)", self.target, timeout)
                cur.execute(f"INSERT INTO {self.target} ({names}) SELECT {casts} FROM {self.stage}")
                cur.execute(f"DROP TABLE {self.stage}")
            cur.execute(
                f"DELETE FROM {_ident(self.schema, CURSORS)} WHERE destination=%s AND job_id=%s",
                (self.destination, self.context.job_id),
            )
            log.info("postgres destination: published %s (%s)", self.target, self.disposition)
            fault_point("postgres.publish")  # swapped, appended or merged, the transaction not committed

        self._tx(fn, "publishing", watch=True)

    # ------------------------------------------------------------ merge and schema evolution

    def _fail(self, message: str) -> UserError:
        return UserError(f"destination {self.destination}: {message}; nothing was published")

    @staticmethod
    def _casts(note: dict[str, Any]) -> list[tuple[str, str]]:
        """(column, type) of the stage's text columns that the table holds as another type (``columns.py``)."""
        return list((note.get("casts") or {}).items())

    def _add_key(self, cur: Any, relation: str, key: list[str], alters: tuple[str, ...] = ()) -> None:
        """``ALTER TABLE relation [alters,] ADD PRIMARY KEY (key)``; duplicate or NULL keys fail the job in one line."""
        present = {name for name, *_ in self._catalog(cur, relation)}
        missing = [k for k in key if k not in present]
        if missing:
            raise self._fail(f"primary_key: {', '.join(missing)} not in the table's columns")
        columns = ", ".join(_ident(k) for k in key)
        try:
            cur.execute(f"ALTER TABLE {relation} {''.join(a + ', ' for a in alters)}ADD PRIMARY KEY ({columns})")
        except Exception as exc:
            if getattr(exc, "sqlstate", None) not in ("23505", "23502"):  # unique_violation, not_null_violation
                raise
            detail = " ".join(str(exc).split())
            raise self._fail(
                f"primary key ({', '.join(key)}) cannot be created: {detail} (destination.config.primary_key: none "
                "loads the rows without it)"
            ) from None

    def _name_key(self, cur: Any) -> None:
        """The swapped-in table's primary key named as PostgreSQL names a table's own (``<table>_pkey``)."""
        name = self.table.encode()[:58].decode(errors="ignore") + "_pkey"
        row = cur.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'", (self.target,)
        ).fetchone()
        if row and row[0] != name and not self._exists(cur, _ident(self.schema, name)):
            cur.execute(f"ALTER TABLE {self.target} RENAME CONSTRAINT {_ident(row[0])} TO {_ident(name)}")

    def _merge(self, cur: Any, *, replace: bool) -> None:
        """Upsert the stage's last version of each key into the target; a deleted_flag row removes its key.

        ``replace``: the target is new (or a full refresh replaces it): it is created from the merged rows,
        with the key as its primary key. Otherwise the target must have a unique index on the key.
        """
        stage_types = {name: sqltype for name, _, _, sqltype in self._catalog(cur, self.stage)}
        columns = [name for name in stage_types if name not in INTERNAL]
        key = self._stage_key(cur)
        if not key:
            raise UserError(NO_KEY)
        missing = [k for k in key if k not in stage_types]
        if missing:
            raise self._fail(f"merge key column(s) {', '.join(missing)} are not in the rows (primary_key {key})")
        flag = self.config.deleted_flag
        if flag is not None and flag not in stage_types:
            raise UserError(
                f"destination.config.deleted_flag: {flag!r} is not a column of the rows ({self.destination})"
            )
        if flag is not None and stage_types[flag] != "boolean":
            raise UserError(NOT_BOOLEAN.format(flag=flag, kind=stage_types[flag]))
        nulls = " OR ".join(f"{_ident(k)} IS NULL" for k in key)
        bad = cur.execute(f"SELECT count(*) FROM {self.stage} WHERE {nulls}").fetchone()[0]
        if bad:
            raise UserError(NULL_KEY.format(count=bad, key=", ".join(key)))
        cursor = self.context.cursor_field if self.context.cursor_field in stage_types else None
        keys = ", ".join(f"s.{_ident(k)}" for k in key)
        order = [f"s.{_ident(k)}" for k in key]
        if cursor is not None:
            order.append(f"s.{_ident(cursor)} DESC NULLS LAST")
        order += ["w.split_id DESC", f"s.{POS_COLUMN} DESC"]
        destination, job = _literal(cur, self.destination), _literal(cur, self.context.job_id)
        writes = (
            f"(SELECT DISTINCT write_id, split_id FROM {_ident(self.schema, CURSORS)}"
            f" WHERE destination = {destination} AND job_id = {job}) w"
        )
        latest = (
            f"SELECT DISTINCT ON ({keys}) {', '.join(f's.{_ident(c)}' for c in columns)} FROM {self.stage} s"
            f" JOIN {writes} ON w.write_id = s.{WRITE_COLUMN} ORDER BY {', '.join(order)}"
        )
        deleted = "FALSE" if flag is None else f"l.{_ident(flag)} IS TRUE"
        names = ", ".join(_ident(c) for c in columns)
        if replace:
            log.info("postgres destination: creating %s from the merged rows of the stage", self.target)
            casts = dict(self._casts(self._note(cur)))
            exprs = ", ".join(
                f"CAST(l.{_ident(c)} AS {casts[c]}) AS {_ident(c)}" if c in casts else f"l.{_ident(c)}" for c in columns
            )
            not_null = cur.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND attnotnull",
                (self.stage,),
            ).fetchall()
            alters = tuple(f"ALTER COLUMN {_ident(n)} SET NOT NULL" for (n,) in not_null if n in columns)
            cur.execute(f"DROP TABLE IF EXISTS {self.target}")
            cur.execute(f"CREATE TABLE {self.target} AS SELECT {exprs} FROM ({latest}) l WHERE NOT ({deleted})")
            self._add_key(cur, self.target, key, alters)
            cur.execute(f"DROP TABLE {self.stage}")
            return
        target_types = self._evolve(cur)
        if not self._unique_on(cur, key):
            raise self._fail(
                f"merge needs a primary key or unique index on ({', '.join(key)}); add one "
                f"(ALTER TABLE {self.destination} ADD PRIMARY KEY ({', '.join(key)}))"
            )
        casts = ", ".join(f"CAST(l.{_ident(c)} AS {target_types[c]})" for c in columns)
        match = " AND ".join(f"t.{_ident(k)} = CAST(l.{_ident(k)} AS {target_types[k]})" for k in key)
        others = [c for c in columns if c not in key]
        update = (
            "DO UPDATE SET " + ", ".join(f"{_ident(c)} = EXCLUDED.{_ident(c)}" for c in others)
            if others
            else "DO NOTHING"
        )
        log.info("postgres destination: merging into %s by (%s)", self.target, ", ".join(key))
        cur.execute(
            f"WITH l AS MATERIALIZED ({latest}),"
            f" gone AS (DELETE FROM {self.target} t USING l WHERE ({deleted}) AND {match})"
            f" INSERT INTO {self.target} ({names}) SELECT {casts} FROM l WHERE NOT ({deleted})"
            f" ON CONFLICT ({', '.join(_ident(k) for k in key)}) {update}"
        )
        cur.execute(f"DROP TABLE {self.stage}")

    def _stage_key(self, cur: Any) -> list[str] | None:
        """The key: ``primary_key``'s columns if configured, else the source's as the stage's comment recorded it;
        none for ``primary_key: none``."""
        setting = self.config.primary_key
        if isinstance(setting, list):
            return list(setting)
        return self._note(cur).get("primary_key") if setting == "auto" else None

    def _unique_on(self, cur: Any, key: list[str]) -> bool:
        """Whether the target has a primary key or a (non-partial, column-only) unique index on exactly ``key``."""
        rows = cur.execute(
            "SELECT array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) k(n)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n)"
            " FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL"
            " AND i.indexprs IS NULL AND i.indnkeyatts = i.indnatts",
            (self.target,),
        ).fetchall()
        return any(sorted(r[0]) == sorted(key) for r in rows)

    def _evolve(self, cur: Any) -> dict[str, str]:
        """Columns new in the stage are added to the target, widened ones altered (one INFO line each), as the
        policy allows; returns the target's column types after that."""
        target = {name: (oid, typmod, sqltype) for name, oid, typmod, sqltype in self._catalog(cur, self.target)}
        casts = dict(self._casts(self._note(cur)))
        for name, oid, typmod, sqltype in self._catalog(cur, self.stage):
            if name in INTERNAL:
                continue
            sqltype = casts.get(name, sqltype)
            if name not in target:
                if self.policy != "evolve":
                    raise self._fail(f"column {name!r} ({sqltype}) is new (schema_evolution: {self.policy})")
                cur.execute(f"ALTER TABLE {self.target} ADD COLUMN {_ident(name)} {sqltype}")
                log.info(
                    "postgres destination: %s: added column %s %s (old rows NULL)", self.destination, name, sqltype
                )
                self.schema_changes.append(f"column {name} added ({sqltype}; existing rows null)")
                target[name] = (oid, typmod, sqltype)
                continue
            old_oid, old_typmod, old_type = target[name]
            wider = None
            if widens((old_oid, old_typmod), (oid, typmod)):
                wider = sqltype
            elif old_oid in (VARCHAR, BPCHAR) and old_typmod >= 4:
                limit = old_typmod - 4
                longest = cur.execute(f"SELECT max(char_length({_ident(name)})) FROM {self.stage}").fetchone()[0]
                if longest is not None and longest > limit:
                    if old_oid == BPCHAR or self.policy != "evolve":
                        raise self._fail(
                            f"column {name!r} is {old_type} in the table; the rows hold values of {longest} "
                            f"characters (schema_evolution: {self.policy})"
                        )
                    wider = "text"
            if wider is None:
                continue
            if self.policy != "evolve":
                raise self._fail(
                    f"column {name!r} changed type: {old_type} -> {wider} (schema_evolution: {self.policy})"
                )
            cur.execute(f"ALTER TABLE {self.target} ALTER COLUMN {_ident(name)} TYPE {wider}")
            log.info(
                "postgres destination: %s: widened column %s from %s to %s", self.destination, name, old_type, wider
            )
            self.schema_changes.append(f"column {name} widened from {old_type} to {wider}")
            target[name] = (oid, typmod, wider)
        return {name: sqltype for name, (_, _, sqltype) in target.items()}

    # ------------------------------------------------------------ stage

    def _catalog(self, cur: Any, relation: str) -> list[tuple[str, int, int, str]]:
        return cur.execute(_CATALOG_COLUMNS, (relation,)).fetchall()

    @staticmethod
    def _declared_type(kind: str) -> str:
        return DECLARED_TYPES.get(kind.upper(), kind) if kind else "text"

    def _create_stage(self, cur: Any, columns: list[StageColumn]) -> None:
        """The stage; the types its text columns become (``casts``) are kept in its comment, for ``publish``."""
        columns = [c for c in columns if c.name not in INTERNAL]
        if self.merging:
            columns.append(StageColumn(POS_COLUMN, "bigint"))
        defs = ", ".join(c.ddl(_ident(c.name)) for c in columns)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {self.stage} ({defs}, {WRITE_COLUMN} bigint NOT NULL)")
        casts = {c.name: c.cast for c in columns if c.cast}
        if casts:
            self._set_note(cur, {**self._note(cur), "casts": casts})

    def _note(self, cur: Any) -> dict[str, Any]:
        """The stage's comment: ``primary_key`` (the key of the table created, a merge's key) and ``casts``."""
        comment = cur.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (self.stage,)).fetchone()[0]
        return json.loads(comment) if comment else {}

    def _set_note(self, cur: Any, note: dict[str, Any]) -> None:
        cur.execute(f"COMMENT ON TABLE {self.stage} IS {_literal(cur, json.dumps(note))}")

    def _stage_types(self, cur: Any, schema: pa.Schema) -> list[StageColumn]:
        """Stage columns for a batch schema: the target's types when appending to it, else the source's exact
        types (``columns.py``: the Postgres source's tags, NOT NULL), else from Arrow.

        Into an existing table the schema_evolution policy decides what a new or a widened column does,
        and an incompatible change fails here, before anything is published (see ``evolution.py``).
        """
        if self.declared is not None:
            return [StageColumn(n, self._declared_type(t)) for n, t in self.declared]
        exact = table_columns(cur, [f for f in schema if f.name not in INTERNAL], self.destination)
        if self.replacing or not self._exists(cur, self.target):
            return exact
        existing = {name: (oid, typmod, sqltype) for name, oid, typmod, sqltype in self._catalog(cur, self.target)}
        types = []
        for column in exact:
            name, mapped_type = column.name, column.cast or column.type
            if name not in existing:
                if self.policy == "fail":
                    raise self._fail(f"column {name!r} ({mapped_type}) is new (schema_evolution: fail)")
                if self.policy == "freeze":
                    log.info(
                        "postgres destination: %s: new column %s dropped (schema_evolution: freeze)",
                        self.destination,
                        name,
                    )
                    continue
                types.append(StageColumn(name, column.type, cast=column.cast))  # NOT NULL: not added to a table
                continue
            oid, typmod, sqltype = existing[name]
            if pg_type(schema.field(name)) == sqltype and column.cast is None:
                types.append(StageColumn(name, sqltype))  # the same type at the source: nothing to decide
                continue
            elem = self._element(cur, oid)
            kind = schema.field(name).type
            decision = decide(oid, typmod, sqltype, elem, kind)
            if decision.verdict == INCOMPATIBLE:
                raise self._fail(
                    f"column {name!r} changed type incompatibly: the table has {sqltype}, the rows have {kind} "
                    f"({mapped_type})"
                )
            stage_type = decision.stage_type
            if decision.verdict == WIDEN and self.policy != "evolve":
                # freeze keeps the table's types: rows that need a wider one would not fit
                raise self._fail(
                    f"column {name!r} changed type: {sqltype} -> {stage_type} (a widening; "
                    f"schema_evolution: {self.policy})"
                )
            if stage_type == sqltype and not PgColumn(name, oid, typmod, elem).supported:
                stage_type = "text"  # the binary encoder does not write it: staged as text, cast at publish
            types.append(StageColumn(name, stage_type))
        return types

    def _element(self, cur: Any, oid: int) -> int:
        row = cur.execute("SELECT typelem, typcategory FROM pg_type WHERE oid=%s", (oid,)).fetchone()
        return row[0] if row and row[1] == "A" else 0

    def _ensure_stage(self, schema: pa.Schema, key: list[str] | None) -> None:
        """Create the stage from the first batch (under a lock: consumers race), then learn its columns.

        The key (``primary_key``, else the source's) is recorded in the stage's comment, for ``publish``.
        """
        if self.encoder is not None:
            return

        def fn(cur: Any) -> list[PgColumn]:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (pgconn.lock_key("bizon_fast_stage", self.stage),))
            if not self._exists(cur, self.stage):
                self._create_stage(cur, self._stage_types(cur, schema))
            note = self._note(cur)
            if note.get("primary_key") is None and key:
                self._set_note(cur, {**note, "primary_key": key})
            columns = []
            for name, oid, typmod, _ in self._catalog(cur, self.stage):
                if name != WRITE_COLUMN:
                    columns.append(PgColumn(name, oid, typmod, self._element(cur, oid)))
            return columns

        columns = self._tx(fn, "creating the stage")
        self.stage_columns = [c.name for c in columns]
        self.encoder = Encoder(columns)

    def _table_key(self, batches: list[pa.RecordBatch]) -> list[str] | None:
        """The key for these rows (the primary key of a table created, a merge's key): ``primary_key``'s columns,
        the source's (schema metadata) for ``auto``, none for ``none``; checked against the rows' columns. A merge
        fails the job (nothing published) when there is none."""
        if not batches:
            return None
        setting = self.config.primary_key
        explicit = isinstance(setting, list)
        key = list(setting) if explicit else source_key(batches[0].schema) if setting == "auto" else None
        if self.merging and not key:
            raise UserError(NO_KEY)
        if key and self.declared is None and not is_source_records(batches[0].schema):
            names = batches[0].schema.names
            missing = [k for k in key if k not in names]
            if missing and (explicit or self.merging):
                raise UserError(f"destination.config.primary_key: {', '.join(missing)} not in the rows' columns")
            if missing:  # a transform dropped a column of the source's key
                log.info("postgres destination: %s: no primary key (%s not in the rows)", self.destination, missing)
                return None
            flag = self.config.deleted_flag if self.merging else None
            if flag is not None and flag not in names:
                raise UserError(f"destination.config.deleted_flag: {flag!r} is not a column of the rows")
            if flag is not None:
                kind = batches[0].schema.field(flag).type
                if not pa.types.is_boolean(kind) and not pa.types.is_null(kind):
                    raise UserError(NOT_BOOLEAN.format(flag=flag, kind=kind))
        return key

    # ------------------------------------------------------------ consumer

    def _rows(
        self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]
    ) -> list[pa.RecordBatch]:
        """The batches as the stage's columns: typed as they are, enveloped, or unnested."""
        from bizon_fast.connectors.destinations.envelope import row_origins

        loaded_at = datetime.now(UTC)
        out = []
        for seq, offset, batch in row_origins(batches, first_seq, last_seq):
            if self.declared is None and not is_source_records(batch.schema):
                out.append(self._positioned(batch.replace_schema_metadata(None), seq, offset))  # as they are
                continue
            from bizon_fast.connectors.destinations.envelope import envelope, unnest  # polars: only when needed

            if self.declared is not None:
                frame = unnest(batch, self.declared, enforce_types=True)
            else:
                job = self.context.job_id
                frame = envelope(batch, job_id=job, split_id=split_id, seq=seq, loaded_at=loaded_at, row_offset=offset)
            out += [self._positioned(b, seq, offset) for b in frame.to_arrow().combine_chunks().to_batches()]
        return out

    def _positioned(self, batch: pa.RecordBatch, seq: int, offset: int) -> pa.RecordBatch:
        """A merge's rows carry their arrival (seq << 32 | row): the last version of a key is the last to arrive."""
        if not self.merging:
            return batch
        import numpy as np

        pos = (seq << 32) + offset + np.arange(batch.num_rows, dtype=np.int64)
        return batch.append_column(POS_COLUMN, pa.array(pos, pa.int64()))

    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        key = self._table_key(batches)
        rows = self._rows(split_id, first_seq, last_seq, batches)
        if rows:
            self._ensure_stage(rows[0].schema, key)
        cursors = _ident(self.schema, CURSORS)
        key = (self.destination, self.context.job_id, split_id)
        total = sum(b.num_rows for b in rows)
        count = last_seq - first_seq + 1

        def claim(cur: Any, write_id: int) -> int:
            return len(
                cur.execute(
                    f"INSERT INTO {cursors} (destination, job_id, split_id, seq, write_id, first_seq, last_seq, rows)"
                    " SELECT %s, %s, %s, s, %s, %s, %s, %s FROM generate_series(%s::int8, %s::int8) s ORDER BY s"
                    " ON CONFLICT DO NOTHING RETURNING seq",
                    (*key, write_id, first_seq, last_seq, total, first_seq, last_seq),
                ).fetchall()
            )

        def fn(cur: Any) -> None:
            write_id = secrets.randbits(63)
            claimed = claim(cur, write_id)
            if claimed < count:
                earlier = cur.execute(
                    f"SELECT DISTINCT write_id, first_seq, last_seq FROM {cursors} WHERE destination=%s AND job_id=%s"
                    " AND split_id=%s AND seq BETWEEN %s AND %s AND write_id <> %s",
                    (*key, first_seq, last_seq, write_id),
                ).fetchall()
                if claimed == 0 and len(earlier) == 1 and earlier[0][1:] == (first_seq, last_seq):
                    log.info(
                        "postgres destination: %s seq %d-%d is already written: skipped", split_id, first_seq, last_seq
                    )
                    return
                ids = [w for w, _, _ in earlier]
                log.info(
                    "postgres destination: %s seq %d-%d overlaps earlier writes %s; replacing them",
                    split_id,
                    first_seq,
                    last_seq,
                    [(f, last) for _, f, last in earlier],
                )
                if self._exists(cur, self.stage):
                    cur.execute(f"DELETE FROM {self.stage} WHERE {WRITE_COLUMN} = ANY(%s)", (ids,))
                cur.execute(
                    f"DELETE FROM {cursors} WHERE destination=%s AND job_id=%s AND split_id=%s AND write_id = ANY(%s)",
                    (*key, ids),
                )
                claimed += claim(cur, write_id)
                if claimed < count:
                    raise RuntimeError(f"seq {first_seq}-{last_seq} of {split_id} is being written concurrently")
            if rows:
                self._copy(cur, rows, write_id)
            fault_point("postgres.mid_write")  # rows and seqs claimed in the open transaction, not committed

        self._tx(fn, f"writing {split_id} seq {first_seq}-{last_seq}")

    def _copy(self, cur: Any, batches: list[pa.RecordBatch], write_id: int) -> None:
        assert self.encoder is not None and self.stage_columns is not None
        names = self.stage_columns
        columns = ", ".join(_ident(n) for n in [*names, WRITE_COLUMN])
        with cur.copy(f"COPY {self.stage} ({columns}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(SIGNATURE)
            for batch in batches:
                if batch.schema.names != names:
                    batch = self._align(batch, names)
                body = memoryview(self.encoder.encode(batch, write_id))
                for start in range(0, len(body), COPY_CHUNK):
                    copy.write(body[start : start + COPY_CHUNK])
            copy.write(TRAILER)

    def _align(self, batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
        """The batch's columns in stage order; a column the stage lacks is an error, a missing one NULL."""
        extra = [n for n in batch.schema.names if n not in names]
        if extra and self.policy == "freeze" and not self.replacing:
            batch = batch.select([n for n in batch.schema.names if n in names])  # new columns dropped (freeze)
            extra = []
        if extra:
            raise UserError(f"destination: columns {extra} are not in the staged columns of {self.destination}")
        arrays = [batch.column(n) if n in batch.schema.names else pa.nulls(batch.num_rows, pa.null()) for n in names]
        return pa.RecordBatch.from_arrays(arrays, names=names)
