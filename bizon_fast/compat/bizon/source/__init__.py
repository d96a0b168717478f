"""``bizon.source``: the source contract (``source``), its models, config and authentication helpers."""
