"""Destinations, one folder each (``config.py``, ``destination.py``, ``example.yml``); ``envelope`` and
``jsontext`` are the record layouts several of them write."""
