"""bizon's other commands, with bizon's output: ``source list``, ``stream list``, ``stream reset``, ``secrets check``.

They print what bizon prints, line for line, so scripts and habits built around bizon keep working.
Everything heavy is imported inside the commands: ``bizon-fast --help`` needs no optional library.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from bizon_fast.errors import BizonFastError

source_app = typer.Typer(no_args_is_help=True, help="Subcommands for handling sources.")
stream_app = typer.Typer(no_args_is_help=True, help="Subcommands for handling streams.")
secrets_app = typer.Typer(no_args_is_help=True, help="Subcommands for handling secret/reference resolution.")

EnvFile = Annotated[
    Path | None, typer.Option("--env-file", help="Path to .env file to load environment variables from.")
]


def _error(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


@source_app.command("list")
def source_list() -> None:
    """List available sources: bizon-fast's own, then bizon's (with the bizon extra), marked as such."""
    from bizon_fast.connectors.discovery import discover_all

    typer.echo("Retrieving available sources...")
    sources = discover_all()
    typer.echo("Available sources:")
    for name, info in sources.items():
        if info.origin == "missing":
            typer.echo(f"{name} - NOT AVAILABLE, run \"pip install 'bizon-fast[bizon]'\" to install bizon's sources.")
        elif info.error is not None:
            extra = "bizon" if info.origin == "bizon" else name
            typer.echo(
                f"{name} - NOT AVAILABLE, run 'pip install bizon-fast[{extra}]' to install missing dependencies."
            )
        elif info.origin == "bizon":
            typer.echo(f"{name} - {info.available_streams} (bizon's)")
        elif info.shadows_bizon:
            typer.echo(f"{name} - {info.available_streams} (bizon-fast's; used instead of bizon's {name})")
        else:
            typer.echo(f"{name} - {info.available_streams}")


@stream_app.command("list")
def stream_list(source_name: Annotated[str, typer.Argument(help="a source name, as in `source list`")]) -> None:
    """List available streams for a source; an unknown source exits 2."""
    from bizon_fast.connectors.discovery import all_source_names, describe

    info = describe(source_name)
    if info.origin == "missing":
        if info.error and info.error.startswith("unknown source"):
            raise _error(f"Source {source_name} not found; available: {', '.join(all_source_names())}", 2)
        raise _error(str(info.error), 2)
    if info.error is not None:
        raise _error(f"Source {source_name} is not available: {info.error}")
    typer.echo(f"Available streams for {source_name}:")
    for stream in info.streams:
        mode = "[Supports incremental]" if stream.supports_incremental else "[Full refresh only]"
        typer.echo(f"{mode} - {stream.name}")


@stream_app.command("reset")
def stream_reset(
    filename: Annotated[Path, typer.Argument(help="pipeline YAML file")],
    env_file: EnvFile = None,
    cancel: Annotated[
        bool, typer.Option("--cancel", help="Cancel pending reset requests instead of adding one.")
    ] = False,
    stream_name: Annotated[
        str | None,
        typer.Option("--stream", help="Reset this stream instead of the one named in the config."),
    ] = None,
) -> None:
    """Request a reset of the incremental stream defined by a config file.

    The request is stored in the checkpoint backend and consumed by the next run of that pipeline: it
    re-fetches the whole stream, replaces the destination and resumes incremental from there. It is
    scoped to one stream of one pipeline.
    """
    from bizon_fast.checkpoint import resets
    from bizon_fast.checkpoint.factory import create_backend
    from bizon_fast.connectors.pipeline import load_config
    from bizon_fast.engine.incremental import sync_mode

    try:
        cfg = load_config(filename, env_file=str(env_file) if env_file else None)
        if stream_name:
            cfg.source.stream = stream_name  # not validated, as in bizon: a typo is warned about below
        mode = sync_mode(cfg)
        if mode != "incremental":
            raise _error(
                f"Only incremental streams can be reset, but sync_mode is '{mode}'. "
                f"A '{mode}' stream already rebuilds its destination on every run."
            )
        backend = create_backend(cfg.engine.backend)
        backend.open()
    except BizonFastError as exc:
        raise _error(str(exc), exc.exit_code) from None
    try:
        if cfg.engine.backend.type == "sqlite":
            typer.echo(
                "Warning: the sqlite backend is a local file, so this request is only visible to runs using the "
                "same file."
            )
        key = (cfg.name, cfg.source.name, cfg.source.stream)
        label = f"{cfg.source.name} - {cfg.source.stream}"
        if cancel:
            cancelled = resets.cancel_resets(backend, *key)
            if cancelled:
                typer.echo(f"Cancelled {cancelled} pending reset request(s) for {label}.")
            else:
                typer.echo(f"No pending reset request for {label}.")
            return
        if resets.pending_reset(backend, *key):
            typer.echo(f"A reset is already pending for {label}, nothing to do.")
            return
        if backend.last_succeeded_job(*key) is None:
            typer.echo(
                f"Warning: no previous successful run found for {label}. Check the stream name — a stream that "
                "has never run already fetches everything on its next run."
            )
        resets.request_reset(backend, *key)
        typer.echo(
            f"Reset requested for {label}. The next run will re-fetch the full stream, replace the destination "
            "table, and resume incremental from there."
        )
    finally:
        backend.close()


@secrets_app.command("check")
def secrets_check(
    filename: Annotated[Path, typer.Argument(help="pipeline YAML file")], env_file: EnvFile = None
) -> None:
    """Dry-run all gsm:// / env:// references in a config and report (masked) results."""
    from bizon_fast.config.load import read_raw_config
    from bizon_fast.config.secrets import (
        Resolver,
        SecretResolutionError,
        find_references,
        resolve_reference,
        resolve_references,
    )

    try:
        raw = read_raw_config(filename, env_file=env_file)
    except BizonFastError as exc:
        raise _error(str(exc), exc.exit_code) from None
    references = find_references(raw)
    if not references:
        typer.echo("No gsm:// / env:// references found in config.")
        return
    secrets_cfg = raw.get("secrets")
    if isinstance(secrets_cfg, dict):
        # the GSM project may itself be an env:// reference; if it fails, it is listed and reported below
        with contextlib.suppress(SecretResolutionError):
            secrets_cfg = resolve_references({"secrets": secrets_cfg})["secrets"]
    resolver = Resolver(secrets_cfg)
    path_width = max(len(path) for path, _ in references)
    ref_width = max(len(reference) for _, reference in references)
    failures = 0
    for path, reference in references:
        try:
            status = f"✓ ({len(resolve_reference(reference, resolver=resolver))} chars)"
        except SecretResolutionError as exc:
            failures += 1
            status = f"✗ {exc.reason}"
        typer.echo(f"{path.ljust(path_width)}   {reference.ljust(ref_width)}   {status}")
    if failures:
        raise _error(f"{failures} reference(s) failed to resolve.")
    typer.echo(f"All {len(references)} reference(s) resolved.")


def register(app: typer.Typer) -> None:
    """Add bizon's command groups to the ``bizon-fast`` app."""
    app.add_typer(source_app, name="source")
    app.add_typer(stream_app, name="stream")
    app.add_typer(secrets_app, name="secrets")
