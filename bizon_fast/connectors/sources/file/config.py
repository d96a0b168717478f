"""Config of the ``file`` source: Parquet, CSV and NDJSON files named by a glob, local or in S3 / GCS."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bizon_fast.config.paths import LOCAL_PATH
from bizon_fast.config.source import SourceConfig

Format = Literal["auto", "parquet", "csv", "ndjson"]


class CsvOptions(BaseModel):
    """How CSV files are parsed (pyarrow's ReadOptions / ParseOptions / ConvertOptions)."""

    model_config = ConfigDict(extra="forbid")

    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = Field(True, description="the first line names the columns (else they are f0, f1, ...)")
    quote_char: str | Literal[False] = Field('"', description="false: no quoting")
    escape_char: str | Literal[False] = False
    double_quote: bool = True
    encoding: str = Field("utf-8", description="an ASCII-compatible encoding (utf-8, latin-1, cp1252...)")
    null_values: list[str] | None = Field(None, description="strings read as null (default: pyarrow's list)")
    newlines_in_values: bool = Field(
        False, description="quoted values may hold line breaks: files are then read whole (not cut in byte ranges)"
    )

    @field_validator("quote_char", "escape_char")
    @classmethod
    def _one_char(cls, value: str | bool) -> str | bool:
        if value is not False and (not isinstance(value, str) or len(value) != 1):
            raise ValueError("must be one character (or false)")
        return value

    @field_validator("encoding")
    @classmethod
    def _ascii_compatible(cls, value: str) -> str:
        try:
            ascii_compatible = "\n,".encode(value) == b"\n,"
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        if not ascii_compatible:
            raise ValueError(f"encoding {value!r} is not ASCII-compatible (lines are cut at byte 0x0a)")
        return value


class FileSourceConfig(SourceConfig):
    """``stream`` is a name for the rows; ``path`` names the files (a glob; ``**`` crosses folders).

    Object store keys (``endpoint_override``, ``region``, ``access_key_id``...) are read by
    ``filesystems.open_filesystem``; without them each cloud's usual credential chain applies.
    """

    model_config = ConfigDict(extra="forbid")

    path: Annotated[str, LOCAL_PATH] = Field(
        description="local path (relative to the pipeline file), file://, s3:// or gs:// URI; *, ?, [..] and ** globs"
    )
    format: Format = Field("auto", description="auto: by extension (.parquet/.pq, .csv, .json/.jsonl/.ndjson)")
    csv: CsvOptions = Field(default_factory=CsvOptions)
    column_types: dict[str, str] = Field(
        default_factory=dict,
        description="Arrow type of a column (int64, float64, string, bool, date32, timestamp[us], "
        "timestamp[us, tz=UTC], decimal128(p, s)...), instead of the one inferred or stored",
    )
    on_bad_rows: Literal["fail", "skip"] = Field(
        "fail", description="a CSV/NDJSON line that cannot be parsed: fail the job (naming file and offset) or skip it"
    )
    split_size_mb: float = Field(
        64, gt=0, description="a file larger than this is read as several splits (row groups or byte ranges)"
    )
    chunk_mb: float = Field(4, gt=0, description="bytes of CSV/NDJSON parsed at a time (one batch)")

    # object stores (read by filesystems.open_filesystem)
    endpoint_override: str | None = Field(None, description="S3/GCS endpoint, http(s)://host:port (emulators, MinIO)")
    region: str | None = None
    access_key_id: str | None = Field(None, repr=False)
    secret_access_key: str | None = Field(None, repr=False)
    session_token: str | None = Field(None, repr=False)
    anonymous: bool = False
    project: str | None = Field(None, description="GCS project")
    credentials: Annotated[str | None, LOCAL_PATH] = Field(
        None, repr=False, description="GCS service account key: a file path or its JSON"
    )

    @model_validator(mode="after")
    def _modes(self) -> FileSourceConfig:
        if self.sync_mode == "stream":
            raise ValueError("the file source reads files: use sync_mode full_refresh or incremental")
        if self.cursor_field:
            raise ValueError(
                "the file source is incremental by files (new or changed ones are read): remove cursor_field"
            )
        return self


CONFIG_CLASS = FileSourceConfig
