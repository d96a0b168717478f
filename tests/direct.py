"""One job straight through a destination class (no CLI, no engine): prepare, one write, publish.

Why: the merge, type and edge-rule tests check what a destination does with given batches; the engine around it
is covered by the CLI tests. One helper so every such test drives the destination's lifecycle the same way.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def run_job(
    destination: str,
    details: dict[str, Any],
    *,
    job: str,
    sync_mode: str,
    batches: list[pa.RecordBatch],
    cursor_field: str | None = None,
) -> None:
    """Run one job of ``destination`` (its registry name) configured by ``details``, closing it whatever happens."""
    from bizon_fast.connectors.registry import destination_class
    from bizon_fast.destination.base import DestinationContext

    cls = destination_class(destination)
    config = cls.config_class.model_validate(details)
    context = DestinationContext(
        job_id=job, pipeline="p", source_name="s", stream="e", sync_mode=sync_mode, cursor_field=cursor_field
    )
    d = cls(config, context)
    try:
        d.prepare({})
        d.write("a", 0, 0, batches)
        d.publish()
    finally:
        d.close()
