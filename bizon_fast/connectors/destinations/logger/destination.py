"""The ``logger`` destination: bizon's debugging sink, one INFO log line per record.

Lines read ``[{sync_mode}] {source_data}`` like bizon 0.6.4's (``[full_refresh] {...}``; bizon 0.5.2 on
Python 3.11 printed the enum, ``[SourceSyncModes.FULL_REFRESH]``), and the end of the job is bizon's line
too (``Logger destination: FULL_REFRESH sync completed``). Every process of a run prints this logger's
records on the console as well as into the run's log (``engine/logformat.py`` ``CONSOLE_LOGGER``): a
bizon user watches them scroll by. Logging one line per record is inherently per-record work, so this sink
is for small runs, not throughput.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from bizon_fast.config.destination import DestinationDetails
from bizon_fast.connectors.destinations.envelope import source_data
from bizon_fast.connectors.destinations.logger.config import CAPABILITIES, LoggerDestinationDetails
from bizon_fast.destination.base import Destination, DestinationContext

logger = logging.getLogger("bizon_fast.destination.logger")  # engine/logformat.py CONSOLE_LOGGER prints it

#: bizon 0.6.4's last line of a job, by sync mode
FINISHED = {
    "full_refresh": "Logger destination: FULL_REFRESH sync completed",
    "incremental": "Logger destination: INCREMENTAL sync completed (records appended)",
    "stream": "Logger destination: STREAM sync batch completed",
}


class LoggerDestination(Destination):
    name = "logger"
    config_class = LoggerDestinationDetails
    capabilities = CAPABILITIES

    def __init__(self, config: DestinationDetails, context: DestinationContext) -> None:
        super().__init__(config, context)

    def check(self) -> str:
        return "logs records at INFO: nothing to reach"

    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        mode = self.context.sync_mode
        for batch in batches:
            if batch.num_rows:
                for text in source_data(batch).to_pylist():
                    logger.info("[%s] %s", mode, text)

    def publish(self) -> None:
        mode = self.context.sync_mode
        logger.info("%s", FINISHED.get(mode, f"Logger destination: {mode} sync completed"))
