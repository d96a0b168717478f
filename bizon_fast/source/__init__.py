from bizon_fast.source.base import Source, SourceBatch, SourceConfig, Split

__all__ = ["Source", "SourceBatch", "SourceConfig", "Split"]
