"""Config of the ``synthetic`` source: a deterministic, generated table for benchmarks and tests."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from bizon_fast.config.source import SourceConfig

#: Arrow ``string`` arrays use int32 offsets: one batch's payload column must stay under 2 GiB.
MAX_PAYLOAD_BYTES_PER_BATCH = 2**31 - 1


class SyntheticSourceConfig(SourceConfig):
    """``rows`` ids in ``[0, rows)``, cut into ``splits`` contiguous ranges, ``batch_rows`` rows a batch.

    Every value is a pure function of ``(seed, id)``, so a resumed split regenerates the very same
    batches, and the same config always yields the same table.
    """

    model_config = ConfigDict(extra="forbid")  # a typo such as `row:` must not be silently ignored

    rows: int = Field(1_000_000, ge=0, description="rows in the whole table (ids 0..rows-1)")
    splits: int = Field(16, ge=1, description="contiguous id ranges read independently (capped at rows)")
    seed: int = Field(0, ge=0, lt=2**64, description="changes every generated value")
    payload_bytes: int = Field(32, ge=0, description="width of the printable `payload` string column (row width knob)")
    batch_rows: int = Field(65_536, ge=1, description="rows per batch; batches are aligned to the split start")

    @model_validator(mode="after")
    def _payload_fits_a_batch(self) -> SyntheticSourceConfig:
        if self.batch_rows * self.payload_bytes > MAX_PAYLOAD_BYTES_PER_BATCH:
            raise ValueError(
                f"batch_rows * payload_bytes = {self.batch_rows * self.payload_bytes} exceeds 2 GiB per batch; "
                "lower source.batch_rows or source.payload_bytes"
            )
        return self
