"""What the fork server imports once, before it forks any worker: the worker stack (and the run's connectors,
``engine/warm.py``), with the collector paused.

Named as the fork server's only preload (``handles.PRELOAD``). Importing pyarrow, numpy, pydantic and the
engine allocates ~100k long-lived objects; the cyclic collector would walk them several times meanwhile
(~10% of the import time) for nothing. ``gc.freeze()`` then moves them out of the collector's reach for
good: every forked worker inherits them as shared pages that its own collections never touch (a collection
would otherwise write to each object's header and copy the page into the worker: more memory per worker).
"""

import gc

gc.disable()
try:
    import msgspec  # noqa: F401
    import numpy  # noqa: F401
    import pyarrow  # noqa: F401
    import pyarrow.ipc  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import bizon_fast.engine.worker  # noqa: F401
    from bizon_fast.engine.warm import warm_from_env

    warm_from_env()  # the run's own connectors, when the supervisor named its pipeline file
finally:
    gc.freeze()
    gc.enable()
