"""Run custom sources written against bizon's import paths (``from bizon.source.source import AbstractSource``).

bizon-fast does not ship a top-level ``bizon`` package: installing one would shadow a real bizon in
the same environment. Instead, :func:`install_bizon_alias` registers the modules of
``bizon_fast.compat.bizon`` under their bizon names in ``sys.modules`` -- only when a custom source
file is loaded, and only when a real ``bizon`` is not importable (then the real one is used, and the
adapter accepts its classes just the same).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

ALIAS = "bizon"
COMPAT_PACKAGE = "bizon_fast.compat.bizon"

#: every module of the compatibility package, by its bizon name (parents before children)
MODULES = (
    "",
    ".source",
    ".source.auth",
    ".source.auth.authenticators",
    ".source.auth.authenticators.abstract_token",
    ".source.auth.authenticators.abstract_oauth",
    ".source.auth.authenticators.token",
    ".source.auth.authenticators.basic",
    ".source.auth.authenticators.oauth",
    ".source.auth.authenticators.cookies",
    ".source.auth.builder",
    ".source.auth.config",
    ".source.config",
    ".source.models",
    ".source.session",
    ".source.callback",
    ".source.source",
)


def real_bizon_available() -> bool:
    """True when ``import bizon`` would load something other than this compatibility package."""
    module = sys.modules.get(ALIAS)
    if module is not None:
        return not module.__name__.startswith(COMPAT_PACKAGE)
    return real_bizon_root() is not None


def real_bizon_root() -> Path | None:
    """The folder of an installed bizon, None when there is none (or it is this compatibility package).

    bizon 0.6.4 ships ``bizon/`` without an ``__init__.py``: it is a namespace package, so a folder is
    bizon when it holds ``source/source.py`` (a stray ``bizon/`` folder in the working directory does not).
    """
    module = sys.modules.get(ALIAS)
    if module is not None and module.__name__.startswith(COMPAT_PACKAGE):
        return None
    try:
        spec = importlib.util.find_spec(ALIAS)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "source" / "source.py").is_file():
            return Path(location)
    return None


def install_bizon_alias() -> bool:
    """Make ``import bizon.source...`` resolve to the compatibility package; False when a real bizon is used.

    Idempotent. Each module is registered under its bizon name as the very same module object, so
    ``bizon.source.source.AbstractSource is bizon_fast.compat.bizon.source.source.AbstractSource``.
    """
    if real_bizon_available():
        return False
    for suffix in MODULES:
        name = ALIAS + suffix
        if name not in sys.modules:
            sys.modules[name] = importlib.import_module(COMPAT_PACKAGE + suffix)
    return True


def abstract_source_classes() -> tuple[type, ...]:
    """bizon's ``AbstractSource`` classes loaded in this process: ours, plus a real bizon's when imported."""
    from bizon_fast.compat.bizon.source.source import AbstractSource

    classes: list[type] = [AbstractSource]
    real = sys.modules.get(f"{ALIAS}.source.source")
    other = getattr(real, "AbstractSource", None)
    if isinstance(other, type) and other is not AbstractSource:
        classes.append(other)
    return tuple(classes)
