"""Pipeline config: bizon's YAML schema (models), loading with clear errors (load) and secret references (secrets)."""

from bizon_fast.config.load import load_config, parse_config, read_raw_config
from bizon_fast.config.models import PipelineConfig
from bizon_fast.config.secrets import find_references, resolve_reference, resolve_references

__all__ = [
    "PipelineConfig",
    "find_references",
    "load_config",
    "parse_config",
    "read_raw_config",
    "resolve_reference",
    "resolve_references",
]
