"""The ``bizon-fast`` command line. User errors print one line and exit 2; a failed job exits 1."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bizon_fast import cli_compat
from bizon_fast.errors import BizonFastError, Interrupted, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="bizon-fast: fast, crash-safe extract and load.")
out_console = Console()

LOG_DIR_ENV = "BIZON_FAST_LOG_DIR"


@app.callback()
def _group() -> None:
    """bizon-fast: fast, crash-safe extract and load, compatible with bizon pipelines."""


def _log_file(pipeline: str) -> str:
    """Create this run's log file, private to the user (0600 in a 0700 folder): it holds config values and errors.

    Created here, before any handler opens it, so its mode is ours; the workers append to it.
    """
    log_dir = Path(os.environ.get(LOG_DIR_ENV, ".bizon_fast/logs"))
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in pipeline)
    path = log_dir / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    return str(path)


def _record_failure(log_file: str | None, name: str, exc: BaseException, *, with_traceback: bool) -> str | None:
    """Append ``exc`` to the run's log, creating one (named ``name``) if the run failed before it had one.

    A failed run must leave a log that says why: one that failed while loading its config or
    starting up used to leave none, or an empty one. Written directly rather than through logging,
    so no log level can drop it and the console stays at one line. Returns the log, None if unwritable.
    """
    try:
        log_file = log_file or _log_file(name)
        text = "".join(traceback.format_exception(exc)) if with_traceback else f"{type(exc).__name__}: {exc}\n"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} ERROR supervisor bizon_fast.cli: run failed: {text}")
    except OSError:
        return None
    return log_file


def _setup_logging(level: str, log_file: str | None) -> None:
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


def _fail(exc: BizonFastError, log_file: str | None = None) -> typer.Exit:
    """Print ``exc`` as is: plain text, one problem per line, never re-wrapped to the terminal width.

    A user error (exit 2) says all there is to say; a failed job's line names the log, where the
    workers' errors are.
    """
    message = str(exc) if isinstance(exc, Interrupted) else f"Error: {exc}"
    if exc.exit_code == 1 and log_file and log_file not in message:
        message += f" (log: {log_file})"
    typer.echo(message, err=True)
    return typer.Exit(exc.exit_code)


def _internal_error(exc: Exception, log_file: str | None) -> typer.Exit:
    """A bug: one line on the console, the traceback in the log (on the console only if no log can be written)."""
    if log_file is None:
        traceback.print_exception(exc)
        where = "the log could not be written"
    else:
        where = f"traceback in {log_file}"
    typer.echo(f"Internal error: {type(exc).__name__}: {exc} ({where})", err=True)
    return typer.Exit(1)


def _summary(summary) -> None:  # noqa: ANN001 - RunSummary
    table = Table(title="bizon-fast run", show_header=False)
    table.add_row("job", summary.job_id + (" (resumed)" if summary.resumed else ""))
    table.add_row("status", summary.status)
    table.add_row("delivery", summary.delivery)
    table.add_row("rows written", f"{summary.rows:,}")
    if summary.total_rows != summary.rows:
        table.add_row("rows in job", f"{summary.total_rows:,}")
    table.add_row("batches", f"{summary.batches:,}")
    table.add_row("time", f"{summary.seconds:,.2f} s")
    table.add_row("rows/s", f"{summary.rows_per_s:,.0f}")
    table.add_row("MB/s", f"{summary.nbytes / 1e6 / max(summary.seconds, 1e-9):,.1f}")
    table.add_row("workers", f"{summary.producers} producers, {summary.consumers} consumers, {summary.splits} splits")
    table.add_row("restarts", str(summary.restarts))
    recoveries = sorted(summary.extra.get("recovery_s", []))
    if recoveries:
        median = recoveries[len(recoveries) // 2]
        table.add_row("worker recovery", f"median {median:.2f} s, max {recoveries[-1]:.2f} s")
    out_console.print(table)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="pipeline YAML file")],
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1, help="producers and consumers each")] = None,
    custom_source: Annotated[Path | None, typer.Option(help="python file with a custom source")] = None,
    runner: Annotated[str | None, typer.Option(help="thread | process | stream (overrides the YAML)")] = None,
    log_level: Annotated[str | None, typer.Option(help="TRACE..CRITICAL (overrides the YAML)")] = None,
    env_file: Annotated[Path | None, typer.Option(help="load environment variables from this file")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="reset an incremental stream")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display or summary")] = False,
    role: Annotated[
        str | None,
        typer.Option(help="all | producer | consumer: the half of a Kafka/RabbitMQ pipeline this machine runs"),
    ] = None,
) -> None:
    """Run a pipeline. Running the same command again resumes an interrupted or failed job."""
    log_file: str | None = None
    try:
        from bizon_fast.engine.handles import start_fork_server

        start_fork_server()  # its imports overlap config loading and planning

        from bizon_fast.connectors.pipeline import load_config
        from bizon_fast.engine.launch import make_supervisor
        from bizon_fast.engine.progress import make_progress

        cfg = load_config(
            config,
            workers=workers,
            runner=runner,
            custom_source=str(custom_source) if custom_source else None,
            env_file=str(env_file) if env_file else None,
            log_level=log_level,
            reset=reset,
            role=role,
        )
        try:
            log_file = _log_file(cfg.name)
        except OSError as exc:
            raise UserError(f"{LOG_DIR_ENV}: cannot create the run's log file: {exc}") from None
        _setup_logging(cfg.engine.runner.log_level, log_file)
        summary = make_supervisor(cfg, progress=make_progress(quiet), log_file=log_file).run()
    except BizonFastError as exc:
        log_file = _record_failure(log_file, config.stem, exc, with_traceback=False)
        raise _fail(exc, log_file) from None
    except Exception as exc:  # a bug: one line on the console, the traceback in the log
        log_file = _record_failure(log_file, config.stem, exc, with_traceback=True)
        raise _internal_error(exc, log_file) from None
    if not quiet:
        _summary(summary)
    typer.echo("Pipeline finished successfully.")


cli_compat.register(app)  # bizon's source / stream / secrets command groups


def main() -> None:
    """The console entry point; an exception no command handled is still one line, its traceback in a log."""
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the last resort: `run` handles its own
        log_file = _record_failure(None, "bizon-fast", exc, with_traceback=True)
        raise SystemExit(_internal_error(exc, log_file).exit_code) from None


if __name__ == "__main__":
    main()
