"""Config and capabilities of the ``postgres`` destination (a table, data and cursors in one transaction)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import DestinationDetails
from bizon_fast.config.errors import fail, require_dsn_or


class PostgresDestinationDetails(DestinationDetails):
    """A Postgres table destination: a ``dsn``, or host/port/database/schema/username/password."""

    dsn: str | None = Field(None, repr=False)
    host: str | None = None
    port: int = Field(5432, ge=1, le=65535)
    database: str | None = None
    schema_name: str = Field("public", alias="schema")
    username: str | None = None
    password: str | None = Field(None, repr=False)
    lock_timeout: float = Field(
        60,
        gt=0,
        description="seconds a statement of the destination waits for a table lock (the full refresh's swap, "
        "an append, the stage's DDL) before the job fails, naming the session that holds it; nothing is published",
    )

    primary_key: Literal["auto", "none"] | list[str] = Field(  # type: ignore[assignment]
        "auto",
        description="the primary key of a table the destination creates (a full refresh, a new table, a merge's "
        "rebuild) and the key a merge upserts by: auto: the source's (the Postgres source reads it from the "
        "catalog), none: no primary key (a merge then fails: it needs a key), or a list of columns",
    )

    def check_keys(self) -> None:
        """Unlike other destinations, ``primary_key`` means something to every write disposition here (the key of
        the table created); ``deleted_flag`` still only to a merge, which needs a key."""
        title = type(self).__name__
        if self.write_disposition != "merge" and self.deleted_flag is not None:
            fail(title, [(("deleted_flag",), "deleted_flag applies to write_disposition: merge only", True)])
        if isinstance(self.primary_key, list) and not self.primary_key:
            fail(title, [(("primary_key",), "give at least one column (or auto, or none)", True)])
        if self.write_disposition == "merge" and self.primary_key == "none":
            fail(title, [(("primary_key",), "write_disposition: merge needs a key (auto or columns)", True)])

    @model_validator(mode="after")
    def _dsn_or_host(self) -> PostgresDestinationDetails:
        require_dsn_or(self, ("host", "database", "username"))
        return self

    def describe_output(self, source_name: str, stream: str) -> str:
        """``host:port/database schema.table``: the server as the connection rules resolve it, no user or password."""
        from bizon_fast.clients import postgres as pgconn

        schema, table = pgconn.split_name(self.destination_id or stream, self.schema_name)
        return f"{pgconn.where(pgconn.conninfo_of(self))} {schema}.{table}"


#: the model of ``destination.config``
CONFIG_CLASS = PostgresDestinationDetails
#: a batch and the record of its (split, seq) are written in one transaction: a replay is skipped;
#: merge by key (INSERT ... ON CONFLICT from the stage at publish) and schema evolution (ALTER TABLE at publish)
CAPABILITIES = DestinationCapabilities(effectively_once=True, merge=True, schema_evolution=True)
#: what this connector's workers import, imported once by the fork server when a run uses it (engine/warm.py)
WORKER_IMPORTS = ("bizon_fast.connectors.destinations.postgres.destination", "psycopg")
