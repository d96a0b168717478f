"""The ``bigquery_streaming_v2`` destination: ``config.py`` (model and capabilities), ``destination.py`` (the class)."""
