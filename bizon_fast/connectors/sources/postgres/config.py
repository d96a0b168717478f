"""Config of the ``postgres`` source: a table (``stream``) or a ``query``, read in parallel key or block ranges."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from bizon_fast.config.source import SourceConfig


class PostgresSourceConfig(SourceConfig):
    """Connection by ``dsn`` or bizon-style keys; ``stream`` names the table (``schema.table`` allowed).

    With ``query`` the stream is only a label and the query's rows are read instead of a table.
    """

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    dsn: str | None = Field(None, repr=False, description="libpq connection string or postgresql:// URL")
    host: str | None = None
    port: int = Field(5432, ge=1, le=65535)
    database: str | None = None
    schema_name: str = Field("public", alias="schema", description="schema of an unqualified stream")
    username: str | None = None
    password: str | None = Field(None, repr=False)
    query: str | None = Field(None, description="read the rows of this SELECT instead of the table named by stream")
    split_column: str | None = Field(
        None,
        description="integer column to cut splits and chunks by (default: the table's single-column integer "
        "primary key; without one a table is cut into block ranges, a query is read as one split)",
    )
    splits: int = Field(16, ge=1, description="independent ranges read in parallel (more than workers)")
    chunk_rows: int | None = Field(
        None, ge=1, description="rows fetched per query (default: about 4 MiB worth, from the table's row width)"
    )

    @model_validator(mode="after")
    def _dsn_or_host(self) -> PostgresSourceConfig:
        if not self.dsn:
            missing = [k for k in ("host", "database", "username") if not getattr(self, k)]
            if missing:
                raise ValueError(f"missing {', '.join(missing)} (or give a dsn: postgresql://user:pass@host/db)")
        if self.sync_mode == "incremental" and not self.cursor_field:
            raise ValueError("sync_mode incremental needs cursor_field (the column that grows with new rows)")
        if self.sync_mode == "stream":
            raise ValueError("the postgres source reads tables: use sync_mode full_refresh or incremental")
        return self


#: what this connector's workers import, imported once by the fork server when a run uses it (engine/warm.py):
#: the implementation, the catalog's client and the ADBC driver that reads the chunks
WORKER_IMPORTS = (
    "bizon_fast.connectors.sources.postgres.source",
    "psycopg",
    "adbc_driver_manager",
    "adbc_driver_postgresql",
)
