"""Config and capabilities of the ``file`` destination (NDJSON or Parquet, published atomically)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import DestinationDetails
from bizon_fast.config.errors import fail
from bizon_fast.config.paths import PIPELINE_FOLDER
from bizon_fast.connectors.destinations.file.file_io import json_target


class FileDestinationDetails(DestinationDetails):
    """``file``: NDJSON (bizon's layout) or a Parquet dataset, staged per job and published atomically."""

    format: Literal["json", "parquet"] = "json"
    fsync: bool = Field(
        False,
        description="fsync every part file and directory change: writes already survive a process crash "
        "(atomic renames); fsync makes them survive a power loss or kernel crash too, at a throughput cost",
    )
    base_dir: Annotated[str | None, PIPELINE_FOLDER] = Field(
        None,
        description="the folder a relative destination_id is written in (relative to the pipeline file); "
        "default: the pipeline file's folder (the working directory for a config not read from a file)",
    )

    @model_validator(mode="after")
    def _json_writes_as_batches_come(self) -> FileDestinationDetails:
        """An NDJSON write is an append to the consumer's segment: no per-write cost to amortize, so by default
        (no ``buffer_size`` given) each batch is written as it arrives instead of after 50 MiB. Why: with a
        buffer, a consumer formats nothing until it holds 50 MiB; a bizon API pull of 1M records (~60 MiB) wrote
        87% of them in one write that began when its source was two batches from the end (traced: 0.56 s from
        the last page to the end of the run; 52 ms without the buffer). Parquet keeps it (a write is a file)."""
        if self.format == "json" and "buffer_size" not in self.model_fields_set:
            self.__dict__["buffer_size"] = 0.0  # a default, not a setting: left out of model_fields_set
        return self

    @model_validator(mode="after")
    def _merge_needs_parquet(self) -> FileDestinationDetails:
        """A merge writes a new Parquet snapshot of the dataset; an NDJSON file has no such publish."""
        if self.write_disposition == "merge" and self.format != "parquet":
            fail(
                type(self).__name__,
                [
                    (
                        ("write_disposition",),
                        "merge needs format: parquet (an NDJSON file can only be appended)",
                        "merge",
                    )
                ],
            )
        return self

    def target_path(self, stream: str) -> Path:
        """Where the output is published: ``destination_id`` (without one: the stream's name, e.g.
        ``creatures.json``) under ``base_dir``, as the NDJSON file or the Parquet dataset folder."""
        base = self.destination_id or stream
        name = base if self.format == "parquet" else json_target(base)
        return Path(os.path.abspath(os.path.join(self.base_dir or os.getcwd(), name)))

    def describe_output(self, source_name: str, stream: str) -> str:
        """The absolute path of the published output and its format (the target the destination computes)."""
        if self.format == "parquet":
            return f"{self.target_path(stream)}/ (Parquet dataset)"
        return f"{self.target_path(stream)} (NDJSON)"


#: the model of ``destination.config``
CONFIG_CLASS = FileDestinationDetails
#: deterministic part names and atomic renames: a replay rewrites the same files; merge and schema evolution
#: (format: parquet) publish a new snapshot of the dataset
CAPABILITIES = DestinationCapabilities(effectively_once=True, merge=True, schema_evolution=True)
