"""bizon's state carried over: a pipeline that bizon ran continues under bizon-fast where bizon stopped.

bizon (0.5/0.6) keeps its history in the same backend a bizon YAML names -- the same sqlite file, the
same Postgres database -- in tables of its own: ``stream_jobs`` (one row per job, with ``created_at``,
``status`` and, from 0.6, ``incremental_state``: the last ``next_state`` of a successful job) and
``destination_cursors`` (one row per buffer written: ``to_source_iteration``, ``pagination``,
``rows_written``, ``success``). bizon-fast keeps its own tables beside them (``bizon_fast_jobs``,
``bizon_fast_cursors``, ``bizon_fast_watermarks``), so a switched pipeline would otherwise start from
nothing: its first incremental run would read, and append, the whole stream again.

This module reads bizon's tables with plain SQL through the backend's own connection (bizon is not
imported: it is not a dependency, and its licence is not ours) and writes what it finds in bizon-fast's
terms:

- bizon's **last successful job** becomes the pipeline's incremental watermark: ``last_run`` is that
  job's ``created_at`` (what bizon hands ``get_records_after`` as ``source_state.last_run``) and
  ``state`` its ``incremental_state``. bizon never had a ``max(cursor_field)``, so ``max`` stays empty;
  the next bizon-fast run calls ``get_records_after`` exactly as bizon's next run would have.
- bizon's **interrupted job** (newer than the last success, still ``running``) becomes a resumable
  bizon-fast job whose split cursor is bizon's last successful destination cursor: the next run hands
  that ``pagination`` back to the source, as bizon's own resume would. Only where that loses nothing:
  the pagination must be non-empty (an empty one means the source was exhausted, and bizon itself
  refuses to resume), and bizon must have written those pages straight to their final place (``logger``,
  ``bigquery_streaming``, ``bigquery_streaming_v2``). bizon's ``file`` and ``bigquery`` destinations
  stage an incremental run and publish it only at the end, so an interrupted job's pages were never
  published: those are read again from the last success instead (fetched twice, delivered once).

:func:`carry_over` is the run's hook: it imports once, when the backend holds bizon's tables for the
pipeline and bizon-fast has no history for it, and logs one line. :func:`import_state` is
``bizon-fast state import``: the same on demand, refused (unless forced) once bizon-fast has history.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from bizon_fast.checkpoint.base import CheckpointBackend, JobRecord, JobStatus
from bizon_fast.cursor import Cursor
from bizon_fast.errors import UserError

log = logging.getLogger("bizon_fast.checkpoint.bizon_state")

#: bizon's tables this module reads (``bizon/engine/backend/models.py`` names them)
BIZON_TABLES = ("stream_jobs", "destination_cursors")
#: bizon destinations that write each buffer to its final place: their pages of an interrupted job are
#: published already, so resuming after them is exact. The others (file, bigquery) stage incremental runs.
DIRECT_WRITE_DESTINATIONS = frozenset({"logger", "bigquery_streaming", "bigquery_streaming_v2"})
#: the watermark's ``job_id`` column names bizon's job with this prefix, so it reads as imported
IMPORTED_PREFIX = "bizon:"


class BizonJob(msgspec.Struct, kw_only=True):
    """A ``stream_jobs`` row, as far as carrying it over needs."""

    id: str
    status: str
    sync_mode: str
    created_at: datetime  # UTC: bizon writes UTC into a column without a time zone
    state: dict[str, Any] | None = None  # ``incremental_state`` (bizon >= 0.6), decoded
    total_records: int | None = None


class BizonCursor(msgspec.Struct, kw_only=True):
    """The last successful ``destination_cursors`` row of a job: where bizon's own resume would start."""

    iteration: int  # ``to_source_iteration``: the last page written
    pagination: dict[str, Any] | None  # the source's position after it; None/empty: the source was exhausted
    rows: int  # rows written by the job, all its successful cursors
    destination: str  # bizon's destination name, which says whether those rows are published


class BizonHistory(msgspec.Struct, kw_only=True):
    """What bizon's tables hold for one pipeline."""

    last_succeeded: BizonJob | None = None
    interrupted: BizonJob | None = None  # newer than ``last_succeeded`` and still ``running``
    cursor: BizonCursor | None = None  # ``interrupted``'s resume point, when it wrote anything
    reset: bool = False  # ``interrupted`` was a stream reset (it consumed a ``stream_resets`` request)

    @property
    def empty(self) -> bool:
        return self.last_succeeded is None and self.interrupted is None


