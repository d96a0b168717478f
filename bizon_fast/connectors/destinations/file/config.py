"""Config and capabilities of the ``file`` destination (NDJSON or Parquet, published atomically)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import DestinationDetails


class FileDestinationDetails(DestinationDetails):
    """``file``: NDJSON (bizon's layout) or a Parquet dataset, staged per job and published atomically."""

    format: Literal["json", "parquet"] = "json"
    fsync: bool = Field(
        False,
        description="fsync every part file and directory change: writes already survive a process crash "
        "(atomic renames); fsync makes them survive a power loss or kernel crash too, at a throughput cost",
    )


#: the model of ``destination.config``
CONFIG_CLASS = FileDestinationDetails
#: deterministic part names and atomic renames: a replay rewrites the same files
CAPABILITIES = DestinationCapabilities(effectively_once=True)
