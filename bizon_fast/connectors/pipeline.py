"""Load a pipeline YAML validated against this install's connectors.

:mod:`bizon_fast.config.load` knows the YAML and its rules but not which connectors exist (``config/``
may not import ``connectors/``); these bind it to the :mod:`~bizon_fast.connectors.registry`, which
is what the CLI, the tests and the benchmarks load pipelines with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bizon_fast.config import load
from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.connectors import registry


def load_config(path: str | Path, **options: Any) -> PipelineConfig:
    """:func:`bizon_fast.config.load.load_config` (same options) with the registry as the catalog."""
    return load.load_config(path, connectors=registry, **options)


def parse_config(raw: dict[str, Any], origin: str = "<config>", **options: Any) -> PipelineConfig:
    """:func:`bizon_fast.config.load.parse_config` (same options) with the registry as the catalog."""
    return load.parse_config(raw, origin, connectors=registry, **options)
