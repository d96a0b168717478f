"""The ``bizon-fast`` command line: the app and its commands, each command in its own module."""

from __future__ import annotations

import typer

from bizon_fast.cli import compat
from bizon_fast.cli.logs import record_failure
from bizon_fast.cli.output import internal_error
from bizon_fast.cli.run import run

app = typer.Typer(add_completion=False, no_args_is_help=True, help="bizon-fast: fast, crash-safe extract and load.")


@app.callback()
def _group() -> None:
    """bizon-fast: fast, crash-safe extract and load, compatible with bizon pipelines."""


app.command()(run)
compat.register(app)  # bizon's source / stream / secrets command groups


def main() -> None:
    """The console entry point; an exception no command handled is still one line, its traceback in a log."""
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the last resort: `run` handles its own
        log_file = record_failure(None, "bizon-fast", exc, with_traceback=True)
        raise SystemExit(internal_error(exc, log_file).exit_code) from None
