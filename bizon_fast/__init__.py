"""bizon-fast: a multiprocess, shared-memory extract-and-load engine that runs bizon pipelines."""

__version__ = "0.1.0"
