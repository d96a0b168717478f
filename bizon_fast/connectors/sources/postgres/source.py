"""The ``postgres`` source: a table (or a query) read as parallel splits of columnar chunks.

``stream`` is the table, ``schema.table`` allowed; any name is accepted (``streams()`` lists ``*``).
How the work is cut:

- **Key ranges** when the table has a single-column integer primary key (or ``split_column`` names
  an integer column): ``min``/``max`` cut into ``splits`` equal ranges; each split reads chunks of
  consecutive key ranges (``key > a AND key <= b``, an index range scan), the step adapting to the
  rows found so a chunk holds about ``chunk_rows`` rows. The first split also reads keys below the
  planned minimum and the last one keys above the planned maximum, so rows inserted after planning
  are not lost. Position = the last key covered; a resumed split continues after it.
- **Block ranges** otherwise: the table's pages cut into ``splits`` ranges of ctids, read with TID
  range scans (PostgreSQL 14+). Position = the next block to read.
- A **query** with ``split_column`` is cut by key ranges like a table (its predicate is pushed into
  the query); rows whose key is NULL are read by one more split. Without a split column the query
  is materialized into a temporary table and read by block ranges, as one split. Resuming such a
  split re-runs the query and skips the blocks already read, which is exact only when the query's
  row order is deterministic (give it an ORDER BY).

Split ids carry their bounds: a table whose key range changed between an interrupted run and its
resume gets new splits (read from scratch) rather than resumed ones with shifted bounds.

Incremental (``sync_mode: incremental``): when the engine sets ``self.watermark`` (the maximum of
``cursor_field`` the last successful job read), every chunk also filters ``cursor_field > watermark``,
and key ranges are planned over the matching rows only (cheap when ``cursor_field`` is indexed).
A table's primary key (from ``pg_index``, read with the columns) rides on every batch as the schema
metadata ``bizon_fast.primary_key`` (a JSON list of columns): a destination's merge takes it as its key.

A lost connection is re-opened and the chunk read again, five times with backoff, then the error
is raised. Planning, the catalog and ``describe()`` use psycopg; each split reader reads its chunks on one
ADBC connection, each chunk one binary COPY decoded to Arrow in C (see ``chunks.py``), the next chunk
fetched by a thread while the current one is handed on.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from bizon_fast.clients import postgres as pgconn
from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.sources.postgres.chunks import INTEGER_OIDS, ChunkPlan, Column, quote
from bizon_fast.connectors.sources.postgres.config import PostgresSourceConfig
from bizon_fast.errors import ConfigError, UserError
from bizon_fast.source.base import Source, SourceBatch, Split

log = logging.getLogger("bizon_fast.source.postgres")

KEY = "source"
#: schema metadata of every batch of a table with a primary key: its columns, a JSON list (a merge's default key)
PRIMARY_KEY_META = b"bizon_fast.primary_key"
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1
CHUNK_BYTES = 4 << 20
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 1_024, 262_144
SESSION = (
    "SET jit = off",  # chunk queries are short and many: compiling them costs more than it saves
    "SET max_parallel_workers_per_gather = 0",  # splits are the parallelism; a chunk's few MB gain nothing
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET client_encoding = 'UTF8'",
)

_COLUMNS_SQL = """
SELECT a.attname, a.atttypid, a.atttypmod, NOT a.attnotnull
FROM pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
_PRIMARY_KEY_SQL = """
SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisprimary AND k.ord <= i.indnkeyatts
"""
_TYPES_SQL = """
SELECT t.oid, t.typtype, t.typbasetype, t.typtypmod, t.typelem, t.typcategory FROM pg_type t WHERE t.oid = ANY(%s)
"""


def _coerce(config: SourceConfig) -> PostgresSourceConfig:
    if isinstance(config, PostgresSourceConfig):
        return config
    try:
        return PostgresSourceConfig.model_validate(config.model_dump(by_alias=True))
    except ValidationError as exc:
        details = "; ".join(f"source.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid postgres source config: {details}") from None


