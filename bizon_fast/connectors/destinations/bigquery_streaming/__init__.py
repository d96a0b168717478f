"""The ``bigquery_streaming`` destination: ``config.py`` (model and capabilities), ``destination.py`` (the class)."""
