"""``bizon-fast run``: load the pipeline, run it under the supervisor, print the summary.

User errors print one line and exit 2; a failed job exits 1 and names its log, and prints bizon's status line
(``Pipeline finished with status Failure (...)``) after it for bizon users' alerting. ``--result-json`` writes
the outcome in bizon 0.6.4's fields (``cli/result.py``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

import bizon_fast.cli.result as outcome  # the module, not the package: cli/__init__ imports this one
from bizon_fast.cli.logs import LOG_DIR_ENV, log_file_for, record_failure, setup_logging
from bizon_fast.cli.output import fail, internal_error, print_summary
from bizon_fast.errors import BizonFastError, UserError


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector off while a run imports the engine and loads its config, on again after.

    Those imports allocate ~100k long-lived objects (modules, classes, pydantic models) that the collector
    would walk several times for nothing: ~10-15% of the supervisor's start-up CPU. Restored even on error,
    so a process that calls ``run`` in-process (tests) keeps its collector.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Runner(StrEnum):
    thread = "thread"
    process = "process"
    stream = "stream"


class LogLevel(StrEnum):
    TRACE = "TRACE"
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class Role(StrEnum):
    all = "all"
    producer = "producer"
    consumer = "consumer"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class ProgressMode(StrEnum):
    bar = "bar"
    splits = "splits"


def run(
    config: Annotated[Path, typer.Argument(help="pipeline YAML file", show_default=False)],
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            help="producers and consumers each (overrides engine.runner.config.max_workers)",
            show_default="the YAML's, else the CPU count",
        ),
    ] = None,
    custom_source: Annotated[Path | None, typer.Option(help="python file with a custom source")] = None,
    runner: Annotated[
        Runner | None,
        typer.Option(
            help="how workers run (overrides the YAML's engine.runner.type)", show_default="the YAML's, else process"
        ),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(help="overrides the YAML's engine.runner.log_level", show_default="the YAML's, else INFO"),
    ] = None,
    env_file: Annotated[Path | None, typer.Option(help="load environment variables from this file")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="reset an incremental stream")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display or summary")] = False,
    role: Annotated[
        Role | None,
        typer.Option(help="the half of a Kafka/RabbitMQ pipeline this machine runs", show_default="all"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check the config, plan the splits and print them; move no data")
    ] = False,
    log_format: Annotated[
        LogFormat, typer.Option(help="the log file's format; json: one object per line (also on stderr with --quiet)")
    ] = LogFormat.text,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics during the run"),
    ] = None,
    progress: Annotated[
        ProgressMode, typer.Option(help="bar: one bar for the job; splits: also one line per split")
    ] = ProgressMode.bar,
    result_json: Annotated[
        Path | None,
        typer.Option(
            "--result-json",
            dir_okay=False,
            help="write the run's outcome here as JSON, in bizon's fields; it reads `running` until the run ends, "
            "so a run killed from outside leaves that behind",
        ),
    ] = None,
) -> None:
    """Run a pipeline. Running the same command again resumes an interrupted or failed job."""
    log_file: str | None = None
    pipeline = config.stem  # the pipeline's name, once its config is read: in every JSON log line
    json_stderr = log_format == LogFormat.json and quiet  # the log's lines on stderr too, and nothing else
    try:
        results = outcome.ResultFile(result_json)  # `running` from now on
    except UserError as exc:
        raise fail(exc) from None
    configured = False  # the config loaded: a failure before that is bizon's `config` class
    stream = runner == Runner.stream  # bizon's stream runner reports one status, `stream`, not two sides
    try:
        with gc_paused():
            from bizon_fast.engine.handles import start_fork_server

            if not dry_run:  # a dry run starts no worker
                # its imports overlap config loading and planning; it imports the YAML's connectors too
                start_fork_server(config, custom_source=custom_source is not None)

            from bizon_fast.connectors.pipeline import load_config
            from bizon_fast.engine.launch import make_supervisor
            from bizon_fast.engine.progress import make_progress

            cfg = load_config(
                config,
                workers=workers,
                runner=runner.value if runner else None,
                custom_source=str(custom_source) if custom_source else None,
                env_file=str(env_file) if env_file else None,
                log_level=log_level.value if log_level else None,
                reset=reset,
                role=role.value if role else None,
                metrics_port=metrics_port,
            )
        if dry_run:  # plan and print; no lock, no job, nothing moved or written
            from bizon_fast.cli.check import dry_run as print_dry_run

            print_dry_run(cfg)
            results.write(outcome.dry_run())
            return
        configured = True
        stream = cfg.engine.runner.type == Runner.stream.value
        pipeline = cfg.name
        try:
            log_file = log_file_for(cfg.name)
        except OSError as exc:
            raise UserError(f"{LOG_DIR_ENV}: cannot create the run's log file: {exc}") from None
        setup_logging(
            cfg.engine.runner.log_level,
            log_file,
            log_format=log_format.value,
            pipeline=pipeline,
            json_stderr=json_stderr,
        )
        shown = make_progress(quiet, cfg.name, splits=progress == ProgressMode.splits)
        summary = make_supervisor(
            cfg, progress=shown, log_file=log_file, log_format=log_format.value, log_to_stderr=json_stderr
        ).run()
        results.write(outcome.success(summary, stream=stream))
    except BizonFastError as exc:
        ended = outcome.failure(exc, configured=configured, stream=stream)
        status_line = ended.status_line()
        if status_line:  # logged as bizon logs it: in the file, and as a JSON line on stderr with json --quiet
            logging.getLogger("bizon_fast.cli").error("%s", status_line, extra={"console": False})
        # a user error is one line by design; a failed job's worker traceback is in the log already
        log_file = record_failure(
            log_file, config.stem, exc, log_format=log_format.value, pipeline=pipeline, to_stderr=json_stderr
        )
        with contextlib.suppress(UserError):  # an unwritable result file must not hide the run's own error
            results.write(ended)
        error = fail(exc, log_file)
        if status_line and not json_stderr:  # kept beside bizon-fast's line: bizon users' alerting greps it
            typer.echo(status_line, err=True)
        raise error from None
    except Exception as exc:  # a bug: one line on the console, the traceback in the log
        log_file = record_failure(
            log_file,
            config.stem,
            exc,
            with_traceback=True,
            log_format=log_format.value,
            pipeline=pipeline,
            to_stderr=json_stderr,
        )
        with contextlib.suppress(UserError):
            results.write(outcome.failure(exc, configured=configured, stream=stream))
        raise internal_error(exc, log_file) from None
    if not quiet:
        print_summary(summary)
    typer.echo("Pipeline finished successfully.")
