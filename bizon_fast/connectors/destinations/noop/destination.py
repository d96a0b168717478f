"""The ``noop`` destination: counts and discards. It measures the engine without any sink cost.

Discarding is trivially idempotent, so it is effectively-once: a replay cannot duplicate anything.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from bizon_fast.config.destination import DestinationDetails
from bizon_fast.connectors.destinations.noop.config import CAPABILITIES, NoopDestinationDetails
from bizon_fast.destination.base import Destination, DestinationContext

logger = logging.getLogger("bizon_fast.destination.noop")


class NoopDestination(Destination):
    name = "noop"
    config_class = NoopDestinationDetails
    capabilities = CAPABILITIES

    def __init__(self, config: DestinationDetails, context: DestinationContext) -> None:
        super().__init__(config, context)
        #: what this instance (one consumer process) was handed
        self.rows = 0
        self.batches = 0
        self.writes = 0

    def check(self) -> str:
        return "discards records: nothing to reach"

    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        self.writes += 1
        self.batches += len(batches)
        self.rows += sum(batch.num_rows for batch in batches)

    def close(self) -> None:
        if self.writes:
            logger.debug(
                "noop destination (%s): discarded %d rows in %d batches over %d writes",
                self.context.worker,
                self.rows,
                self.batches,
                self.writes,
            )
