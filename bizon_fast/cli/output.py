"""What a command prints when it ends: one line per failure, the run's summary table.

Plain text, one problem per line, never re-wrapped: operators grep these lines and paste them.
"""

from __future__ import annotations

import traceback
from functools import cache
from typing import TYPE_CHECKING

import typer

from bizon_fast.errors import BizonFastError, Interrupted

if TYPE_CHECKING:
    from rich.console import Console


@cache
def out_console() -> Console:
    """stdout's rich console, made on first use: a quiet run prints no table and never imports rich (~40 ms)."""
    from rich.console import Console

    return Console()


def fail(exc: BizonFastError, log_file: str | None = None) -> typer.Exit:
    """Print ``exc`` as is: plain text, one problem per line, never re-wrapped to the terminal width.

    A user error (exit 2) says all there is to say; a failed job's line names the log, where the
    workers' errors are.
    """
    message = str(exc) if isinstance(exc, Interrupted) else f"Error: {exc}"
    if exc.exit_code == 1 and log_file and log_file not in message:
        message += f" (log: {log_file})"
    typer.echo(message, err=True)
    return typer.Exit(exc.exit_code)


def internal_error(exc: Exception, log_file: str | None) -> typer.Exit:
    """A bug: one line on the console, the traceback in the log (on the console only if no log can be written)."""
    if log_file is None:
        traceback.print_exception(exc)
        where = "the log could not be written"
    else:
        where = f"traceback in {log_file}"
    typer.echo(f"Internal error: {type(exc).__name__}: {exc} ({where})", err=True)
    return typer.Exit(1)


def print_summary(summary) -> None:  # noqa: ANN001 - RunSummary
    """The run's table: what moved, how fast, where it went (``output``) and where its log is (``log``).

    Paths and table names are printed whole, never cropped to the terminal: they are copied from here.
    """
    from rich.table import Table

    table = Table(title="bizon-fast run", show_header=False)
    table.add_column(overflow="fold")
    table.add_column(overflow="fold")
    table.add_row("job", summary.job_id + (" (resumed)" if summary.resumed else ""))
    table.add_row("status", summary.status)
    table.add_row("output", summary.output or "-")
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
    if summary.schema_changes:
        table.add_row("schema", "\n".join(summary.schema_changes))
    recoveries = sorted(summary.extra.get("recovery_s", []))
    if recoveries:
        median = recoveries[len(recoveries) // 2]
        table.add_row("worker recovery", f"median {median:.2f} s, max {recoveries[-1]:.2f} s")
    table.add_row("log", summary.log_file or "-")
    out_console().print(table)
