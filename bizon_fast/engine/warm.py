"""The run's own connectors, imported once in the fork server, so that no worker imports them after it starts.

Why: the fork server starts before the pipeline's config is loaded (its imports of the worker stack overlap the
supervisor's), so its preload (``bizon_fast.engine.preload``) cannot name the connectors. A producer of the
postgres source then spent ~110 ms after it started finding its class (bizon's rule: an AST parse of the
connector's files) and importing psycopg before its first query, and so did each consumer of a postgres
destination: on a 300k-row table that was a tenth of the run. The supervisor hands the pipeline file to the fork
server through the environment (:data:`WARM_ENV`); the fork server reads the YAML's source and destination names,
imports what those connectors declare (``WORKER_IMPORTS`` in their ``config.py``) and finds the source's class as a
worker would, and every worker it forks inherits all of it. For a custom source (``source_file_path`` or
``--custom-source``) or one of bizon's sources it imports bizon-fast's own ``bizon`` package (``compat/bizon``: the
``AbstractSource`` those files derive from, ~50-90 ms of a bizon producer's start), never the user's file.

Best effort by design: nothing here may fail or slow a run. A file that does not parse, a name that is not a
built-in connector, a user's source file or a real bizon (third-party code never runs in the fork server, which
must stay fit to fork), a connector that declares nothing: skipped. Loading the config reports every mistake.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any

#: the pipeline whose connectors the fork server imports (:func:`request`'s JSON); set only while the server starts
WARM_ENV = "BIZON_FAST_WARM_PIPELINE"

log = logging.getLogger(__name__)


def request(pipeline_file: str | os.PathLike[str], *, custom_source: bool = False) -> str:
    """The value of :data:`WARM_ENV` naming ``pipeline_file`` (and whether ``--custom-source`` replaces its source)."""
    return json.dumps({"pipeline": os.path.abspath(pipeline_file), "custom_source": custom_source})


def warm_from_env() -> list[str]:
    """Warm the connectors of the pipeline named by :data:`WARM_ENV` (removed: the workers need not see it)."""
    value = os.environ.pop(WARM_ENV, None)
    if not value:
        return []
    try:
        asked = json.loads(value)
        return warm(Path(asked["pipeline"]), custom_source=bool(asked.get("custom_source")))
    except Exception as exc:  # noqa: BLE001 - best effort: the run loads and checks its config itself
        log.debug("warming the connectors of %s: %s", value, exc)
        return []


def warm(path: Path, *, custom_source: bool = False) -> list[str]:
    """Import the built-in connectors ``path`` names and the libraries they declare; the modules imported."""
    from bizon_fast.config.load import read_pipeline_file
    from bizon_fast.connectors.discovery import source_origin
    from bizon_fast.connectors.registry import builtin_destination_names, source_class

    raw, _ = read_pipeline_file(path)
    source, destination = _block(raw, "source"), _block(raw, "destination")
    imported = []
    name, stream = source.get("name"), source.get("stream")
    origin = source_origin(name) if isinstance(name, str) else None
    if custom_source or source.get("source_file_path") or origin == "bizon":
        imported += _bizon_package()
    elif origin == "native":
        declared = _declared(f"bizon_fast.connectors.sources.{name}")
        if declared and isinstance(stream, str):  # only a connector that declares itself safe to import here
            source_class(name, stream)  # the AST parse of its folder, cached for every worker
        imported += declared
    name = destination.get("name")
    if isinstance(name, str) and name in builtin_destination_names():
        imported += _declared(f"bizon_fast.connectors.destinations.{name}")
    return imported


def _bizon_package() -> list[str]:
    """bizon-fast's ``bizon`` package, registered under bizon's names as a worker's source file would load it;
    nothing when a real bizon is installed (its code, a third party's, stays out of the fork server)."""
    from bizon_fast.compat import ALIAS, MODULES, install_bizon_alias

    return [ALIAS + suffix for suffix in MODULES] if install_bizon_alias() else []


def _block(raw: Any, key: str) -> dict[str, Any]:
    block = raw.get(key) if isinstance(raw, dict) else None
    return block if isinstance(block, dict) else {}


def _declared(connector: str) -> list[str]:
    """Import what a built-in connector's ``config.py`` declares its workers import (``WORKER_IMPORTS``)."""
    declared = getattr(importlib.import_module(f"{connector}.config"), "WORKER_IMPORTS", ())
    for module in declared:
        importlib.import_module(module)
    return list(declared)
