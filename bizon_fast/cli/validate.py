"""``bizon-fast config validate FILE``: bizon's command, with bizon's verdicts, output and exit codes.

CI jobs written for bizon call ``bizon config validate`` and read its lines and exit status; they keep
working when the binary changes. Valid: ``FILE is valid: dummy.creatures (full_refresh) -> logger``
on stdout, exit 0. Invalid: ``Error: FILE is invalid:`` and bizon-fast's own lines
(``file:line: yaml.path: what is wrong``) on stderr, exit 1. A missing file is a usage error, exit 2.
The checks are the ones ``run`` applies before it starts (:mod:`bizon_fast.config.validation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bizon_fast.cli.output import internal_error
from bizon_fast.errors import BizonFastError

config_app = typer.Typer(no_args_is_help=True, help="Subcommands for handling pipeline configs.")


def _invalid(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(1)


@config_app.command("validate")
def validate(
    filename: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="pipeline YAML file")],
    env_file: Annotated[
        Path | None,
        typer.Option("--env-file", exists=True, help="Path to .env file to load environment variables from."),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings as well as errors.")] = False,
    skip_references: Annotated[
        bool,
        typer.Option(
            "--skip-references",
            help="Do not resolve gsm:// / env:// references; validate them as literal strings. "
            "For CI without secret access.",
        ),
    ] = False,
) -> None:
    """Check a config without running anything.

    Validates the engine schema, the source's own config class and the stream name, the destination's
    config and the transforms. References (gsm://, env://) are resolved like a run would, so this needs
    the same access as one.
    """
    try:
        from bizon_fast.config.validation import validate_file
        from bizon_fast.connectors import registry

        verdict = validate_file(filename, connectors=registry, env_file=env_file, skip_references=skip_references)
    except BizonFastError as exc:
        raise _invalid(f"{filename} is invalid:\n{exc}") from None
    except Exception as exc:  # a bug: one line, with its traceback (validate writes no log file)
        raise internal_error(exc, None) from None
    if verdict.unchecked:
        typer.echo(f"{verdict.unchecked} field(s) hold an unresolved reference and were not type-checked.")
    for warning in verdict.warnings:
        typer.secho(f"Warning: {warning}", fg="yellow", err=True)
    if strict and verdict.warnings:
        raise _invalid(f"{filename} has {len(verdict.warnings)} warning(s) and --strict is set.")
    typer.secho(f"{filename} is valid: {verdict.summary}", fg="green")
