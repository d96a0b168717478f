"""Incremental runs and stream resets, as the supervisor plans and closes them.

Before the job is resolved, :func:`prepare` decides whether this run is a reset (``source.reset``,
``--reset`` or a pending ``stream reset`` request; bizon's three triggers) -- a new reset replaces an
unfinished job instead of resuming it. After, :func:`bind` ties the reset to the job (so a crashed
reset resumes as one) or loads the watermark the last successful job left. :func:`finish` stores the
new watermark when, and only when, the job succeeds: a failed or interrupted run never advances it
past data it did not deliver.

What the stored watermark holds (msgpack, in the backend's watermark store): ``max`` of
``cursor_field`` over every committed batch of the job (at least the previous max), the source
``state`` a bizon >= 0.6 source returned as ``next_state`` (states merge key by key over the job's batches and
with the previous run's: the file source keeps one key per file loaded), and ``last_run``, the job's start time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from bizon_fast.checkpoint import resets
from bizon_fast.checkpoint.base import CheckpointBackend, JobRecord
from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.cursor import Cursor
from bizon_fast.errors import ConfigError, StepFailed
from bizon_fast.source.base import Source
from bizon_fast.source.incremental import IncrementalRun, Watermark, fold, later, merge_states

log = logging.getLogger("bizon_fast.incremental")


class StoredWatermark(msgspec.Struct, kw_only=True):
    max: Any = None
    state: dict[str, Any] | None = None
    last_run: datetime
    cursor_field: str | None = None


@dataclass
class Plan:
    mode: str  # the job's sync mode
    destination_mode: str  # what the destination is told: a reset replaces, so it sees full_refresh
    run: IncrementalRun | None = None  # None unless sync_mode is incremental
    new_reset: bool = False  # this run starts a reset: an unfinished job is replaced, not resumed


def sync_mode(cfg: PipelineConfig) -> str:
    return str(getattr(cfg.source.sync_mode, "value", cfg.source.sync_mode))


def is_streaming(cfg: PipelineConfig) -> bool:
    """bizon's ``stream`` runner and ``sync_mode: stream`` both mean the continuous stream mode."""
    return sync_mode(cfg) == "stream" or cfg.engine.runner.type == "stream"


def _key(cfg: PipelineConfig) -> tuple[str, str, str]:
    return cfg.name, cfg.source.name, cfg.source.stream


def load_watermark(backend: CheckpointBackend, cfg: PipelineConfig) -> StoredWatermark | None:
    raw = backend.get_watermark(*_key(cfg))
    return None if raw is None else msgspec.msgpack.decode(raw, type=StoredWatermark)


def check_cursor_field(source: Source, cfg: PipelineConfig) -> None:
    """Start-up, before any job exists: an incremental ``cursor_field`` must be a column the source has.

    A misspelt field used to be accepted: every run read and appended the whole stream again, with no
    watermark to show for it. Sources that cannot know their columns up front (JSON records, a schema
    inferred from the data) return None from ``columns()``; the producer checks their batches instead.
    """
    field = cfg.source.cursor_field
    if not field or is_streaming(cfg) or sync_mode(cfg) != "incremental":
        return
    columns = source.columns()
    if columns is None or field in columns:
        return
    raise ConfigError(
        f"source.cursor_field: {field!r} is not a column of {source.label()}; columns: {', '.join(columns)}"
    )


def prepare(backend: CheckpointBackend, cfg: PipelineConfig) -> Plan:
    mode = sync_mode(cfg)
    if is_streaming(cfg):
        return Plan(mode=mode, destination_mode="stream")
    if mode != "incremental":
        if cfg.source.reset:
            log.warning("source.reset is ignored: only incremental streams can be reset (sync_mode is %s)", mode)
        return Plan(mode=mode, destination_mode=mode)
    new_reset = bool(cfg.source.reset) or resets.pending_reset(backend, *_key(cfg))
    run = IncrementalRun(reset=new_reset, cursor_field=cfg.source.cursor_field)
    return Plan(mode=mode, destination_mode="full_refresh" if new_reset else mode, run=run, new_reset=new_reset)


def bind(backend: CheckpointBackend, cfg: PipelineConfig, plan: Plan, job: JobRecord, resumed: bool) -> Plan:
    if plan.run is None:
        return plan
    key = _key(cfg)
    reset = plan.new_reset or (resumed and resets.reset_job_id(backend, *key) == job.id)
    if plan.new_reset:
        resets.consume_reset(backend, *key, job.id)
    if reset:
        log.info("stream reset: re-fetching the whole stream; the destination will be replaced")
        run = IncrementalRun(reset=True, cursor_field=cfg.source.cursor_field, run_started_at=job.created_at)
        return Plan(mode=plan.mode, destination_mode="full_refresh", run=run, new_reset=plan.new_reset)
    stored = load_watermark(backend, cfg)
    if stored is None:
        log.info("incremental: no previous successful run, fetching everything (the destination appends)")
        run = IncrementalRun(cursor_field=cfg.source.cursor_field, run_started_at=job.created_at)
    else:
        log.info("incremental: reading after %s=%r (last run %s)", cfg.source.cursor_field, stored.max, stored.last_run)
        run = IncrementalRun(
            watermark=stored.max,
            state={**(stored.state or {}), "watermark": stored.max},
            last_run=stored.last_run,
            run_started_at=job.created_at,
            cursor_field=cfg.source.cursor_field,
        )
    return Plan(mode=plan.mode, destination_mode=plan.destination_mode, run=run)


def _seen(cursors: list[Cursor]) -> Watermark | None:
    seen: Watermark | None = None
    for cursor in cursors:
        seen = fold(seen, cursor.watermark)
    return seen


def verify(cfg: PipelineConfig, plan: Plan | None, cursors: list[Cursor]) -> None:
    """Before publishing: a job that committed rows must have a ``cursor_field`` max to store.

    Storing None would make the next run read everything again (and append it again), so the job
    fails instead, with nothing published and the previous watermark kept.
    """
    field = cfg.source.cursor_field
    if plan is None or plan.run is None or not field:
        return
    rows = sum(c.rows for c in cursors)
    seen = _seen(cursors)
    if rows and (seen is None or seen.max is None):
        raise StepFailed(
            f"incremental: {rows} rows were read but source.cursor_field {field!r} had no value in any of them, "
            "so no watermark can be stored; nothing was published and the previous watermark is kept"
        )


def finish(backend: CheckpointBackend, cfg: PipelineConfig, plan: Plan, job: JobRecord, cursors: list[Cursor]) -> None:
    """On success only: the watermark moves to max(previous, this job's committed max)."""
    if plan.run is None:
        return
    verify(cfg, plan, cursors)  # the supervisor verified before publishing; a None max is never stored
    seen = _seen(cursors)
    previous = None if plan.run.reset else load_watermark(backend, cfg)
    stored = StoredWatermark(
        max=later(previous.max if previous else None, seen.max if seen else None),
        state=merge_states(previous.state if previous else None, seen.state if seen is not None else None),
        last_run=job.created_at,
        cursor_field=cfg.source.cursor_field,
    )
    backend.set_watermark(*_key(cfg), msgspec.msgpack.encode(stored), job.id)
    log.info("incremental: watermark %s=%r stored for the next run", cfg.source.cursor_field, stored.max)


def apply_to_source(source: Any, run: IncrementalRun | None) -> None:
    """Producer side: what the source reads after (``incremental`` for bizon sources, ``watermark`` for all)."""
    if run is None:
        return
    source.incremental = run
    source.watermark = None if run.reset else run.watermark
