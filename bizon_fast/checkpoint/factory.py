"""Build the checkpoint backend named by ``engine.backend``."""

from __future__ import annotations

from bizon_fast.checkpoint.base import CheckpointBackend
from bizon_fast.errors import UserError


def create_backend(backend_cfg) -> CheckpointBackend:  # noqa: ANN001 - BackendConfig, kept loose for extensions
    kind = backend_cfg.type
    if kind == "sqlite":
        from bizon_fast.checkpoint.sqlite import SqliteBackend

        return SqliteBackend(backend_cfg.config.database)
    if kind == "sqlite_in_memory":
        from bizon_fast.checkpoint.sqlite import SqliteBackend

        return SqliteBackend(None)
    if kind == "postgres":
        from bizon_fast.checkpoint.postgres import PostgresBackend

        return PostgresBackend(backend_cfg.config)
    if kind == "bigquery":
        from bizon_fast.checkpoint.bigquery import BigQueryBackend

        return BigQueryBackend(backend_cfg.config)
    raise UserError(f"engine.backend.type: '{kind}' is not available in this build yet")
