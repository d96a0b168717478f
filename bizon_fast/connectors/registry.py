"""Find connectors by name: their config models and capabilities cheaply, their classes lazily.

A connector is a folder. Sources are the folders of ``connectors/sources/`` (``config.py``,
``source.py``, ``example.yml``; a custom source file is loaded from its path), then the installed
bizon's built-in sources, by their bizon names (``pip install 'bizon-fast[bizon]'``; a native folder
wins a name clash). Destinations are the folders of
``connectors/destinations/``: each folder's ``config.py`` declares ``CONFIG_CLASS`` (the model of
``destination.config``) and ``CAPABILITIES``, light modules that config validation reads without
importing the implementation; its ``destination.py`` holds the class, imported only to run.

Third-party destinations come from the ``bizon_fast.destinations`` entry-point group and
``BIZON_FAST_DESTINATIONS="name=module:Class,..."`` (workers inherit the environment); a plugin class
declares ``config_class`` and ``capabilities`` itself.

This module is the :class:`~bizon_fast.config.catalog.ConnectorCatalog` of this install: config
validation receives it (``model_validate(raw, context={CONTEXT_KEY: registry})``) rather than
importing it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from functools import cache
from pathlib import Path
from types import ModuleType

from bizon_fast.config.capabilities import DestinationCapabilities
from bizon_fast.config.destination import DestinationDetails
from bizon_fast.config.source import BizonSourceConfig, SourceConfig, SourceLookupError
from bizon_fast.connectors.discovery import (
    BIZON_EXTRA,
    SOURCES_PACKAGE,
    all_source_names,
    builtin_source_names,
    custom_source_classes,
    missing_bizon_source,
    pick,
    source_classes_by_name,
    source_origin,
)
from bizon_fast.destination.base import Destination
from bizon_fast.errors import UserError
from bizon_fast.source.base import Source

DESTINATIONS_PACKAGE = "bizon_fast.connectors.destinations"
PLUGIN_ENV = "BIZON_FAST_DESTINATIONS"
PLUGIN_GROUP = "bizon_fast.destinations"

_REGISTRY_ERROR = re.compile(r"^source\.(\w+): (.*)$", re.DOTALL)


# ---------------------------------------------------------------- sources


def source_names() -> list[str]:
    """Every source a pipeline can name: the folders of ``connectors/sources`` and the installed bizon's sources."""
    return all_source_names()


def native_source_names() -> list[str]:
    """bizon-fast's own source connectors: the folders of ``connectors/sources`` that have a ``config.py``."""
    return builtin_source_names()


def _unknown_source(name: str) -> str:
    available = ", ".join(source_names())
    missing = missing_bizon_source(name)
    if missing is not None:
        return f"{missing}; available: {available}"
    return f"unknown source '{name}'; available: {available}"


def source_class(name: str, stream: str, source_file_path: str | None = None) -> type[Source]:
    """The class that serves ``stream``; raise UserError naming the config key when there is none.

    Native sources and bizon-style ``AbstractSource`` classes are both found (bizon's AST rule, see
    :mod:`bizon_fast.connectors.discovery`); the latter come back wrapped in the bizon adapter.
    """
    if source_file_path:
        return pick(custom_source_classes(source_file_path), name, stream)
    if source_origin(name) is None:
        raise UserError(f"source.name: {_unknown_source(name)}")
    return pick(source_classes_by_name(name), name, stream)


