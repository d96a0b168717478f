"""The worker process entry point: become a producer or a consumer, with the ring's or the broker's ends.

The producer (``engine/producer.py``) and the consumer (``engine/consumer.py``) are the same in ring and
broker mode; ``worker_main`` plugs in where batches go and come from. Workers never decide anything
shared: the supervisor hands out splits and slots and commits cursors. A worker may therefore be
SIGKILLed at any instant; it holds no lock and its slots are reclaimed by the supervisor. Every
blocking wait has a timeout and checks that the supervisor lives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import traceback
from multiprocessing.connection import Connection

from bizon_fast.engine import messages as m
from bizon_fast.engine.channel import POLL_S, Channel, StopRequested, SupervisorGone, die_with_parent, setup_process
from bizon_fast.engine.consumer import Consumer, RingInlet
from bizon_fast.engine.producer import Producer, RingOutlet
from bizon_fast.engine.spec import WorkerSpec, decode_spec
from bizon_fast.errors import DataError, UserError
from bizon_fast.transport import open_store
from bizon_fast.transport.base import BatchStore

log = logging.getLogger("bizon_fast.worker")


def _wait_as_spare(conn: Connection, spare: WorkerSpec) -> tuple[WorkerSpec, BatchStore | None]:
    """A hot spare: imports done, connectors loaded, waiting to be told which worker to become.

    Spawning a fresh interpreter and importing pyarrow costs about a second on a busy machine; a
    spare turns a crashed worker's replacement into one pipe message.
    """
    die_with_parent(spare.parent_pid, f"bf-spare-{spare.index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):  # warm the connector modules; a real error shows when promoted
        from bizon_fast.connectors.registry import destination_class, source_class

        source_class(spare.source["name"], spare.source["stream"], spare.source.get("source_file_path"))
        destination_class(spare.destination_name)
    store = open_store(spare.store) if spare.store is not None else None  # mapped and populated ahead of need
    ppid = os.getppid()
    while True:
        try:
            if conn.poll(POLL_S):
                return decode_spec(conn.recv_bytes()), store
        except (EOFError, ConnectionResetError, OSError):
            os._exit(0)
        if os.getppid() != ppid:
            os._exit(0)


def worker_main(conn: Connection, spec_bytes: bytes) -> None:
    """Process (or thread) entry point. Errors are reported to the supervisor, then the worker exits."""
    spec = decode_spec(spec_bytes)
    store = None
    if spec.role == "spare":
        spec, store = _wait_as_spare(conn, spec)
    if not spec.threaded:
        setup_process(spec)
    chan = Channel(conn, spec)
    try:
        if spec.broker is not None:
            from bizon_fast.engine.broker_io import BrokerInlet, BrokerOutlet

            worker: Producer | Consumer = (
                Producer(chan, spec, BrokerOutlet(spec))
                if spec.role == "producer"
                else Consumer(chan, spec, BrokerInlet(spec))
            )
        else:
            if store is None:
                assert spec.store is not None
                store = open_store(spec.store)
            worker = (
                Producer(chan, spec, RingOutlet(store))
                if spec.role == "producer"
                else Consumer(chan, spec, RingInlet(store))
            )
        chan.send(m.Started(os.getpid()))
        worker.run()
    except (SupervisorGone, StopRequested):
        pass
    except BaseException as exc:  # noqa: BLE001 - everything goes to the supervisor, which decides
        detail = traceback.format_exc()
        log.error("%s-%d failed: %s", spec.role, spec.index, exc, exc_info=True)  # the traceback as a record's
        with contextlib.suppress(SupervisorGone):
            resumable = not isinstance(exc, (UserError, DataError))
            chan.send(m.Failed(f"{type(exc).__name__}: {exc}", detail, resumable))
        if not spec.threaded:
            os._exit(3)
    finally:
        if store is not None:
            store.close()
    if not spec.threaded:
        logging.shutdown()
        os._exit(0)
