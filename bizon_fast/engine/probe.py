"""``bizon-fast check`` and ``bizon-fast run --dry-run``: reach every part of a pipeline, move and write nothing.

A missing table or a closed port used to cost a full start-up (fork server, run lock, a job) before the run
failed. These probes build the source and the destination exactly as a run does (``engine/build.py``) and
plan the splits as the supervisor does, so a check that passes means the run's start-up passes too; but they
take no run lock, create no job, and write nothing to the destination (each part's own ``check()`` is a
read-only probe: catalogs and privileges, a temporary file it removes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bizon_fast.checkpoint.base import CheckpointBackend
from bizon_fast.checkpoint.factory import create_backend
from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.connectors.registry import destination_class
from bizon_fast.destination.base import DestinationContext
from bizon_fast.engine import incremental as inc
from bizon_fast.engine.build import build_destination, build_source
from bizon_fast.engine.job import fingerprint, replaced_because
from bizon_fast.errors import BizonFastError, JobFailed
from bizon_fast.source.base import Source, Split

#: the job id a probed destination is handed: it names staging that a probe never creates
CHECK_JOB_ID = "bizon-fast-check"


@dataclass
class Probe:
    """One part of the pipeline, reached (``ok``) or not: what was reached, or why not, and how long it took."""

    part: str  # source | destination | backend | queue
    kind: str  # the connector, backend or queue type
    ok: bool
    detail: str
    seconds: float


@dataclass
class Plan:
    """What a run of the pipeline would do, as ``run --dry-run`` prints it."""

    pipeline: str
    source: str  # name/stream
    destination: str
    producers: int
    consumers: int
    queue: str
    delivery: str
    job: str  # resumes an unfinished job, or starts a new one, and why
    splits: list[Split]
    total_rows: int | None
    seconds: float
    notes: list[str] = field(default_factory=list)


def one_line(exc: BaseException) -> str:
    """An exception as one line: our errors as they are worded, anything else with its type."""
    text = str(exc) if isinstance(exc, BizonFastError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def _timed(part: str, kind: str, fn: Callable[[], str]) -> Probe:
    started = time.monotonic()
    try:
        detail, ok = fn(), True
    except Exception as exc:  # noqa: BLE001 - a probe reports any failure as its line
        detail, ok = one_line(exc), False
    return Probe(part, kind, ok, detail, time.monotonic() - started)


def _source_cfg(cfg: PipelineConfig) -> dict[str, Any]:
    return cfg.source.model_dump(mode="json")  # as the supervisor dumps it (the job's fingerprint too)


def _destination_cfg(cfg: PipelineConfig) -> dict[str, Any]:
    return cfg.destination.config.model_dump(mode="json", by_alias=True)


def planned_source(cfg: PipelineConfig) -> tuple[Source, list[Split]]:
    """The supervisor's planning step: the source's own check, the cursor field, its splits."""
    source = build_source(_source_cfg(cfg))
    ok, error = source.check_connection()
    if not ok:
        raise JobFailed(f"source '{cfg.source.name}' check_connection failed: {error}", part="source")
    inc.check_cursor_field(source, cfg)
    return source, source.splits()


def _probe_source(cfg: PipelineConfig) -> str:
    source, splits = planned_source(cfg)
    where = source.endpoint()
    count = f"{len(splits)} split" + ("" if len(splits) == 1 else "s")
    return f"{where + ' ' if where else ''}{source.label()}, {count}"


def _probe_destination(cfg: PipelineConfig) -> str:
    mode = "stream" if inc.is_streaming(cfg) else inc.sync_mode(cfg)
    context = DestinationContext(
        job_id=CHECK_JOB_ID,
        pipeline=cfg.name,
        source_name=cfg.source.name,
        stream=cfg.source.stream,
        sync_mode=mode,
    )
    destination = build_destination(cfg.destination.name, _destination_cfg(cfg), context)
    try:
        return destination.check()
    finally:
        destination.close()


def _probe_queue(cfg: PipelineConfig) -> str:
    q: Any = cfg.engine.queue.config
    if cfg.engine.queue.type == "kafka":
        from bizon_fast.transport import kafka

        security = {k: v for k, v in q.queue.producer_config.items() if k.startswith(("security.", "sasl.", "ssl."))}
        return kafka.probe(q.queue.bootstrap_server, q.queue.topic, security)
    from bizon_fast.transport import rabbitmq

    where = f"{q.queue.host}:{q.queue.port}/{q.queue.virtual_host.lstrip('/')}"
    return rabbitmq.probe(q.queue.url(), where, q.queue.queue_name)


def check(cfg: PipelineConfig) -> Iterator[Probe]:
    """Each part in turn (the source, the destination, the checkpoint backend, a broker queue), each probe
    yielded as soon as it ends: a slow or failing part does not hide the others."""
    yield _timed("source", cfg.source.name, lambda: _probe_source(cfg))
    yield _timed("destination", cfg.destination.name, lambda: _probe_destination(cfg))
    yield _timed("backend", cfg.engine.backend.type, lambda: create_backend(cfg.engine.backend).check())
    if cfg.engine.queue.type in ("kafka", "rabbitmq"):
        yield _timed("queue", cfg.engine.queue.type, lambda: _probe_queue(cfg))


def _job_outlook(cfg: PipelineConfig, splits: list[Split], notes: list[str]) -> str:
    """What the run would do with the pipeline's jobs: the supervisor's choice, read without its run lock."""
    backend: CheckpointBackend = create_backend(cfg.engine.backend)
    if not backend.exists():
        return "a new job (nothing checkpointed yet)"
    backend.open()
    try:
        plan = inc.prepare(backend, cfg)
        if plan.run is not None and not plan.new_reset:
            stored = inc.load_watermark(backend, cfg)
            if stored is not None:
                notes.append(
                    f"incremental: reads after {cfg.source.cursor_field}={stored.max!r} (last run {stored.last_run});"
                    " the splits above are planned over every row"
                )
        old = backend.find_unfinished_job(cfg.name, cfg.source.name, cfg.source.stream)
        if old is None:
            return "a new job"
        why = replaced_because(
            old,
            fp=fingerprint(_source_cfg(cfg), cfg.destination.name, _destination_cfg(cfg)),
            sync_mode=inc.sync_mode(cfg),
            force_new=cfg.source.force_ignore_checkpoint or plan.new_reset,
        )
        if why == "force_ignore_checkpoint":
            return f"a new job (unfinished job {old.id} would be cancelled: reset / force_ignore_checkpoint)"
        if why == "config changed":
            return f"a new job (the config changed since unfinished job {old.id}, which would be cancelled)"
        cursors = backend.load_cursors(old.id)
        done = sum(1 for s in splits if s.id in cursors and cursors[s.id].done)
        rows = sum(c.rows for c in cursors.values())
        return (
            f"resumes job {old.id} ({old.status}, attempt {old.attempt + 1}): "
            f"{done} of {len(splits)} splits done, {rows:,} rows committed"
        )
    finally:
        backend.close()


def plan(cfg: PipelineConfig) -> Plan:
    """The run's plan: splits as the supervisor plans them, workers, delivery and the job it would resume.

    Errors are the run's own: a source that fails its check raises JobFailed, a bad value a UserError.
    """
    started = time.monotonic()
    source, splits = planned_source(cfg)
    total = source.total_rows()
    runner = cfg.engine.runner.config
    notes: list[str] = []
    job = _job_outlook(cfg, splits, notes)
    return Plan(
        pipeline=cfg.name,
        source=f"{cfg.source.name}/{cfg.source.stream}",
        destination=cfg.destination.name,
        producers=min(runner.producer_count(), max(1, len(splits))),
        consumers=runner.consumer_count(),
        queue=cfg.engine.queue.type,
        delivery=destination_class(cfg.destination.name).capabilities.delivery(),
        job=job,
        splits=splits,
        total_rows=total,
        seconds=time.monotonic() - started,
        notes=notes,
    )
