"""Source discovery by bizon's rules, for native sources and bizon-style ``AbstractSource`` classes alike.

bizon parses every ``.py`` file of a connector's ``src/`` folder (here: the connector's own folder) or the
custom-source file with ``ast``, takes every class whose base is a plain name as a candidate, imports the
module and keeps the concrete candidates that are sources and have streams; the first one serving the stream
wins. A bizon-style class is wrapped by :func:`~bizon_fast.source.bizon_adapter.adapter_for` so the engine
only ever sees the native :class:`~bizon_fast.source.base.Source` contract.

bizon's own built-in sources (``bizon/connectors/sources/<name>/src``) are found the same way when a
real bizon is installed (``pip install 'bizon-fast[bizon]'``): bizon is GPL-3.0, so bizon-fast ships none
of its code and only imports it from the user's environment. A native connector wins a name clash.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from bizon_fast.errors import UserError
from bizon_fast.source.base import Source
from bizon_fast.source.bizon_adapter import adapter_for, is_bizon_source_class

SOURCES_PACKAGE = "bizon_fast.connectors.sources"
BIZON_SOURCES_PACKAGE = "bizon.connectors.sources"
#: the install that brings bizon's built-in sources
BIZON_EXTRA = "pip install 'bizon-fast[bizon]'"
#: bizon 0.6.4's built-in sources, named even where bizon is not installed
BIZON_SOURCE_NAMES = (
    "cycle",
    "dummy",
    "gbif",
    "gsheets",
    "hubspot",
    "kafka",
    "notion",
    "periscope",
    "pokeapi",
    "sana_ai",
)
#: CPython 3.11's ``ast`` is not thread-safe: threads parsing at once (the thread runner's producers each
#: finding their source) fail with "AST constructor recursion depth mismatch"
_AST_LOCK = threading.Lock()


#: candidate names per file, keyed by (path, mtime, size): a run looks a connector up for its source class and
#: again for its config class, and parsing a folder's files is most of discovery's cost
_CANDIDATES: dict[tuple[str, int, int], list[str]] = {}
#: where bizon's ``AbstractSource`` lives (ours, or a real bizon's): a class can only derive from it once imported
_BIZON_SOURCE_MODULES = ("bizon_fast.compat.bizon.source.source", "bizon.source.source")


def candidate_class_names(path: Path) -> list[str]:
    """Names of the classes in ``path`` that derive from a plain name (bizon's AST rule), in file order."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _AST_LOCK:
        cached = _CANDIDATES.get(key)
        if cached is None:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            cached = _CANDIDATES[key] = [
                node.name
                for node in ast.walk(tree)
                if isinstance(node, ast.ClassDef) and any(isinstance(base, ast.Name) for base in node.bases)
            ]
        return list(cached)


def as_source_class(obj: object) -> type[Source] | None:
    """``obj`` as a runnable native Source class (bizon-style classes wrapped), None when it is not a source."""
    if isinstance(obj, type) and issubclass(obj, Source):
        if obj is Source or inspect.isabstract(obj):
            return None
        try:
            return obj if obj.streams() else None
        except Exception:  # noqa: BLE001 - a class whose streams() fails is not a usable source (bizon's rule)
            return None
    # only when bizon's base class is loaded at all: no class derives from it otherwise, and importing it for the
    # check would pull the compat package (requests, its auth models) into every native source's run
    if any(name in sys.modules for name in _BIZON_SOURCE_MODULES) and is_bizon_source_class(obj):
        return adapter_for(obj)  # type: ignore[arg-type]
    return None


def source_classes_in(module: ModuleType, path: Path) -> list[type[Source]]:
    found: list[type[Source]] = []
    for name in candidate_class_names(path):
        cls = as_source_class(getattr(module, name, None))
        if cls is not None and cls not in found:
            found.append(cls)
    return found


def load_custom_file(path: str) -> ModuleType:
    """Import a custom-source file once per process, with ``bizon`` importable when bizon is not installed."""
    from bizon_fast.compat import install_bizon_alias

    file = Path(path)
    if not file.is_file():
        raise UserError(f"source.source_file_path: no such file: {path}")
    if file.suffix != ".py":
        raise UserError(f"source.source_file_path: {path} is not a python file (expected a .py file)")
    mod_name = f"bizon_fast_custom_source_{abs(hash(str(file.resolve())))}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    install_bizon_alias()
    spec = importlib.util.spec_from_file_location(mod_name, file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]
        raise
    return module


def _source_dir(name: str) -> Path:
    import bizon_fast.connectors.sources as pkg

    return Path(pkg.__path__[0]) / name


def builtin_source_names() -> list[str]:
    import bizon_fast.connectors.sources as pkg

    root = Path(pkg.__path__[0])
    return sorted(p.name for p in root.iterdir() if (p / "config.py").is_file() and not p.name.startswith(("_", ".")))


def builtin_source_classes(name: str) -> list[type[Source]]:
    """Every source class of built-in connector ``name``: all ``**/*.py`` files of its folder, bizon's way.

    Files without a candidate class are not imported. An ImportError (a missing optional library)
    propagates: ``source list`` reports the connector as not available, a run fails with it.
    """
    return classes_in_folder(_source_dir(name), f"{SOURCES_PACKAGE}.{name}")


def classes_in_folder(src: Path, package: str) -> list[type[Source]]:
    """The source classes of the ``*.py`` files under ``src`` (the package ``package``), bizon's way:
    files without a candidate class are not imported; an ImportError propagates."""
    classes: list[type[Source]] = []
    for path in sorted(src.rglob("*.py")):
        if not candidate_class_names(path):
            continue
        dotted = ".".join(path.relative_to(src).with_suffix("").parts)
        module = importlib.import_module(f"{package}.{dotted}")
        classes += [cls for cls in source_classes_in(module, path) if cls not in classes]
    return classes


def bizon_sources_root() -> Path | None:
    """``bizon/connectors/sources`` of the installed bizon; None without one."""
    from bizon_fast.compat import real_bizon_root

    root = real_bizon_root()
    if root is None or not (root / "connectors" / "sources").is_dir():
        return None
    return root / "connectors" / "sources"


def bizon_source_names() -> list[str]:
    """bizon's built-in sources of the installed bizon (bizon's rule: a folder with a ``src/``), shadowed ones too."""
    root = bizon_sources_root()
    if root is None:
        return []
    return sorted(p.name for p in root.iterdir() if (p / "src").is_dir() and not p.name.startswith(("_", ".")))


def bizon_source_classes(name: str) -> list[type[Source]]:
    """Every source class of bizon's built-in source ``name``, wrapped in the adapter (bizon's discovery rule).

    An ImportError (a library of bizon's extra is missing) propagates, as for native connectors.
    """
    root = bizon_sources_root()
    if root is None:
        raise ImportError(f"bizon is not installed: {BIZON_EXTRA} brings bizon's source '{name}'")
    return classes_in_folder(root / name / "src", f"{BIZON_SOURCES_PACKAGE}.{name}.src")


def source_origin(name: str) -> str | None:
    """Who serves source ``name``: ``"native"`` (bizon-fast's folder, which wins a clash), ``"bizon"``, or None."""
    if name in builtin_source_names():
        return "native"
    if name in bizon_source_names():
        return "bizon"
    return None


def all_source_names() -> list[str]:
    """Every source a pipeline can name here: bizon-fast's folders and the installed bizon's sources."""
    return sorted(set(builtin_source_names()) | set(bizon_source_names()))


def source_classes_by_name(name: str) -> list[type[Source]]:
    """The classes of source ``name`` from whoever serves it (:func:`source_origin`); [] for an unknown name."""
    origin = source_origin(name)
    if origin == "native":
        return builtin_source_classes(name)
    if origin == "bizon":
        return bizon_source_classes(name)
    return []


def missing_bizon_source(name: str) -> str | None:
    """The one line for a bizon source name that this install cannot serve (bizon not installed), else None."""
    if name in BIZON_SOURCE_NAMES and source_origin(name) is None:
        return f"'{name}' is one of bizon's sources: {BIZON_EXTRA} brings it"
    return None


def custom_source_classes(path: str) -> list[type[Source]]:
    return source_classes_in(load_custom_file(path), Path(path))


def pick(classes: list[type[Source]], name: str, stream: str) -> type[Source]:
    for cls in classes:
        if cls.accepts_stream(stream):
            return cls
    streams = sorted({s for cls in classes for s in cls.streams()})
    raise UserError(
        f"source.stream: unknown stream '{stream}' for source '{name}'; available: {', '.join(streams) or 'none'}"
    )


@dataclass
class StreamInfo:
    name: str
    supports_incremental: bool


@dataclass
class SourceInfo:
    """What ``source list`` / ``stream list`` print about a connector."""

    name: str
    streams: list[StreamInfo] = field(default_factory=list)
    error: str | None = None  # why it is not available (an ImportError)
    #: "native" (bizon-fast's connector), "bizon" (the installed bizon's, through the adapter) or
    #: "missing" (one of bizon's names, bizon not installed)
    origin: str = "native"
    #: a native connector whose name the installed bizon also uses: bizon's is not used
    shadows_bizon: bool = False

    @property
    def available_streams(self) -> list[str]:
        return [s.name for s in self.streams]


def describe(name: str) -> SourceInfo:
    """What ``source list`` / ``stream list`` say about ``name`` (an unknown name comes back as "missing")."""
    origin = source_origin(name)
    if origin is None:
        return SourceInfo(name, error=missing_bizon_source(name) or f"unknown source '{name}'", origin="missing")
    shadows = origin == "native" and name in bizon_source_names()
    try:
        classes = source_classes_by_name(name)
    except ImportError as exc:
        return SourceInfo(name, error=str(exc), origin=origin, shadows_bizon=shadows)
    info = SourceInfo(name, origin=origin, shadows_bizon=shadows)
    for cls in classes:
        for stream in cls.streams():
            if stream not in info.available_streams:
                info.streams.append(StreamInfo(stream, bool(getattr(cls, "supports_incremental", False))))
    return info


def discover_all() -> dict[str, SourceInfo]:
    """Every source ``source list`` shows: the servable ones, and bizon's names this install lacks."""
    names = sorted(set(all_source_names()) | set(BIZON_SOURCE_NAMES))
    return {name: describe(name) for name in names}