class PostgresSource(Source):
    name = "postgres"
    supports_incremental = True

    def __init__(self, config: SourceConfig) -> None:
        config = _coerce(config)
        super().__init__(config)
        self.config: PostgresSourceConfig = config
        self.info = pgconn.conninfo_of(config)
        if config.query is None:
            schema, table = pgconn.split_name(config.stream, config.schema_name)
            self.relation: str | None = f"{quote(schema)}.{quote(table)}"
        else:
            self.relation = None
        self._plan: dict[str, Any] | None = None
        #: a finished split reader's ADBC connection and the ``describe()`` it read with: the next split this
        #: process reads starts on them (opening ADBC costs ~50 ms, describing ~20 ms: most of a small split)
        self._idle: tuple[pgconn.ArrowSession, dict[str, Any]] | None = None
        self._database: Any = None  # the ADBC database the reader sessions of this process open from

    @staticmethod
    def streams() -> list[str]:
        return ["*"]  # any table: see accepts_stream

    @classmethod
    def accepts_stream(cls, stream: str) -> bool:
        return bool(stream.strip())

    @staticmethod
    def get_config_class() -> type[SourceConfig]:
        return PostgresSourceConfig

    # ------------------------------------------------------------ connections

    def connect(self) -> Any:
        """A new psycopg autocommit session with the source's settings: planning and the catalog (``describe``)."""
        conn = pgconn.connect(self.info, key=KEY, autocommit=True)
        conn.execute("; ".join(SESSION))
        return conn

    def connect_reader(self) -> pgconn.ArrowSession:
        """A new ADBC autocommit session with the source's settings: a split reader's chunks. Sessions of one
        process share one ADBC database (opening that loads the server's type catalog, once)."""
        session = pgconn.ArrowSession.open(self.info, key=KEY, database=self._database)
        self._database = session.database
        for statement in SESSION:  # one at a time: ADBC prepares each statement
            session.execute(statement)
        return session

    def location(self) -> str:
        """What is read, as messages name it: the table (stream) or ``source.query``."""
        return f"{self.relation} (stream)" if self.relation else "source.query"

    # ------------------------------------------------------------ planning (supervisor)

    def check_connection(self) -> tuple[bool, str | None]:
        """Connect, describe and plan on one session: every caller (the supervisor, ``check``) lists the splits
        next, and a second session and ``describe()`` cost ~25 ms of a run's start."""
        self.plan()
        return True, None

    def describe(self, conn: Any) -> dict[str, Any]:
        """Columns, the split key and size estimates of the table or query (planning and each split reader)."""
        cfg = self.config
        if self.relation is not None:
            oid = conn.execute("SELECT to_regclass(%s)::oid", (self.relation,)).fetchone()[0]
            if oid is None:
                raise UserError(f"source.stream: table {cfg.stream!r} does not exist in {pgconn.where(self.info)}")
            raw = [(n, t, m, nullable) for n, t, m, nullable in conn.execute(_COLUMNS_SQL, (oid,)).fetchall()]
            pages, tuples = conn.execute("SELECT relpages, reltuples FROM pg_class WHERE oid = %s", (oid,)).fetchone()
        else:
            try:
                cur = conn.execute(f"SELECT * FROM ({cfg.query}) q LIMIT 0")
            except Exception as exc:  # noqa: BLE001 - any server error is a bad query
                raise UserError(f"source.query: {' '.join(str(exc).split())}") from None
            raw = [(d.name, d.type_code, cur.pgresult.fmod(i), True) for i, d in enumerate(cur.description)]
            oid, pages, tuples = None, 0, -1
        columns = self._resolve(conn, raw)
        key = self._key(conn, oid, columns)
        primary_key = conn.execute(_PRIMARY_KEY_SQL, (oid,)).fetchone()[0] if oid is not None else None
        width = None
        if oid is not None:
            width = conn.execute(
                "SELECT sum(avg_width) FROM pg_stats s JOIN pg_class c ON c.relname = s.tablename"
                " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname WHERE c.oid = %s",
                (oid,),
            ).fetchone()[0]
            if not width and pages > 0 and tuples > 0:
                width = pages * 8192 / tuples
        rows_per_chunk = cfg.chunk_rows or int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, CHUNK_BYTES / (width or 100))))
        return {
            "oid": oid,
            "columns": columns,
            "key": key,
            "primary_key": primary_key,
            "pages": pages,
            "tuples": tuples if tuples and tuples > 0 else None,
            "chunk_rows": rows_per_chunk,
        }

    def _resolve(self, conn: Any, raw: list[tuple[str, int, int, bool]]) -> list[Column]:
        """Domains to their base types, with array element types."""
        types: dict[int, tuple] = {}
        wanted = {t for _, t, _, _ in raw}
        while wanted - types.keys():
            for row in conn.execute(_TYPES_SQL, (list(wanted - types.keys()),)).fetchall():
                types[row[0]] = row[1:]
            wanted |= {v[1] for v in types.values() if v[0] == "d"}
        resolved = []
        for name, oid, typmod, nullable in raw:
            while types.get(oid, ("b",))[0] == "d":
                _, base, base_mod, _, _ = types[oid]
                oid, typmod = base, base_mod if base_mod != -1 else typmod
            _, _, _, elem, category = types.get(oid, ("b", 0, -1, 0, ""))
            resolved.append((name, oid, typmod, elem if category == "A" else 0, nullable))
        names = conn.execute(
            "SELECT format_type(o, m) FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY AS u(o, m, i) ORDER BY i",
            ([r[1] for r in resolved], [r[2] for r in resolved]),
        ).fetchall()
        return [Column(*r, sqltype=t[0]) for r, t in zip(resolved, names, strict=True)]

    def _key(self, conn: Any, oid: int | None, columns: list[Column]) -> str | None:
        cfg = self.config
        by_name = {c.name: c for c in columns}
        if cfg.split_column:
            col = by_name.get(cfg.split_column)
            if col is None or col.oid not in INTEGER_OIDS:
                where = self.location()
                raise UserError(f"source.split_column: {cfg.split_column!r} is not an integer column of {where}")
            return col.name
        if oid is None:
            return None
        row = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = i.indkey[0] WHERE i.indrelid = %s AND i.indisprimary AND i.indnkeyatts = 1",
            (oid,),
        ).fetchone()
        if row and row[0] in by_name and by_name[row[0]].oid in INTEGER_OIDS:
            return row[0]
        return None

    def incremental_filter(self, info: dict[str, Any]) -> str:
        """The incremental condition ("TRUE" when reading everything), the watermark a quoted literal cast to the
        column's type: ADBC reads through COPY only statements without bind parameters."""
        from psycopg import sql

        field = self.config.cursor_field
        if self.config.sync_mode != "incremental" or self.watermark is None or not field:
            return "TRUE"
        col = next((c for c in info["columns"] if c.name == field), None)
        if col is None:
            raise UserError(f"source.cursor_field: {field!r} is not a column of {self.location()}")
        return f"{quote(field)} > CAST({sql.Literal(self.watermark).as_string(None)} AS {col.sqltype})"

    def source_sql(self) -> str:
        """The table, or the query as a subquery (statements built on it carry no bind parameters)."""
        return self.relation if self.relation is not None else f"({self.config.query}) q"

    def plan(self) -> dict[str, Any]:
        if self._plan is None:
            with self.connect() as conn:
                self._plan = self._make_plan(conn)
        return self._plan

    def _make_plan(self, conn: Any) -> dict[str, Any]:
        info = self.describe(conn)
        where = self.incremental_filter(info)
        info["total"] = info["tuples"] if where == "TRUE" and self.relation is not None else None
        n = self.config.splits
        if info["key"] is not None:
            k = quote(info["key"])
            lo, hi, count = conn.execute(
                f"SELECT min({k}), max({k}), {'count(*)' if where != 'TRUE' else 'NULL'}"
                f" FROM {self.source_sql()} WHERE {where}"
            ).fetchone()
            if count is not None:
                info["total"] = count
            rows = count if count is not None else info["tuples"]
            nulls = [Split(id="key:null", params={"nulls": True})] if self._key_nullable(info) else []
            if lo is None:
                info["splits"] = [Split(id="key:empty", params={"after": None, "upto": None, "hi": None}), *nulls]
                return info
            span = hi - lo + 1
            n = max(1, min(n, span))
            bounds = [lo - 1 + span * i // n for i in range(n + 1)]
            density = (rows / span) if rows else 1.0
            info["splits"] = [
                Split(
                    id=f"key{i:03d}:{bounds[i]}:{bounds[i + 1]}",
                    params={
                        "after": None if i == 0 else bounds[i],
                        "upto": None if i == n - 1 else bounds[i + 1],
                        "lo": lo,
                        "hi": hi,
                        "density": density,
                    },
                    total_rows=int(density * (bounds[i + 1] - bounds[i])) if rows else None,
                )
                for i in range(n)
            ] + nulls
            return info
        if self.relation is None:
            info["splits"] = [Split(id="query", params={"first": 0, "end": None, "per_block": None})]
            return info
        if int(conn.execute("SHOW server_version_num").fetchone()[0]) < 140000:
            raise UserError(
                f"source.stream: {self.config.stream!r} has no integer primary key; reading it by block ranges needs "
                "PostgreSQL 14+ (or set source.split_column to an integer column)"
            )
        blocks = conn.execute(
            "SELECT pg_relation_size(%s) / current_setting('block_size')::int", (info["oid"],)
        ).fetchone()[0]
        per_block = (info["tuples"] / info["pages"]) if info["tuples"] and info["pages"] else None
        n = max(1, min(n, blocks))
        bounds = [blocks * i // n for i in range(n + 1)]
        info["splits"] = [
            Split(
                id=f"blk{i:03d}:{bounds[i]}:{bounds[i + 1]}",
                params={"first": bounds[i], "end": None if i == n - 1 else bounds[i + 1], "per_block": per_block},
                total_rows=int(per_block * (bounds[i + 1] - bounds[i])) if per_block else None,
            )
            for i in range(n)
        ]
        return info

    @staticmethod
    def _key_nullable(info: dict[str, Any]) -> bool:
        """Rows whose split key is NULL fall in no range: a nullable key gets one more split for them."""
        return next(c for c in info["columns"] if c.name == info["key"]).nullable

    def splits(self) -> list[Split]:
        return self.plan()["splits"]

    def total_rows(self) -> int | None:
        total = self.plan()["total"]
        return int(total) if total is not None else None

    def columns(self) -> list[str] | None:
        return [c.name for c in self.plan()["columns"]]

    def label(self) -> str:
        if self.relation is None:
            return "source.query"
        return ".".join(pgconn.split_name(self.config.stream, self.config.schema_name))

    def endpoint(self) -> str | None:
        return pgconn.where(self.info)

    # ------------------------------------------------------------ reading (producer)

    def read(self, split: Split, position: Any | None) -> Iterator[SourceBatch]:
        """Chunks are fetched and decoded one ahead in a thread: the server sends the next while this one is
        handed on (ADBC's fetch releases the GIL)."""
        reader = _SplitReader(self, split)
        if split.params.get("nulls"):
            walk = reader.null_keys(position)
        elif "after" in split.params:
            walk = reader.keys(position)
        else:
            walk = reader.blocks(position)
        primary_key = reader.info.get("primary_key")
        meta = {PRIMARY_KEY_META: json.dumps(primary_key).encode()} if primary_key else None
        finished = False
        try:
            for batch, pos in _ahead(walk):
                if meta is not None:  # the table's primary key, for a merge into the destination
                    batch = batch.replace_schema_metadata({**(batch.schema.metadata or {}), **meta})
                yield SourceBatch(batch, pos)
            finished = True
        finally:
            reader.close(keep=finished)


_DONE = object()


def _ahead(items: Iterator[Any]) -> Iterator[Any]:
    """``items``, produced one ahead by a thread (database waits release the GIL)."""
    slot: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slot.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            put(exc)
        finally:
            items.close()  # type: ignore[attr-defined]

    thread = threading.Thread(target=run, name="bizon-fast-pg-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slot.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _next_step(width: int, found: int, chunk_rows: int) -> int:
    """The next chunk's width (keys or blocks): aim at ``chunk_rows``, at most 4x more or less at a time."""
    if found == 0:
        return width * 4
    return max(1, width // 4, min(width * 4, width * chunk_rows // found))


def _int8(value: int) -> str:
    """An integer bound as a bigint literal (quoted: a bare negative literal would be parsed as numeric)."""
    return f"'{int(value)}'::int8"


class _SplitReader:
    """Reads one split chunk by chunk on its own ADBC connection, reconnecting when the connection is lost."""

    def __init__(self, source: PostgresSource, split: Split) -> None:
        self.source = source
        self.split = split
        self.conn: pgconn.ArrowSession | None = None
        self.info: dict[str, Any] = {}
        self.temp: str | None = None
        if source._idle is not None:  # the connection of the split this process read before
            (self.conn, self.info), source._idle = source._idle, None
            self._prepare()
        else:
            self._open()

    def _open(self) -> None:
        """A new connection (and a fresh ``describe()``): at the start, and after the connection was lost."""
        with self.source.connect() as catalog:  # first: while the server is away the old, broken one stays
            info = self.source.describe(catalog)
        conn = self.source.connect_reader()
        self.close()
        self.conn = conn
        self.info = info
        self._prepare()

    def _prepare(self) -> None:
        self.plan = ChunkPlan(self.info["columns"])
        self.where = self.source.incremental_filter(self.info)
        self.relation = self.source.source_sql()
        if self.source.relation is None and self.info["key"] is None:
            self.temp = f"bizon_fast_query_{secrets.token_hex(6)}"
            self.conn.execute(f"CREATE TEMP TABLE {self.temp} AS {self.source.config.query}")
            self.relation = self.temp

    def close(self, keep: bool = False) -> None:
        """Close the connection, or with ``keep`` (the split read to its end) leave it to the next split."""
        if keep and self.conn is not None and self.temp is None:
            self.source._idle, self.conn = (self.conn, self.info), None
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                conn.close(database=False)  # the database stays for the next session of this process
            except Exception as exc:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
                log.debug("closing a source connection: %s", exc)

    def _scalar(self, query: str) -> Any:
        return self.conn.table(query).column(0)[0].as_py()

    def _fetch(self, where: str) -> pa.RecordBatch:
        """One chunk as a batch, reconnecting and reading it again when the connection is lost."""
        query = self.plan.query(self.relation, f"({self.where}) AND {where}")

        def attempt() -> pa.Table:
            return self.conn.table(query)

        table = pgconn.with_retries(
            attempt, reconnect=self._open, what=f"source ({self.source.location()})", conn=lambda: None
        )
        return self.plan.decode(table)

    def keys(self, position: Any | None) -> Iterator[tuple[pa.RecordBatch, Any]]:
        params = self.split.params
        key = quote(self.info["key"])
        chunk_rows = self.info["chunk_rows"]
        upto_end, lo, hi = params["upto"], params.get("lo"), params.get("hi")
        after = position if position is not None else params["after"]
        step = max(1, int(chunk_rows / max(params.get("density") or 1.0, 1e-9)))
        while True:
            if upto_end is not None and after is not None and after >= upto_end:
                return
            if upto_end is None and (hi is None or (after is not None and after >= hi)):
                # the open end of the last split: whatever lies above, in one chunk
                batch = self._fetch(f"{key} > {_int8(after)}" if after is not None else "TRUE")
                if batch.num_rows:
                    yield batch, pc.max(batch.column(self.info["key"])).as_py()
                return
            start = after if after is not None else lo - 1
            upper = min(INT8_MAX, start + step)
            if upto_end is not None:
                upper = min(upper, upto_end)
            if after is None:
                cond = f"{key} <= {_int8(upper)}"
            else:
                cond = f"{key} > {_int8(after)} AND {key} <= {_int8(upper)}"
            batch = self._fetch(cond)
            found = batch.num_rows
            if found:
                yield batch, upper
            after = upper
            step = _next_step(max(1, upper - start), found, chunk_rows)

    def null_keys(self, position: Any | None) -> Iterator[tuple[pa.RecordBatch, Any]]:
        """The rows whose split key is NULL, in one chunk (position 1 once read)."""
        if position is None:
            batch = self._fetch(f"{quote(self.info['key'])} IS NULL")
            if batch.num_rows:
                yield batch, 1

    def blocks(self, position: Any | None) -> Iterator[tuple[pa.RecordBatch, Any]]:
        params = self.split.params
        chunk_rows = self.info["chunk_rows"]
        block = position if position is not None else params["first"]
        end = params["end"]
        per_block = params.get("per_block") or max(1.0, 8192 / 100)
        step = max(1, int(chunk_rows / per_block))
        limit = end if end is not None else self._blocks()
        while True:
            if block >= limit:
                if end is not None:
                    return
                limit = self._blocks()  # the table may have grown since
                if block >= limit:
                    return
            upper = min(block + step, limit)
            batch = self._fetch(f"ctid >= '({int(block)},0)'::tid AND ctid < '({int(upper)},0)'::tid")
            if batch.num_rows:
                yield batch, upper
            step = _next_step(upper - block, batch.num_rows, chunk_rows)
            block = upper

    def _blocks(self) -> int:
        from psycopg import sql

        rel = sql.Literal(self.temp or self.source.relation).as_string(None)
        return self._scalar(f"SELECT pg_relation_size({rel}::regclass) / current_setting('block_size')::int")
