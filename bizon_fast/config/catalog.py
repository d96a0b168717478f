"""What config validation needs to know about connectors, handed in rather than imported.

``config/`` sits below ``connectors/``: it may not import the registry (the registry imports
connector code, which imports config). Validation instead receives a :class:`ConnectorCatalog`
through pydantic's validation context::

    PipelineConfig.model_validate(raw, context={CONTEXT_KEY: catalog})

``bizon_fast.connectors.registry`` is the catalog of this install (built-in folders and plugins).
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ValidationInfo

from bizon_fast.config.capabilities import DestinationCapabilities

CONTEXT_KEY = "connectors"


class ConnectorCatalog(Protocol):
    """Names to config models and capabilities; cheap: it never needs a connector's implementation."""

    def source_names(self) -> list[str]:
        """Every source a pipeline can name."""
        ...

    def source_config_class(self, name: str, stream: str, source_file_path: str | None = None) -> type[BaseModel]:
        """The model of ``source:`` (a ``SourceConfig``) for this source and stream; raises
        :class:`~bizon_fast.config.source.SourceLookupError` naming the offending key."""
        ...

    def destination_names(self) -> list[str]:
        """Every destination a pipeline can name."""
        ...

    def destination_config_class(self, name: str) -> type[BaseModel] | None:
        """The model of ``destination.config`` (a ``DestinationDetails``; None when ``name`` is unknown)."""
        ...

    def destination_capabilities(self, name: str) -> DestinationCapabilities | None:
        """What destination ``name`` can do (None when it is unknown)."""
        ...


def catalog_from(info: ValidationInfo) -> ConnectorCatalog:
    """The catalog handed to ``model_validate``; a TypeError (a programming error) when there is none."""
    context: Any = info.context
    catalog = context.get(CONTEXT_KEY) if isinstance(context, dict) else None
    if catalog is None:
        raise TypeError(
            "validating a pipeline needs the connector catalog: "
            f"model_validate(data, context={{{CONTEXT_KEY!r}: bizon_fast.connectors.registry}})"
        )
    return catalog
