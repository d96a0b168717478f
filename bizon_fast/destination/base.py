"""The destination contract.

Consumers call ``write`` for a run of consecutive batches of one split; when it returns, those
batches are durable and the supervisor may commit the split's cursor up to ``last_seq``. A write
must be idempotent by (split, seq range): a replay after a crash rewrites the same batches and must
not leave them twice (effectively-once) -- or the destination must say it is at-least-once in its
``capabilities``.

The supervisor calls ``prepare`` once before any worker starts and ``publish`` once after every
split is done and committed. Staged data of a failed or interrupted job is kept so it can resume.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import msgspec
import pyarrow as pa

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import DestinationDetails


class DestinationContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a destination needs to know about the job; msgpack-encodable so workers can receive it."""

    job_id: str
    pipeline: str
    source_name: str
    stream: str
    sync_mode: str  # full_refresh | incremental | stream
    worker: str = "supervisor"  # e.g. "consumer-3"
    #: ``source.cursor_field`` when set (merge: the last version of a key is the one with the greatest cursor,
    #: then the last to arrive); None otherwise
    cursor_field: str | None = None
    #: threads a consumer's destination may spend on its own CPU work (formatting json lines): the cores the run
    #: leaves to each consumer. One consumer on a 2-core machine gets 2; a run with a consumer per core gets 1,
    #: so a large VM is never oversubscribed by formatting threads.
    threads: int = 1


class Destination(ABC):
    name: ClassVar[str] = ""
    #: the model that validates ``destination.config`` for this destination
    config_class: ClassVar[type[DestinationDetails]] = DestinationDetails
    #: what it can do (exactly-once, bizon's wrapper keys, reset...); built-ins declare it in their folder's config.py
    capabilities: ClassVar[DestinationCapabilities] = DestinationCapabilities()
    #: rows over bizon's large-row threshold this destination made durable (cumulative): the consumer reports
    #: its growth with each write, and ``monitoring: datadog`` sends it as ``bizon_pipeline.large_records``.
    #: Only the BigQuery streaming destinations count them (bizon loaded such rows apart); the others keep 0.
    large_rows: int = 0
    #: the schema changes ``publish`` applied to the target (one line each, e.g. "column note added (text;
    #: existing rows null)"): the supervisor records them with the job (``bizon-fast jobs show``) and names
    #: them in the run's summary. Empty when nothing changed or the destination does not evolve schemas.
    schema_changes: list[str]

    def __init__(self, config: DestinationDetails, context: DestinationContext) -> None:
        self.config = config
        self.context = context
        self.schema_changes = []

    def check_connection(self) -> None:
        """Raise UserError with a clear message when the destination cannot be written (run by the supervisor)."""

    def check(self) -> str:
        """``bizon-fast check``: probe, writing nothing, that a run could write here; return what was reached.

        Unlike ``check_connection`` (the run's, which may create the schema, a folder or a dataset), a probe
        leaves no trace: it reads catalogs and privileges, or writes a temporary file it removes. Raise
        (a UserError, ideally) with a clear message when a run would fail. Destinations that do not
        override it have nothing to probe, and say so.
        """
        return "no probe for this destination (it defines no check())"

    def prepare(self, committed: dict[str, int]) -> None:
        """Supervisor, once per run: drop staged data of batches past each split's committed seq."""

    @abstractmethod
    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        """Make batches first_seq..last_seq of split_id durable (consumer process)."""

    def publish(self) -> None:
        """Supervisor, once, after every split is done: swap a full refresh in, append an incremental."""

    def close(self) -> None:
        """Release resources (connections, open files)."""
