"""``bizon-fast state import FILE``: carry bizon's state of a pipeline over to bizon-fast, on demand.

The first run of a pipeline that bizon ran does this by itself (``checkpoint/bizon_state.py``): bizon's
last successful job becomes the incremental watermark and an interrupted bizon job becomes a resumable
one. The command does the same without running anything, so a switch can be prepared and checked
first, and prints what it imported. It takes the pipeline's run lock, so it never writes under a live
run, and it refuses (unless ``--force``) once bizon-fast has history of its own for the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bizon_fast.cli.output import fail
from bizon_fast.errors import BizonFastError, UserError

app = typer.Typer(no_args_is_help=True, help="The checkpointed state of pipelines: `state import FILE` takes bizon's.")


@app.command("import")
def import_(
    filename: Annotated[Path, typer.Argument(help="pipeline YAML: its engine.backend holds bizon's tables")],
    custom_source: Annotated[Path | None, typer.Option(help="python file with a custom source")] = None,
    env_file: Annotated[Path | None, typer.Option(help="load environment variables from this file")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace bizon-fast's own history of the pipeline with bizon's")
    ] = False,
) -> None:
    """Import bizon's last successful job and interrupted job of a pipeline, and print what was imported.

    The next run reads only what is new since bizon's last success, or resumes bizon's interrupted job.
    """
    from bizon_fast.checkpoint.bizon_state import import_state
    from bizon_fast.checkpoint.factory import create_backend
    from bizon_fast.connectors.pipeline import load_config
    from bizon_fast.engine.incremental import sync_mode
    from bizon_fast.engine.job import fingerprint

    try:
        cfg = load_config(
            filename,
            custom_source=str(custom_source) if custom_source else None,
            env_file=str(env_file) if env_file else None,
        )
        mode = sync_mode(cfg)
        if mode != "incremental":
            raise UserError(
                f"source.sync_mode: only an incremental pipeline has state to carry over; a {mode} run reads "
                "everything anyway"
            )
        if cfg.engine.backend.type == "sqlite_in_memory":
            raise UserError("engine.backend: sqlite_in_memory keeps nothing between runs, bizon's tables included")
        backend = create_backend(cfg.engine.backend)
        backend.open()
        try:
            # the run lock: an import never writes under a live run of the pipeline
            backend.hold_run(cfg.name, cfg.source.name, cfg.source.stream)
            imported = import_state(
                backend,
                name=cfg.name,
                source_name=cfg.source.name,
                stream=cfg.source.stream,
                # the run's own fingerprint, so the run resumes the job an interrupted bizon job becomes
                fingerprint=fingerprint(
                    cfg.source.model_dump(mode="json"),
                    cfg.destination.name,
                    cfg.destination.config.model_dump(mode="json", by_alias=True),
                ),
                force=force,
            )
        finally:
            backend.close()
    except BizonFastError as exc:
        raise fail(exc) from None
    label = f"pipeline '{cfg.name}' ({cfg.source.name}/{cfg.source.stream})"
    typer.echo(f"Imported bizon's state of {label} from {imported.location}:")
    for line in imported.lines():
        typer.echo(f"  {line}")
