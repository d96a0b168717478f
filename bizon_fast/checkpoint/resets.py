"""Stream-reset requests (``bizon-fast stream reset``), kept in the backend's watermark store.

A request is a small record under a reserved stream key next to the stream's watermark, so every
checkpoint backend that stores watermarks supports resets without a table of its own. It is pending
until a run consumes it (``job_id`` set, like bizon's ``consumed_by_job_id``) or ``--cancel`` clears it.
A consumed request keeps the id of the job that consumed it, so a reset run that crashes resumes as
a reset (bizon's ``bind_stream_reset_to_job``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from bizon_fast.checkpoint.base import CheckpointBackend

#: appended to the stream name to form the key of its reset record
RESET_KEY_SUFFIX = "::reset"


class ResetRequest(msgspec.Struct, kw_only=True):
    requested_at: datetime
    consumed_at: datetime | None = None
    job_id: str | None = None  # the job that consumed it; None while pending or when cancelled
    cancelled: bool = False

    @property
    def pending(self) -> bool:
        return self.consumed_at is None


def _key(stream: str) -> str:
    return f"{stream}{RESET_KEY_SUFFIX}"


def get_reset(backend: CheckpointBackend, name: str, source: str, stream: str) -> ResetRequest | None:
    raw = backend.get_watermark(name, source, _key(stream))
    return None if raw is None else msgspec.msgpack.decode(raw, type=ResetRequest)


def _put(backend: CheckpointBackend, name: str, source: str, stream: str, request: ResetRequest) -> None:
    backend.set_watermark(name, source, _key(stream), msgspec.msgpack.encode(request), request.job_id or "")


def pending_reset(backend: CheckpointBackend, name: str, source: str, stream: str) -> bool:
    request = get_reset(backend, name, source, stream)
    return request is not None and request.pending


def request_reset(backend: CheckpointBackend, name: str, source: str, stream: str) -> None:
    _put(backend, name, source, stream, ResetRequest(requested_at=datetime.now(UTC)))


def cancel_resets(backend: CheckpointBackend, name: str, source: str, stream: str) -> int:
    """Cancel the pending request; the number cancelled (0 or 1)."""
    request = get_reset(backend, name, source, stream)
    if request is None or not request.pending:
        return 0
    cancelled = ResetRequest(requested_at=request.requested_at, consumed_at=datetime.now(UTC), cancelled=True)
    _put(backend, name, source, stream, cancelled)
    return 1


def consume_reset(backend: CheckpointBackend, name: str, source: str, stream: str, job_id: str) -> None:
    """Bind the reset (a pending request, or ``source.reset``/``--reset``) to the job that performs it."""
    request = get_reset(backend, name, source, stream)
    requested_at = request.requested_at if request is not None and request.pending else datetime.now(UTC)
    _put(
        backend,
        name,
        source,
        stream,
        ResetRequest(requested_at=requested_at, consumed_at=datetime.now(UTC), job_id=job_id),
    )


def reset_job_id(backend: CheckpointBackend, name: str, source: str, stream: str) -> str | None:
    """The job that consumed the latest reset (None when none did)."""
    request = get_reset(backend, name, source, stream)
    return None if request is None else request.job_id