def source_config_class(name: str, stream: str, source_file_path: str | None = None) -> type[SourceConfig]:
    """The model of ``source:`` for a source and stream; raise SourceLookupError naming the offending key.

    A built-in whose code cannot be imported (an optional library is missing) is validated with
    the model its folder's ``config.py`` declares (``CONFIG_CLASS``, for ``STREAMS``), else with
    bizon's common keys, so ``config check`` works without the extra; running it fails clearly.
    One of bizon's sources has no such declaration: it needs its code (bizon's extra) to validate.
    """
    origin = None if source_file_path else source_origin(name)
    if not source_file_path and origin is None:
        raise SourceLookupError("name", _unknown_source(name))
    try:
        return source_class(name, stream, source_file_path).get_config_class()
    except UserError as exc:
        match = _REGISTRY_ERROR.match(str(exc))
        key, message = (match.group(1), match.group(2)) if match else ("name", str(exc))
        raise SourceLookupError(key, message) from None
    except ImportError as exc:
        if source_file_path:
            raise SourceLookupError("source_file_path", f"cannot import {source_file_path}: {exc}") from None
        if origin == "bizon":
            raise SourceLookupError(
                "name", f"bizon's source '{name}' cannot be imported ({exc}); install it with {BIZON_EXTRA}"
            ) from None
        return _declared_source_config(name, stream)
    except Exception as exc:  # noqa: BLE001 - a user's custom source file failed to load
        if source_file_path:
            raise SourceLookupError(
                "source_file_path", f"cannot load {source_file_path}: {type(exc).__name__}: {exc}"
            ) from None
        raise


def _declared_source_config(name: str, stream: str) -> type[SourceConfig]:
    """The model a source folder's ``config.py`` declares, for when its code cannot be imported."""
    try:
        module = importlib.import_module(f"{SOURCES_PACKAGE}.{name}.config")
    except ImportError:
        return BizonSourceConfig
    streams = getattr(module, "STREAMS", None)
    if streams is not None and stream not in streams:
        raise SourceLookupError(
            "stream", f"unknown stream '{stream}' for source '{name}'; available: {', '.join(streams)}"
        )
    return getattr(module, "CONFIG_CLASS", BizonSourceConfig)


# ---------------------------------------------------------------- destinations


def builtin_destination_names() -> list[str]:
    """The folders of ``connectors/destinations`` that declare a destination (have a ``config.py``)."""
    root = Path(importlib.import_module(DESTINATIONS_PACKAGE).__path__[0])
    return sorted(p.name for p in root.iterdir() if (p / "config.py").is_file() and not p.name.startswith(("_", ".")))


@cache
def _entry_point_plugins() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP)}


def _plugins() -> dict[str, str]:
    """Plugin destinations, name -> ``module:Class``; the environment is read on every call."""
    plugins = {
        name: target for name, target in _entry_point_plugins().items() if name not in builtin_destination_names()
    }
    for item in filter(None, (part.strip() for part in os.environ.get(PLUGIN_ENV, "").split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise UserError(f"{PLUGIN_ENV}: expected name=module:Class, got '{item}'")
        plugins[name.strip()] = target.strip()
    return plugins


def destination_names() -> list[str]:
    return sorted(set(builtin_destination_names()) | set(_plugins()))


def _declaration(name: str) -> ModuleType:
    """A built-in destination's ``config.py`` (light: pydantic models and its capabilities)."""
    return importlib.import_module(f"{DESTINATIONS_PACKAGE}.{name}.config")


def destination_class(name: str) -> type[Destination]:
    plugins = _plugins()
    if name in plugins:
        module_name, _, attr = plugins[name].partition(":")
        return getattr(importlib.import_module(module_name), attr)
    if name not in builtin_destination_names():
        raise UserError(f"destination.name: unknown destination '{name}'; available: {', '.join(destination_names())}")
    module = importlib.import_module(f"{DESTINATIONS_PACKAGE}.{name}.destination")
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, Destination) and cls.__module__ == module.__name__ and cls.name == name:
            return cls
    raise UserError(f"destination '{name}': {module.__name__} defines no Destination class named '{name}'")


def destination_config_class(name: str) -> type[DestinationDetails] | None:
    """The model of ``destination.config`` (None when the name is unknown, or a plugin cannot be imported)."""
    if name in _plugins():
        try:
            return destination_class(name).config_class
        except (ImportError, AttributeError):
            return None
    if name in builtin_destination_names():
        return _declaration(name).CONFIG_CLASS
    return None


def destination_capabilities(name: str) -> DestinationCapabilities | None:
    """What destination ``name`` can do (None when the name is unknown, or a plugin cannot be imported)."""
    if name in _plugins():
        try:
            return destination_class(name).capabilities
        except (ImportError, AttributeError):
            return None
    if name in builtin_destination_names():
        return _declaration(name).CAPABILITIES
    return None
