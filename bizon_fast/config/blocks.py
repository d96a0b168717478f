"""The base of every YAML block: unknown keys rejected, an empty block read as an empty mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from bizon_fast.config.catalog import ConnectorCatalog


def as_mapping(value: Any) -> Any:
    """``config:`` left empty in YAML is None; treat it as an empty block so defaults and required keys apply."""
    return {} if value is None else value


class Strict(BaseModel):
    """A block that rejects unknown keys (typos must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    @classmethod
    def child_model(cls, field: str, data: Any, connectors: ConnectorCatalog | None = None) -> type[BaseModel] | None:
        """The model validating ``field`` when it depends on a sibling (``data`` is this block's raw dict).

        None means "the field's annotation says". Used by the error formatter to list the keys a
        block accepts; the validators make the same choice. ``connectors`` is the
        :class:`~bizon_fast.config.catalog.ConnectorCatalog` for blocks chosen by a connector's name.
        """
        return None
