"""Build sources and destinations from their resolved config blocks (in the supervisor or a worker)."""

from __future__ import annotations

from typing import Any

from bizon_fast.connectors.registry import destination_class, source_class
from bizon_fast.destination.base import Destination, DestinationContext
from bizon_fast.source.base import Source


def build_source(source_cfg: dict[str, Any]) -> Source:
    cls = source_class(source_cfg["name"], source_cfg["stream"], source_cfg.get("source_file_path"))
    return cls(cls.get_config_class().model_validate(source_cfg))


def build_destination(name: str, details: dict[str, Any], context: DestinationContext) -> Destination:
    cls = destination_class(name)
    return cls(cls.config_class.model_validate(details), context)