class ImportedWatermark(msgspec.Struct, kw_only=True):
    """The stored incremental watermark, field for field ``engine.incremental.StoredWatermark`` (the checkpoint
    layer cannot import the engine; a test decodes one with the other). msgpack keeps field names, so
    the run reads this as its own."""

    max: Any = None
    state: dict[str, Any] | None = None
    last_run: datetime
    cursor_field: str | None = None


class Imported(msgspec.Struct, kw_only=True):
    """What an import carried over, for the run's log line and the command's output."""

    location: str
    history: BizonHistory
    watermark: bool = False  # the last successful job became the watermark
    resumed_job: str | None = None  # the bizon-fast job created to resume bizon's interrupted one
    not_resumed: str | None = None  # why an interrupted bizon job is read again instead

    def lines(self) -> list[str]:
        """One line per fact, each readable on its own (the command prints them; the log joins them)."""
        out = []
        done = self.history.last_succeeded
        if done is not None:
            state = json.dumps(done.state, sort_keys=True) if done.state else "{}"
            out.append(
                f"last successful bizon job {done.id} (started {done.created_at.isoformat()}): the next run reads "
                f"what is new since then, with its state {state}"
            )
        stopped = self.history.interrupted
        if stopped is not None and self.resumed_job is not None and self.history.cursor is not None:
            cur = self.history.cursor
            out.append(
                f"interrupted bizon job {stopped.id}: resumed as job {self.resumed_job} after iteration "
                f"{cur.iteration} (pagination {json.dumps(cur.pagination, sort_keys=True)}, {cur.rows} rows "
                "already written by bizon)"
            )
        elif stopped is not None:
            out.append(f"interrupted bizon job {stopped.id}: not resumed, {self.not_resumed}")
            if done is None:
                out.append("bizon has no successful job of the pipeline: the next run reads everything")
        return out


# ---------------------------------------------------------------- reading bizon's tables


def _as_utc(value: datetime | str) -> datetime:
    """bizon's ``created_at``: a naive UTC time (text in sqlite), made aware as bizon's own reader does."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json_dict(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


Rows = Callable[[str, tuple], list[tuple]]


def _sqlite_reader(backend: CheckpointBackend) -> Rows | None:
    """bizon's tables in the sqlite file bizon-fast opened (bizon's ``{database}.sqlite3`` is the same file)."""
    conn = getattr(backend, "conn", None)
    if conn is None:
        return None
    placeholders = ",".join("?" for _ in BIZON_TABLES)
    present = conn.execute(
        f"SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN ({placeholders})", BIZON_TABLES
    ).fetchone()[0]
    if present < len(BIZON_TABLES):
        return None

    def rows(query: str, params: tuple) -> list[tuple]:
        try:
            return conn.execute(query.replace("{t}.", "").replace("%s", "?"), params).fetchall()
        except sqlite3.Error as exc:  # a bizon release with other columns, say: one line, not a traceback
            raise UserError(f"engine.backend: cannot read bizon's tables in {backend.location()}: {exc}") from None

    return rows


def _postgres_reader(backend: Any) -> Rows | None:
    """bizon's tables in the Postgres database bizon-fast opened: in the configured schema, or else in the
    connection's default one (bizon 0.5/0.6 only checks that ``schema`` exists and creates its tables in the
    default schema, ``public`` unless ``search_path`` says otherwise)."""
    import psycopg
    from psycopg import sql

    def find(cur: Any) -> str | None:
        row = cur.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = %s AND c.relkind IN ('r', 'p') AND n.nspname IN (%s, current_schema())"
            " AND EXISTS (SELECT 1 FROM pg_class d WHERE d.relname = %s AND d.relnamespace = n.oid)"
            " ORDER BY n.nspname = %s DESC LIMIT 1",
            (BIZON_TABLES[0], backend.schema, BIZON_TABLES[1], backend.schema),
        ).fetchone()
        return row[0] if row else None

    schema = backend.transaction(find, "looking for bizon's tables")
    if schema is None:
        return None

    def rows(query: str, params: tuple) -> list[tuple]:
        statement = sql.SQL(query).format(t=sql.Identifier(schema))
        try:
            return backend.transaction(lambda cur: cur.execute(statement, params).fetchall(), "reading bizon's tables")
        except psycopg.errors.DatabaseError as exc:  # a bizon release with other columns, say
            where = f"{backend.location()} (bizon's tables in schema {schema})"
            raise UserError(
                f"engine.backend: cannot read bizon's tables in {where}: {' '.join(str(exc).split())}"
            ) from None

    return rows


def _reader(backend: CheckpointBackend) -> Rows | None:
    """A query function over bizon's tables in this backend; None when it holds none (or cannot: BigQuery)."""
    from bizon_fast.checkpoint.sqlite import SqliteBackend

    if isinstance(backend, SqliteBackend):
        return _sqlite_reader(backend)
    if type(backend).__name__ == "PostgresBackend":  # not imported here: it needs psycopg
        return _postgres_reader(backend)
    return None


