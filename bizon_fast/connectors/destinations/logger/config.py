"""Config and capabilities of the ``logger`` destination (bizon's debugging sink: a log line per record)."""

from __future__ import annotations

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import DestinationDetails


class LoggerDestinationDetails(DestinationDetails):
    dummy: str = "bizon"


#: the model of ``destination.config``
CONFIG_CLASS = LoggerDestinationDetails
#: a log line cannot be taken back: a replay logs again
CAPABILITIES = DestinationCapabilities(effectively_once=False)
