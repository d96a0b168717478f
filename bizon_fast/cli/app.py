"""The ``bizon-fast`` command line: the app and its commands, each command in its own module."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import Annotated, NoReturn

import click
import typer

# the modules, not the package: cli/__init__ imports this one
import bizon_fast.cli.compat as compat
import bizon_fast.cli.jobs as jobs
import bizon_fast.cli.state as state
import bizon_fast.cli.validate as validate
from bizon_fast.cli.check import check
from bizon_fast.cli.logs import record_failure
from bizon_fast.cli.output import internal_error
from bizon_fast.cli.run import run

#: what typer raises for bad command-line input: click's exceptions, which typer >= 0.28 vendors as its own
USAGE_ERRORS = (click.ClickException, getattr(typer, "TyperException", click.ClickException))

app = typer.Typer(no_args_is_help=True, help="bizon-fast: fast, crash-safe extract and load.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bizon-fast {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    """The installed distribution's version: what a bug report needs, read from the package metadata."""
    from importlib import metadata  # here: a run never asks, and the module costs ~20 ms at start-up

    try:
        return metadata.version("bizon-fast")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


@app.callback()
def _group(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """bizon-fast: fast, crash-safe extract and load, compatible with bizon pipelines.

    Shell completion: `bizon-fast --install-completion` (bash, zsh, fish, PowerShell).
    """


app.command()(run)
app.command()(check)
compat.register(app)  # bizon's source / stream / secrets command groups
app.add_typer(jobs.app, name="jobs")  # past runs: `jobs [FILE]`, `jobs show JOB_ID`
app.add_typer(state.app, name="state")  # `state import FILE`: bizon's state carried over
app.add_typer(validate.config_app, name="config")  # bizon's `config validate FILE`


def main() -> None:
    """The console entry point (``bizon-fast``, ``python -m bizon_fast``): the command, then a fast exit."""
    try:
        _main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if isinstance(code, str):  # SystemExit("message"): what the interpreter would print, and status 1
        print(code, file=sys.stderr)
        code = 1
    exit_now(code or 0)


def exit_now(code: int) -> NoReturn:
    """End the process once the command is done, without Python's interpreter teardown.

    Why: a run leaves pyarrow, pydantic's models and the connectors imported; finalizing them (module
    teardown and a last full collection) took ~0.1 s after the last atexit handler of every run (measured
    with strace: 105 ms from the last handler to ``exit_group``), a fifth of a small job's wall time, and
    does nothing for the next run. As at a normal exit, non-daemon threads are waited for (an alert still
    being sent) and the atexit handlers run (log files flushed, multiprocessing's finalizers), then the
    standard streams are flushed; only the teardown is skipped.
    """
    threading._shutdown()  # what the interpreter does first: executors told to stop, non-daemon threads joined
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe must not turn a finished run into a failure
            stream.flush()
    os._exit(code)


def _main() -> None:
    """The command line proper; an exception no command handled is still one line, its traceback in a log."""
    try:
        # the same name in help and completion, however it was started; errors handled below, not by typer
        code = app(prog_name="bizon-fast", standalone_mode=False)
    except USAGE_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # `bizon-fast`, `bizon-fast jobs` alone: the help, as typer would print it
        else:  # a bad option or argument: one line, like every other user error (typer would draw a box)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            typer.echo(f"Error: {exc.format_message()}{hint}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        raise SystemExit(1) from None
    except Exception as exc:  # noqa: BLE001 - the last resort: `run` handles its own
        log_file = record_failure(None, "bizon-fast", exc, with_traceback=True)
        raise SystemExit(internal_error(exc, log_file).exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)
