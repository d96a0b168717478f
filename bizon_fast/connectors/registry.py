"""Find source and destination classes by name.

Sources live under ``connectors/sources/<name>/src/`` (bizon's layout); a custom source file is
loaded from its path. Destinations are a fixed table of built-ins.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

from bizon_fast.destination.base import Destination
from bizon_fast.errors import UserError
from bizon_fast.source.base import Source

SOURCES_PACKAGE = "bizon_fast.connectors.sources"

DESTINATIONS: dict[str, str] = {
    "noop": "bizon_fast.connectors.destinations.noop:NoopDestination",
    "logger": "bizon_fast.connectors.destinations.logger:LoggerDestination",
    "file": "bizon_fast.connectors.destinations.file:FileDestination",
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
    import bizon_fast.connectors.sources as pkg

    return sorted(
        m.name for m in pkgutil.iter_modules(pkg.__path__) if (Path(pkg.__path__[0]) / m.name / "src").is_dir()
    )


def _source_classes(module: ModuleType) -> list[type[Source]]:
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Source) and obj is not Source and not inspect.isabstract(obj) and obj.streams()
    ]


def _load_file(path: str) -> ModuleType:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"source.source_file_path: no such file: {path}")
    mod_name = f"bizon_fast_custom_source_{abs(hash(str(file.resolve())))}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def source_module(name: str) -> ModuleType:
    if name not in source_names():
        raise UserError(f"source.name: unknown source '{name}'; available: {', '.join(source_names())}")
    return importlib.import_module(f"{SOURCES_PACKAGE}.{name}.src.source")


def source_class(name: str, stream: str, source_file_path: str | None = None) -> type[Source]:
    """The class that serves ``stream``; raise UserError naming the config key when there is none."""
    module = _load_file(source_file_path) if source_file_path else source_module(name)
    classes = _source_classes(module)
    for cls in classes:
        if stream in cls.streams():
            return cls
    streams = sorted({s for cls in classes for s in cls.streams()})
    raise UserError(f"source.stream: unknown stream '{stream}' for source '{name}'; available: {', '.join(streams)}")


def destination_class(name: str) -> type[Destination]:
    if name not in DESTINATIONS:
        raise UserError(f"destination.name: unknown destination '{name}'; available: {', '.join(sorted(DESTINATIONS))}")
    module_name, _, attr = DESTINATIONS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
