"""Config and capabilities of the ``logger`` destination (bizon's debugging sink: a log line per record)."""

from __future__ import annotations

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import DestinationDetails


class LoggerDestinationDetails(DestinationDetails):
    dummy: str = "bizon"

    def describe_output(self, source_name: str, stream: str) -> str:
        """Records become log lines: on the console (as bizon prints them) and in the run's log."""
        return "the console and the run's log, a line per record"


#: the model of ``destination.config``
CONFIG_CLASS = LoggerDestinationDetails
#: a log line cannot be taken back: a replay logs again
CAPABILITIES = DestinationCapabilities(effectively_once=False)
