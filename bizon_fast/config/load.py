"""Load a pipeline YAML into a PipelineConfig, with errors that name the YAML path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bizon_fast.config.models import PipelineConfig
from bizon_fast.errors import ConfigError


def _format_validation(path: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  {loc}: {err['msg']}")
    return f"{path}: invalid pipeline config\n" + "\n".join(lines)


def parse_config(raw: dict[str, Any], origin: str = "<config>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(origin, exc)) from None


def load_config(path: str | Path, *, workers: int | None = None) -> PipelineConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    cfg = parse_config(raw, str(path))
    if workers is not None:
        cfg.engine.runner.config.max_workers = workers
    return cfg
