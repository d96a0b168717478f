"""bizon's ``SourceConfig``: the ``source:`` block that connector config classes extend.

It is bizon-fast's typed source block (:class:`~bizon_fast.config.source.BizonSourceConfig`) with bizon's
enum-typed ``sync_mode`` and ``authentication``, so a config class written for bizon validates the same
YAML here and the engine sees the common keys it expects.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from bizon_fast.config.source import BizonSourceConfig

from .auth.config import AuthConfig


class SourceSyncModes(StrEnum):
    FULL_REFRESH = "full_refresh"
    INCREMENTAL = "incremental"
    STREAM = "stream"


class SourceConfig(BizonSourceConfig):
    sync_mode: SourceSyncModes = Field(SourceSyncModes.FULL_REFRESH, description="Sync mode to use")
    authentication: AuthConfig | None = Field(None, description="Configuration for the authentication")
