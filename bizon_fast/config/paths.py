"""Relative paths in a pipeline file are relative to that file, not to the folder the command runs in.

A pipeline that writes ``out/events`` and checkpoints in ``bizon.sqlite3`` must land in the same place
whether it is run as ``bizon-fast run pipeline.yml`` from its folder, as ``bizon-fast run
jobs/pipeline.yml`` from the repository root, or from cron with yet another working directory.

Fields that hold a local path say so in their annotation, with :data:`LOCAL_PATH` (or
:data:`PIPELINE_FOLDER` for a folder that defaults to the pipeline file's own)::

    path: Annotated[str, LOCAL_PATH]

and :func:`resolve_paths` rewrites those fields of a validated config once, after validation, to
absolute paths (the only place that knows the pipeline file's folder). Config classes therefore stay
ordinary models, and the values that travel to worker processes are already absolute. What is left
as written: absolute paths, URIs (``s3://``, ``gs://``, ``file://``), inline JSON (a key given by its
content rather than its file), empty values, and every path of a config that was not read from a file.
``source.source_file_path`` is resolved before validation by :func:`resolve_source_file` instead,
because validation imports that file to learn the source's config class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class LocalPathMarker:
    """Field metadata: the value is a local filesystem path, relative to the pipeline file's folder.

    ``default_here``: an unset value (None) becomes the pipeline file's folder itself.
    """

    default_here: bool = False


#: a path to a file or folder, relative to the pipeline file's folder (``Annotated[str, LOCAL_PATH]``)
LOCAL_PATH = LocalPathMarker()
#: a folder relative to the pipeline file's folder; unset means that folder
PIPELINE_FOLDER = LocalPathMarker(default_here=True)


def pipeline_folder(config_file: str | Path) -> Path:
    """The absolute folder of a pipeline file: what its relative paths are relative to."""
    return Path(os.path.abspath(config_file)).parent


def resolve_path(value: str, base: Path) -> str:
    """``value`` against ``base`` when it is a relative local path; anything else is returned unchanged."""
    text = value.strip()
    if not text or text.startswith("{") or "://" in text:  # empty, an inline JSON key, or a URI
        return value
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    return os.path.normpath(os.path.join(base, expanded))


def resolve_source_file(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """``raw`` (an unvalidated config) with ``source.source_file_path`` resolved; ``raw`` itself is not changed.

    Validation imports the custom source to find its config class, so it must see the resolved path.
    """
    source = raw.get("source")
    if not (isinstance(source, dict) and isinstance(source.get("source_file_path"), str)):
        return raw
    return {**raw, "source": {**source, "source_file_path": resolve_path(source["source_file_path"], base)}}


def resolve_paths(config: BaseModel, base: Path) -> None:
    """Rewrite every field marked with :class:`LocalPathMarker`, anywhere in ``config``, against ``base``."""
    for name, info in type(config).model_fields.items():
        value = getattr(config, name, None)
        marker = next((m for m in info.metadata if isinstance(m, LocalPathMarker)), None)
        if marker is not None:
            if isinstance(value, str):
                setattr(config, name, resolve_path(value, base))
            elif value is None and marker.default_here:
                setattr(config, name, str(base))
            continue
        _resolve_in(value, base)


def _resolve_in(value: Any, base: Path) -> None:
    if isinstance(value, BaseModel):
        resolve_paths(value, base)
    elif isinstance(value, dict):
        for item in value.values():
            _resolve_in(item, base)
    elif isinstance(value, list | tuple):
        for item in value:
            _resolve_in(item, base)
