"""Connectors, one folder each (``sources/<name>/``, ``destinations/<name>/``), found by name in ``registry``."""
