from bizon_fast.config.load import load_config, parse_config
from bizon_fast.config.models import PipelineConfig

__all__ = ["PipelineConfig", "load_config", "parse_config"]
