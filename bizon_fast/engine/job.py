"""Find or create the job of a run: resume an unfinished job of the same pipeline, or start a new one."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from bizon_fast.checkpoint.base import CheckpointBackend, JobRecord, JobStatus
from bizon_fast.checkpoint.bizon_state import carry_over
from bizon_fast.cursor import Cursor

log = logging.getLogger("bizon_fast.job")


def fingerprint(source_cfg: dict[str, Any], destination_name: str, destination_cfg: dict[str, Any]) -> str:
    """Identity of the work: a job resumes only if what it reads and where it writes are unchanged."""
    payload = json.dumps(
        [_without_secrets(source_cfg), destination_name, _without_secrets(destination_cfg)], sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


SECRET_KEYS = {"authentication", "password", "token", "service_account_key"}
#: keys that change how long a run waits or how it groups its writes, not what it reads or writes
WAIT_KEYS = {"lock_timeout", "buffer_size", "buffer_flush_timeout"}


def _without_secrets(block: Any) -> Any:
    """Rotating a credential must not change the job's identity (and so cancel a resumable job); nor must
    raising ``lock_timeout`` after a job failed on a held lock, so the rerun resumes instead of starting over,
    nor a changed write buffer (``buffer_size``): the rows and where they go are the same."""
    if isinstance(block, dict):
        return {k: _without_secrets(v) for k, v in block.items() if k not in SECRET_KEYS and k not in WAIT_KEYS}
    if isinstance(block, list):
        return [_without_secrets(v) for v in block]
    return block


@dataclass
class ResolvedJob:
    job: JobRecord
    cursors: dict[str, Cursor]
    resumed: bool


def replaced_because(old: JobRecord, *, fp: str, sync_mode: str, force_new: bool) -> str | None:
    """Why unfinished job ``old`` is replaced by a new one instead of resumed, or None: resume it.

    One rule for the run (``resolve_job``) and for the dry run's outlook (``probe.py``), so what
    ``--dry-run`` announces is what the run then does.
    """
    if force_new:
        return "force_ignore_checkpoint"
    if old.fingerprint != fp or old.sync_mode != sync_mode:
        return "config changed"
    return None


def resolve_job(
    backend: CheckpointBackend,
    *,
    name: str,
    source_name: str,
    stream: str,
    sync_mode: str,
    fp: str,
    total_rows: int | None,
    force_new: bool,
) -> ResolvedJob:
    # a pipeline bizon ran, new to bizon-fast: import bizon's last success and interrupted job (bizon_state.py)
    carry_over(
        backend,
        name=name,
        source_name=source_name,
        stream=stream,
        sync_mode=str(getattr(sync_mode, "value", sync_mode)),
        fingerprint=fp,
        total_rows=total_rows,
        resume=not force_new,
    )
    old = backend.find_unfinished_job(name, source_name, stream)
    if old is not None:
        why = replaced_because(old, fp=fp, sync_mode=sync_mode, force_new=force_new)
        if why == "force_ignore_checkpoint":
            log.warning("force_ignore_checkpoint: cancelling unfinished job %s and starting over", old.id)
            backend.set_job_status(old.id, JobStatus.CANCELLED, "replaced (force_ignore_checkpoint)")
        elif why == "config changed":
            log.warning("the config changed since unfinished job %s: cancelling it and starting over", old.id)
            backend.set_job_status(old.id, JobStatus.CANCELLED, "replaced (config changed)")
        else:
            job = backend.start_attempt(old.id)
            return ResolvedJob(job, backend.load_cursors(job.id), resumed=True)
    job = backend.create_job(
        name=name,
        source_name=source_name,
        stream_name=stream,
        sync_mode=sync_mode,
        fingerprint=fp,
        total_rows=total_rows,
    )
    return ResolvedJob(job, {}, resumed=False)
