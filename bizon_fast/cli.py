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
from bizon_fast.errors import BizonFastError, Interrupted

app = typer.Typer(add_completion=False, no_args_is_help=True, help="bizon-fast: fast, crash-safe extract and load.")
out_console = Console()

LOG_DIR_ENV = "BIZON_FAST_LOG_DIR"


@app.callback()
def _group() -> None:
    """bizon-fast: fast, crash-safe extract and load, compatible with bizon pipelines."""


def _log_file(pipeline: str) -> str:
    log_dir = Path(os.environ.get(LOG_DIR_ENV, ".bizon_fast/logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in pipeline)
    return str(log_dir / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


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


def _fail(exc: BizonFastError) -> typer.Exit:
    # plain text: one problem per line, never re-wrapped to the terminal width
    typer.echo(str(exc) if isinstance(exc, Interrupted) else f"Error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def _summary(summary) -> None:  # noqa: ANN001 - RunSummary
    table = Table(title="bizon-fast run", show_header=False)
    table.add_row("job", summary.job_id + (" (resumed)" if summary.resumed else ""))
    table.add_row("status", summary.status)
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
    from bizon_fast.engine.handles import start_fork_server

    start_fork_server()  # its imports overlap config loading and planning

    from bizon_fast.config.load import load_config
    from bizon_fast.engine.progress import make_progress
    from bizon_fast.engine.supervisor import make_supervisor

    try:
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
        log_file = _log_file(cfg.name)
        _setup_logging(cfg.engine.runner.log_level, log_file)
        summary = make_supervisor(cfg, progress=make_progress(quiet), log_file=log_file).run()
    except BizonFastError as exc:
        raise _fail(exc) from None
    except Exception as exc:  # a bug: one line on the console, the traceback in the log
        logging.getLogger("bizon_fast").error("internal error\n%s", traceback.format_exc())
        typer.echo(f"Internal error: {type(exc).__name__}: {exc} (traceback in the log)", err=True)
        raise typer.Exit(1) from None
    if not quiet:
        _summary(summary)
    typer.echo("Pipeline finished successfully.")


cli_compat.register(app)  # bizon's source / stream / secrets command groups


def main() -> None:
    app()


if __name__ == "__main__":
    main()
