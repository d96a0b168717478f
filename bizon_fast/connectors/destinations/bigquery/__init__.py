"""The ``bigquery`` destination: ``config.py`` (model and capabilities), ``destination.py`` (the class)."""
