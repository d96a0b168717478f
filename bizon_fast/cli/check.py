"""``bizon-fast check``, and what ``bizon-fast run --dry-run`` prints: a pipeline checked without running it.

A typo in a table name or a closed port used to be found only by a full start-up. ``check`` validates the
config with the loader ``run`` uses, then reaches each part in turn and prints one line per part, which an
operator can read (or grep) at a glance. The probes themselves live in ``engine/probe.py`` and the parts'
own ``check()`` methods; this module only prints them. Exit codes: 0 all reached, 1 a part failed,
2 the config is invalid (one line, as for ``run``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bizon_fast.cli.output import fail, internal_error
from bizon_fast.errors import BizonFastError

if TYPE_CHECKING:
    from bizon_fast.config.pipeline import PipelineConfig
    from bizon_fast.engine.probe import Plan, Probe


def probe_line(probe: Probe) -> str:
    """``ok   source postgres        127.0.0.1:5432/test public.events, 4 splits  (0.04 s)``."""
    mark = "ok" if probe.ok else "FAIL"
    return f"{mark:<4} {probe.part + ' ' + probe.kind:<22} {probe.detail}  ({probe.seconds:.2f} s)"


def check(
    config: Annotated[Path, typer.Argument(help="pipeline YAML file", show_default=False)],
    env_file: Annotated[Path | None, typer.Option(help="load environment variables from this file")] = None,
    custom_source: Annotated[Path | None, typer.Option(help="python file with a custom source")] = None,
) -> None:
    """Check a pipeline without running it: every part reached, one line each.

    Validates the config, then reaches the source, the destination, the checkpoint backend and the broker
    queue. Takes no run lock, creates no job, writes nothing to the destination.
    """
    try:
        from bizon_fast.connectors.pipeline import load_config
        from bizon_fast.engine.probe import check as probes

        cfg = load_config(
            config,
            custom_source=str(custom_source) if custom_source else None,
            env_file=str(env_file) if env_file else None,
        )
        failed = 0
        for probe in probes(cfg):
            typer.echo(probe_line(probe))
            failed += not probe.ok
    except BizonFastError as exc:
        raise fail(exc) from None
    except Exception as exc:  # a bug: one line, with its traceback (check writes no log file)
        raise internal_error(exc, None) from None
    if failed:
        raise typer.Exit(1)


def _params(params: dict[str, Any]) -> str:
    """A split's parameters as ``key=value`` (its range: bounds, offsets, a file), long values cut."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        text = str(value)
        parts.append(f"{key}={text if len(text) <= 60 else text[:57] + '...'}")
    return " ".join(parts)


def print_plan(plan: Plan) -> None:
    """What a run would do: a header (pipeline, source -> destination, workers, delivery, the job), then one
    line per split: its id, its range when the split carries one, its rows when known."""
    total = "unknown" if plan.total_rows is None else f"{plan.total_rows:,}"
    typer.echo(f"Dry run of pipeline '{plan.pipeline}': {plan.source} -> {plan.destination}")
    typer.echo(f"  workers:  {plan.producers} producers, {plan.consumers} consumers (queue {plan.queue})")
    typer.echo(f"  delivery: {plan.delivery}")
    typer.echo(f"  job:      {plan.job}")
    for note in plan.notes:
        typer.echo(f"  note:     {note}")
    typer.echo(f"  splits:   {len(plan.splits)}, rows: {total}")
    width = max((len(s.id) for s in plan.splits), default=0)
    for split in plan.splits:
        rows = "" if split.total_rows is None else f"  {split.total_rows:,} rows"
        typer.echo(f"    {split.id:<{width}}  {_params(split.params)}{rows}".rstrip())
    typer.echo(f"Nothing was moved or written (planned in {plan.seconds:.2f} s).")


def dry_run(cfg: PipelineConfig) -> None:
    """``run --dry-run``: plan the run and print it; errors are the run's own (the caller prints them)."""
    from bizon_fast.engine.probe import plan

    print_plan(plan(cfg))
