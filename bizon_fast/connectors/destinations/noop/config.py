"""Config and capabilities of the ``noop`` destination (counts and discards)."""

from __future__ import annotations

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import DestinationDetails


class NoopDestinationDetails(DestinationDetails):
    def describe_output(self, source_name: str, stream: str) -> str:
        """Nothing is kept: say so, so a summary is never mistaken for a load."""
        return "discarded (noop destination)"


#: the model of ``destination.config``
CONFIG_CLASS = NoopDestinationDetails
#: discarding is trivially idempotent: a replay cannot duplicate anything
CAPABILITIES = DestinationCapabilities(effectively_once=True)
