"""``config validate``: a pipeline file's verdict without running anything, with bizon's options.

bizon users check configs in CI with ``bizon config validate FILE``; switching to bizon-fast must not
change which files pass. The verdict is the loader's (:func:`~bizon_fast.config.load.load_config`,
the very checks ``run`` applies first), plus what bizon's command adds on top:

- ``--skip-references``: ``env://``/``gsm://`` references (and legacy ``BIZON_ENV_*`` values) are
  validated as the literal strings, and an error whose offending value is such a string is counted
  as "not type-checked" instead of failing, so a CI job without access to the secrets can still
  check everything else;
- warnings: keys that are accepted but change nothing the connector declares, and keys on their
  way out; ``--strict`` turns them into a failure.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bizon_fast.config.catalog import CONTEXT_KEY, ConnectorCatalog
from bizon_fast.config.load import load_config, load_env_file, parse_config, read_pipeline_file
from bizon_fast.config.messages import format_validation_error
from bizon_fast.config.paths import pipeline_folder, resolve_source_file
from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.config.secrets import LEGACY_ENV_PREFIX, find_references
from bizon_fast.config.source import SourceLookupError, source_config_classes
from bizon_fast.errors import ConfigError


@dataclass
class Verdict:
    """A valid pipeline: what it moves, and what ``config validate`` has to say about it."""

    source: str
    stream: str
    sync_mode: str
    destination: str
    #: errors skipped because the offending value is an unresolved reference (``--skip-references``)
    unchecked: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """``dummy.creatures (full_refresh) -> logger``: bizon's success line, after ``FILE is valid:``."""
        return f"{self.source}.{self.stream} ({self.sync_mode}) -> {self.destination}"


def validate_file(
    path: str | Path,
    *,
    connectors: ConnectorCatalog,
    env_file: str | Path | None = None,
    skip_references: bool = False,
) -> Verdict:
    """The verdict on the pipeline at ``path``; raises :class:`~bizon_fast.errors.ConfigError` when it is invalid.

    References are resolved as a run resolves them unless ``skip_references`` (then see the module's
    docstring). Relative paths are the file's, as for ``run``.
    """
    original, _ = read_pipeline_file(path)  # the YAML as written: what the warnings are about
    if skip_references:
        unchecked, cfg = _validate_unresolved(path, connectors, env_file)
    else:
        unchecked, cfg = 0, load_config(path, connectors=connectors, env_file=env_file)
    written = original.get("source") if isinstance(original.get("source"), dict) else {}
    if cfg is not None:
        line = (cfg.source.name, cfg.source.stream, cfg.source.sync_mode, cfg.destination.name)
        custom = cfg.source.source_file_path
    else:  # only references failed to validate: the names as written
        sync_mode = written.get("sync_mode") or "full_refresh"
        line = (written["name"], written["stream"], sync_mode, original["destination"]["name"])
        custom = resolve_source_file(original, pipeline_folder(path))["source"].get("source_file_path")
    # a connector may type its stream as an Enum: the line shows the value written (``occurrence``)
    source_name, stream, sync_mode, destination_name = (
        str(part.value if isinstance(part, Enum) else part) for part in line
    )
    return Verdict(
        source=source_name,
        stream=stream,
        sync_mode=sync_mode,
        destination=destination_name,
        unchecked=unchecked,
        warnings=_warnings(written, source_name, stream, custom, connectors),
    )


def is_unresolved_reference(value: Any) -> bool:
    """Whether ``value`` is a reference left as written: ``env://X``, ``gsm://...``, ``${...}`` or ``BIZON_ENV_X``."""
    if not isinstance(value, str):
        return False
    return value.startswith(LEGACY_ENV_PREFIX) or bool(find_references({"value": value}))


def _validate_unresolved(
    path: str | Path, connectors: ConnectorCatalog, env_file: str | Path | None
) -> tuple[int, PipelineConfig | None]:
    """Validate the file with its references as literal strings: (errors skipped, the config when none were).

    An error on any other value fails as it would in a run. Without such errors the config also goes
    through :func:`~bizon_fast.config.load.parse_config`'s checks beyond the models (integers, transforms).
    """
    load_env_file(env_file)
    origin = str(path)
    original, positions = read_pipeline_file(path)
    base = Path(os.path.abspath(pipeline_folder(path)))
    raw = resolve_source_file(copy.deepcopy(original), base)
    try:
        PipelineConfig.model_validate(raw, context={CONTEXT_KEY: connectors})
    except ValidationError as exc:
        skipped = [err for err in exc.errors() if is_unresolved_reference(err.get("input"))]
        if len(skipped) < exc.error_count():
            raise ConfigError(
                format_validation_error(
                    exc, origin=origin, connectors=connectors, positions=positions, data=raw, original=original
                )
            ) from None
        return len(skipped), None
    cfg = parse_config(
        raw, origin, connectors=connectors, positions=positions, original=original, base_dir=pipeline_folder(path)
    )
    return 0, cfg


def _declared_keys(model: type[BaseModel]) -> set[str]:
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(name)
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                keys.add(alias)
    return keys


def _warnings(written: dict[str, Any], name: str, stream: str, custom: Any, connectors: ConnectorCatalog) -> list[str]:
    """bizon's two warnings: ``source.reset: true`` written in the file, and ``source:`` keys no model declares."""
    warnings = []
    if written.get("reset") is True:
        warnings.append(
            "`source.reset: true` in a config resets the stream on every run until it is removed; "
            "use `bizon-fast run --reset FILE` or `bizon-fast stream reset FILE` for a one-off reset."
        )
    try:
        model, _ = source_config_classes(connectors, name, stream, custom if isinstance(custom, str) else None)
    except SourceLookupError:  # the config validated, so this is a reference-named source: nothing to compare
        return warnings
    unknown = sorted(key for key in written if key not in _declared_keys(model))
    if unknown:
        warnings.append(
            f"source keys not declared by {model.__name__} are not checked (ignored unless the source reads them "
            f"itself): {', '.join(unknown)}"
        )
    return warnings