_JOB = "SELECT id, status, sync_mode, created_at, incremental_state, total_records_to_fetch FROM {t}.stream_jobs"
_PIPELINE = "name = %s AND source_name = %s AND stream_name = %s"


def _job(row: tuple | None) -> BizonJob | None:
    if row is None:
        return None
    id_, status, mode, created, state, total = row
    return BizonJob(
        id=id_,
        status=status,
        sync_mode=mode,
        created_at=_as_utc(created),
        state=_json_dict(state),
        total_records=total,
    )


def read_history(backend: CheckpointBackend, name: str, source_name: str, stream_name: str) -> BizonHistory | None:
    """bizon's history of the pipeline in ``backend`` (opened); None when the backend holds no bizon tables.

    The queries are bizon's own: the last ``succeeded`` job by ``created_at``; the newest ``running`` job
    after it; that job's highest successful ``to_source_iteration`` and its ``rows_written`` in total.
    """
    rows = _reader(backend)
    return None if rows is None else _history(rows, (name, source_name, stream_name))


def _history(rows: Rows, key: tuple[str, str, str]) -> BizonHistory:
    newest = f"{_JOB} WHERE {_PIPELINE} AND status = %s ORDER BY created_at DESC LIMIT 1"
    done = _job(next(iter(rows(newest, (*key, "succeeded"))), None))
    stopped = _job(next(iter(rows(newest, (*key, "running"))), None))
    if stopped is not None and done is not None and stopped.created_at <= done.created_at:
        stopped = None  # left running by a bizon run killed before a later success: nothing to resume
    cursor = None
    if stopped is not None:
        last = rows(
            "SELECT to_source_iteration, pagination, destination_name FROM {t}.destination_cursors"
            " WHERE job_id = %s AND success = %s ORDER BY to_source_iteration DESC LIMIT 1",
            (stopped.id, True),
        )
        if last:
            total = rows(
                "SELECT coalesce(sum(rows_written), 0) FROM {t}.destination_cursors WHERE job_id = %s AND success = %s",
                (stopped.id, True),
            )
            iteration, pagination, destination = last[0]
            cursor = BizonCursor(
                iteration=int(iteration or 0),
                pagination=_json_dict(pagination),
                rows=int(total[0][0]),
                destination=destination,
            )
    reset = stopped is not None and _consumed_a_reset(rows, stopped.id)
    return BizonHistory(last_succeeded=done, interrupted=stopped, cursor=cursor, reset=reset)


def _consumed_a_reset(rows: Rows, job_id: str) -> bool:
    """Whether bizon ran ``job_id`` as a stream reset (``stream_resets.consumed_by_job_id``, bizon >= 0.5.2)."""
    try:
        return bool(rows("SELECT count(*) FROM {t}.stream_resets WHERE consumed_by_job_id = %s", (job_id,))[0][0])
    except UserError:  # a bizon without stream resets has no such table
        return False


# ---------------------------------------------------------------- writing it in bizon-fast's terms


def has_history(backend: CheckpointBackend, name: str, source_name: str, stream_name: str) -> bool:
    """Whether bizon-fast has run (or imported) the pipeline: a job of any status, or a watermark."""
    return (
        backend.get_watermark(name, source_name, stream_name) is not None
        or backend.last_succeeded_job(name, source_name, stream_name) is not None
        or backend.find_unfinished_job(name, source_name, stream_name) is not None
    )


def _why_not_resumed(history: BizonHistory) -> str | None:
    """None when the interrupted bizon job can resume from its cursor; else why it is read again."""
    stopped, cursor = history.interrupted, history.cursor
    assert stopped is not None
    if stopped.sync_mode != "incremental":
        return f"it was a {stopped.sync_mode} job, which starts over (as bizon itself does)"
    if history.reset:
        return "it was a stream reset, which replaces the destination: request it again (`stream reset FILE`)"
    if cursor is None:
        return "it had written nothing yet, so the next run starts it over"
    if not cursor.pagination:
        return (
            "its last cursor has no pagination left (the source was exhausted before it was interrupted), so the "
            "next run reads again from the last success"
        )
    if cursor.destination not in DIRECT_WRITE_DESTINATIONS:
        return (
            f"bizon's {cursor.destination} destination staged its {cursor.rows} rows and publishes them only when a "
            "job succeeds, so they were never delivered: the next run reads them again from the last success"
        )
    return None


