"""``bizon-fast jobs``: the past runs of a pipeline, read from its checkpoint backend.

Every run leaves its job (status, attempts, worker restarts, error) and its splits' committed cursors
in the backend, but nothing showed them: a failed run's story ended with its one-line error. These
commands read them back -- ``bizon-fast jobs [FILE]`` lists the jobs newest first, ``bizon-fast jobs
show JOB_ID [FILE]`` one job with its splits -- without the run lock and without creating anything
(``CheckpointBackend.open_for_reading``), so they answer while a run writes and leave no trace in a
backend a pipeline never used. ``--json`` gives the same fields, with stable keys, to scripts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer
from typer.core import TyperGroup

from bizon_fast.cli.output import fail, out_console
from bizon_fast.errors import BizonFastError, UserError

if TYPE_CHECKING:  # annotations only: `bizon-fast run` imports this module, and the checkpoint stack pulls pyarrow
    from bizon_fast.checkpoint.base import CheckpointBackend, CommittedCursor, JobRecord

#: errors longer than this are cut in the table (``--json`` and ``jobs show`` print them whole)
ERROR_WIDTH = 60


class _ListByDefault(TyperGroup):
    """``bizon-fast jobs FILE`` is ``bizon-fast jobs list FILE``: anything but a subcommand name (or
    ``--help``) goes to ``list``, so a pipeline file is never mistaken for a subcommand, nor the other way."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_ListByDefault,
    help="Past runs of pipelines, from their checkpoint backend: `jobs [FILE]` (short for `jobs list [FILE]`) "
    "lists them, `jobs show JOB_ID [FILE]` shows one with its splits.",
)

FileArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="FILE",
        help="pipeline YAML: its engine.backend and name",
        show_default="the default sqlite backend, every pipeline",
    ),
]
BackendDb = Annotated[
    Path | None,
    typer.Option(
        "--backend-db",
        help="a sqlite checkpoint database (as engine.backend.config.database names it) instead of FILE's backend",
        show_default="./bizon.sqlite3, bizon's default",
    ),
]
EnvFile = Annotated[Path | None, typer.Option("--env-file", help="load environment variables from this file")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON (stable keys) instead of a table")]


def _open(config: Path | None, backend_db: Path | None, env_file: Path | None) -> tuple[CheckpointBackend, str | None]:
    """The backend to read (not yet opened) and the pipeline name FILE gives (None without FILE).

    Raises a UserError for FILE together with ``--backend-db`` (which backend would be meant?) and for
    an in-memory backend, whose jobs die with each run.
    """
    from bizon_fast.checkpoint.factory import create_backend
    from bizon_fast.config.engine import BackendConfig

    if config is None:
        database = {} if backend_db is None else {"database": str(backend_db)}
        return create_backend(BackendConfig.model_validate({"type": "sqlite", "config": database})), None
    if backend_db is not None:
        raise UserError("--backend-db: give a pipeline FILE or --backend-db, not both (FILE names its backend)")
    from bizon_fast.connectors.pipeline import load_config

    cfg = load_config(config, env_file=str(env_file) if env_file else None)
    if cfg.engine.backend.type == "sqlite_in_memory":
        raise UserError(
            f"engine.backend: pipeline '{cfg.name}' uses sqlite_in_memory, whose jobs live only as long as their run; "
            "set engine.backend.type: sqlite (or postgres, bigquery) to keep them"
        )
    return create_backend(cfg.engine.backend), cfg.name


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _duration_s(job: JobRecord) -> float | None:
    """Seconds of the latest attempt: until its final status, or until now while it runs."""
    started = job.started_at or job.created_at
    end = datetime.now(UTC) if job.status == "running" else job.updated_at
    return round(max((end - started).total_seconds(), 0.0), 3)


def job_fields(job: JobRecord) -> dict[str, Any]:
    """A job as ``--json`` prints it: these keys, always all of them (null when unknown)."""
    return {
        "id": job.id,
        "pipeline": job.name,
        "source": job.source_name,
        "stream": job.stream_name,
        "sync_mode": job.sync_mode,
        "status": job.status,
        "created_at": _time(job.created_at),  # the first attempt's start
        "started_at": _time(job.started_at or job.created_at),  # the latest attempt's start
        "updated_at": _time(job.updated_at),
        "duration_s": _duration_s(job),  # of the latest attempt
        "rows": job.committed_rows,  # committed over all attempts
        "planned_rows": job.total_rows,  # what the source announced when the job was created
        "attempt": job.attempt,
        "restarts": job.restarts,
        "error": job.error,
        # what the destination changed in the target's schema when the job published (null: nothing)
        "schema_changes": job.schema_changes.splitlines() if job.schema_changes else None,
        "fingerprint": job.fingerprint,
    }


#: ``jobs show``'s text labels where they differ from the JSON keys (the run's summary says "schema" too)
TEXT_LABELS = {"schema_changes": "schema"}


def split_fields(committed: CommittedCursor) -> dict[str, Any]:
    """A split's committed cursor as ``jobs show --json`` prints it."""
    c = committed.cursor
    return {
        "split_id": c.split_id,
        "seq": c.seq,
        "rows": c.rows,
        "done": c.done,
        "updated_at": _time(committed.updated_at),
        "position": msgspec.to_builtins(c.position),
        "watermark": msgspec.to_builtins(c.watermark) if c.watermark is not None else None,
    }


def render_position(position: Any, seq: int) -> str:
    """A cursor position for people: the source's position as compact JSON, and the rows to skip after it.

    Positions are ``[source position, rows to skip]`` (a ring batch may end inside a source batch, see
    docs/architecture.md); -1 as seq means the split committed nothing yet.
    """
    if seq < 0:
        return "(not started)"
    skip = 0
    if isinstance(position, list) and len(position) == 2 and isinstance(position[1], int):
        position, skip = position
    text = "start" if position is None else json.dumps(msgspec.to_builtins(position), separators=(",", ":"))
    if len(text) > 80:
        text = text[:79] + "…"
    return f"{text} + skip {skip} rows" if skip else text


def _short(error: str | None) -> str:
    if not error:
        return ""
    line = error.strip().splitlines()[0] if error.strip() else ""
    return line if len(line) <= ERROR_WIDTH else line[: ERROR_WIDTH - 1] + "…"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _print_table(title: str, headers: list[str], rows: list[list[str]], right: set[str]) -> None:
    """A rich table on a terminal; plain text in aligned columns otherwise (pipes, files, grep).

    "A terminal" as rich decides it: stdout is a tty, or ``TTY_COMPATIBLE=1`` / ``FORCE_COLOR`` say so.
    """
    if out_console().is_terminal:
        from rich.table import Table  # here: `bizon-fast run` imports this module and never draws a table
        from rich.text import Text

        table = Table(title=Text(title))
        for h in headers:
            table.add_column(h, justify="right" if h in right else "left", overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # an error's "[...]" is text, not rich markup
        out_console().print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = (c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, headers, strict=True))
        return "  ".join(padded).rstrip()

    typer.echo(line(headers))
    for row in rows:
        typer.echo(line(row))


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


@app.command("list")
def list_jobs(
    config: FileArg = None,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", "-p", help="only this pipeline's jobs", show_default="FILE's name")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="at most this many jobs, newest first")] = 20,
    as_json: AsJson = False,
    env_file: EnvFile = None,
    backend_db: BackendDb = None,
) -> None:
    """List past runs, newest first: status, start, duration, rows, attempts, worker restarts, error."""
    try:
        backend, name = _open(config, backend_db, env_file)
        name = pipeline or name
        try:
            jobs = backend.list_jobs(name, limit) if backend.open_for_reading() else []
            where = backend.location()
        finally:
            backend.close()
    except BizonFastError as exc:
        raise fail(exc) from None
    if as_json:
        _print_json([job_fields(j) for j in jobs])
    if not jobs:
        whose = f"for pipeline '{name}' " if name else ""
        typer.echo(f"no jobs recorded {whose}in {where}", err=as_json)
        return
    if as_json:
        return
    headers = ["job", "pipeline", "source/stream", "status", "started (UTC)", "duration", "rows", "attempt"]
    headers += ["restarts", "error"]
    rows = []
    for job in jobs:
        fields = job_fields(job)
        started = (fields["started_at"] or "").replace("T", " ").removesuffix("+00:00")
        rows.append(
            [
                job.id,
                job.name,
                f"{job.source_name}/{job.stream_name}",
                job.status,
                started,
                _duration(fields["duration_s"]),
                _number(job.committed_rows or 0),
                str(job.attempt),
                _number(job.restarts),
                _short(job.error),
            ]
        )
    _print_table(f"jobs in {where}", headers, rows, right={"duration", "rows", "attempt", "restarts"})


@app.command("show")
def show_job(
    job_id: Annotated[
        str, typer.Argument(metavar="JOB_ID", help="a job id, as `bizon-fast jobs` and the run's summary print it")
    ],
    config: FileArg = None,
    as_json: AsJson = False,
    env_file: EnvFile = None,
    backend_db: BackendDb = None,
) -> None:
    """Show one job: its fields and each split's committed cursor (seq, rows, done, position)."""
    try:
        backend, _ = _open(config, backend_db, env_file)
        try:
            found = backend.open_for_reading()
            job = backend.get_job(job_id) if found else None
            where = backend.location()
            if job is None:
                raise UserError(f"job {job_id} is not recorded in {where}")
            # the committed rows, as the list shows them: the sum over the splits read below
            splits = backend.job_cursors(job_id)
        finally:
            backend.close()
    except BizonFastError as exc:
        raise fail(exc) from None
    job.committed_rows = sum(s.cursor.rows for s in splits)
    fields = job_fields(job)
    if as_json:
        _print_json({**fields, "splits": [split_fields(s) for s in splits]})
        return
    labels = {key: TEXT_LABELS.get(key, key) for key in fields}
    width = max(len(label) for label in labels.values())
    for key, value in fields.items():
        shown = "" if value is None else str(value)
        if key == "schema_changes" and value:
            shown = "\n".join(value)
        if key in ("error", "schema_changes") and shown:
            shown = shown.replace("\n", "\n" + " " * (width + 2))
        typer.echo(f"{labels[key].ljust(width)}  {shown}".rstrip())
    typer.echo("")
    if not splits:
        typer.echo("no split has committed a cursor yet")
        return
    rows = [
        [
            s.cursor.split_id,
            str(s.cursor.seq),
            f"{s.cursor.rows:,}",
            "yes" if s.cursor.done else "no",
            (_time(s.updated_at) or "").replace("T", " ").removesuffix("+00:00"),
            render_position(s.cursor.position, s.cursor.seq),
        ]
        for s in splits
    ]
    headers = ["split", "seq", "rows", "done", "committed (UTC)", "position"]
    _print_table(f"splits of job {job.id}", headers, rows, right={"seq", "rows"})
