"""Find source and destination classes by name.

Sources live under ``connectors/sources/<name>/src/`` (bizon's layout); a custom source file is
loaded from its path. Destinations are a fixed table of built-ins.
"""

from __future__ import annotations

import importlib
import os

from bizon_fast.connectors.discovery import builtin_source_classes, builtin_source_names, custom_source_classes, pick
from bizon_fast.destination.base import Destination
from bizon_fast.errors import UserError
from bizon_fast.source.base import Source

DESTINATIONS: dict[str, str] = {
    "noop": "bizon_fast.connectors.destinations.noop:NoopDestination",
    "logger": "bizon_fast.connectors.destinations.logger:LoggerDestination",
    "file": "bizon_fast.connectors.destinations.file:FileDestination",
    "postgres": "bizon_fast.connectors.destinations.postgres:PostgresDestination",
    "bigquery": "bizon_fast.connectors.bigquery.load:BigQueryDestination",
    "bigquery_streaming_v2": "bizon_fast.connectors.bigquery.storage_write:BigQueryStreamingV2Destination",
    "bigquery_streaming": "bizon_fast.connectors.bigquery.insert_all:BigQueryStreamingDestination",
}

#: third-party destinations: the ``bizon_fast.destinations`` entry-point group, and
#: ``BIZON_FAST_DESTINATIONS="name=module:Class,..."`` for ad-hoc ones (workers inherit the environment)
PLUGIN_ENV = "BIZON_FAST_DESTINATIONS"


def _load_destination_plugins() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="bizon_fast.destinations"):
        DESTINATIONS.setdefault(ep.name, ep.value)
    for item in filter(None, (part.strip() for part in os.environ.get(PLUGIN_ENV, "").split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise UserError(f"{PLUGIN_ENV}: expected name=module:Class, got '{item}'")
        DESTINATIONS[name.strip()] = target.strip()


_load_destination_plugins()


def source_names() -> list[str]:
    """Built-in connectors: the folders of ``connectors/sources`` that have a ``src`` folder."""
    return builtin_source_names()


def source_class(name: str, stream: str, source_file_path: str | None = None) -> type[Source]:
    """The class that serves ``stream``; raise UserError naming the config key when there is none.

    Native sources and bizon-style ``AbstractSource`` classes are both found (bizon's AST rule, see
    :mod:`bizon_fast.connectors.discovery`); the latter come back wrapped in the bizon adapter.
    """
    if source_file_path:
        return pick(custom_source_classes(source_file_path), name, stream)
    if name not in source_names():
        raise UserError(f"source.name: unknown source '{name}'; available: {', '.join(source_names())}")
    return pick(builtin_source_classes(name), name, stream)


def destination_class(name: str) -> type[Destination]:
    if name not in DESTINATIONS:
        raise UserError(f"destination.name: unknown destination '{name}'; available: {', '.join(sorted(DESTINATIONS))}")
    module_name, _, attr = DESTINATIONS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