def _write(
    backend: CheckpointBackend,
    key: tuple[str, str, str],
    history: BizonHistory,
    *,
    fingerprint: str,
    total_rows: int | None,
    resume: bool,
) -> Imported:
    """Store bizon's last success as the watermark and, where it can resume, its interrupted job as a job."""
    imported = Imported(location=backend.location(), history=history)
    done = history.last_succeeded
    if done is not None:
        stored = ImportedWatermark(state=done.state or {}, last_run=done.created_at)
        backend.set_watermark(*key, msgspec.msgpack.encode(stored), f"{IMPORTED_PREFIX}{done.id}")
        imported.watermark = True
    stopped = history.interrupted
    if stopped is None:
        return imported
    imported.not_resumed = _why_not_resumed(history) if resume else "a reset or force_ignore_checkpoint starts over"
    if imported.not_resumed is not None:
        return imported
    cursor = history.cursor
    assert cursor is not None and cursor.pagination
    job = backend.create_job(
        name=key[0],
        source_name=key[1],
        stream_name=key[2],
        sync_mode="incremental",
        fingerprint=fingerprint,
        total_rows=stopped.total_records if stopped.total_records is not None else total_rows,
    )
    # a bizon source is one split named after its stream; the position is [source position, rows to skip].
    # ``rows`` counts what bizon-fast commits: bizon's rows are in bizon's cursors (the log line says how many)
    resume_at = Cursor(split_id=key[2], seq=cursor.iteration, position=[cursor.pagination, 0], rows=0)
    backend.commit_cursors(job.id, [resume_at])
    backend.set_job_status(
        job.id,
        JobStatus.CANCELLED,
        f"imported from bizon: its job {stopped.id} was interrupted after iteration {cursor.iteration}; "
        "the next run resumes it",
    )
    imported.resumed_job = job.id
    return imported


def carry_over(
    backend: CheckpointBackend,
    *,
    name: str,
    source_name: str,
    stream: str,
    sync_mode: str,
    fingerprint: str,
    total_rows: int | None,
    resume: bool,
) -> Imported | None:
    """The run's hook, before it looks for a job to resume: import bizon's state once, then never again.

    Does something only for an incremental pipeline whose backend holds bizon's tables with a job of the
    pipeline, while bizon-fast has no history for it (a full refresh reads everything anyway; a stream
    keeps its position in the source). ``resume``: False for a reset or ``force_ignore_checkpoint``, which
    would cancel an unfinished job at once. Logs one line saying what was imported.
    """
    if sync_mode != "incremental":
        return None
    rows = _reader(backend)  # one query when the backend holds no bizon tables (most pipelines)
    if rows is None or has_history(backend, name, source_name, stream):
        return None
    history = _history(rows, (name, source_name, stream))
    if history.empty:
        return None
    imported = _write(
        backend,
        (name, source_name, stream),
        history,
        fingerprint=fingerprint,
        total_rows=total_rows,
        resume=resume,
    )
    log.info(
        "bizon state carried over for pipeline '%s' (%s/%s) from %s: %s",
        name,
        source_name,
        stream,
        imported.location,
        "; ".join(imported.lines()),
    )
    return imported


def import_state(
    backend: CheckpointBackend,
    *,
    name: str,
    source_name: str,
    stream: str,
    fingerprint: str,
    total_rows: int | None = None,
    force: bool = False,
) -> Imported:
    """``bizon-fast state import``: the same import on demand, on an opened backend holding the run lock.

    Raises a UserError when there is nothing to import, or when bizon-fast already has history for the
    pipeline (its own watermark is newer than anything bizon left) unless ``force``: then an unfinished
    bizon-fast job is cancelled and bizon's state replaces the watermark.
    """
    key = (name, source_name, stream)
    label = f"pipeline '{name}' ({source_name}/{stream})"
    history = read_history(backend, *key)
    if history is None:
        raise UserError(f"engine.backend: {backend.location()} holds no bizon tables ({', '.join(BIZON_TABLES)})")
    if history.empty:
        raise UserError(f"engine.backend: bizon has no succeeded or interrupted job of {label} in {backend.location()}")
    if has_history(backend, *key):
        if not force:
            raise UserError(
                f"bizon-fast already has history for {label} in {backend.location()}: its own state is newer than "
                "bizon's. Pass --force to replace it with bizon's"
            )
        old: JobRecord | None = backend.find_unfinished_job(*key)
        if old is not None:
            log.warning("state import --force: cancelling unfinished job %s", old.id)
            backend.set_job_status(old.id, JobStatus.CANCELLED, "replaced by bizon's state (state import --force)")
    return _write(backend, key, history, fingerprint=fingerprint, total_rows=total_rows, resume=True)
