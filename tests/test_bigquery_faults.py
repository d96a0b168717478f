"""BigQuery under faults: the emulator seams refused where they would hide a mistake, the Storage Write API's
answers (UNIMPLEMENTED, transient, fatal) told apart at the gRPC boundary, exactly-once across SIGKILLs at
named fault points, and the legacy insertAll's deterministic insertIds.

The gRPC boundary is a small in-process proxy in front of the emulator (``WriteProxy``): every Storage Write
call goes through it unchanged unless a test tells it to answer ``CreateWriteStream`` with a status of its
own -- UNIMPLEMENTED for an endpoint that has only ``_default`` (the emulator itself implements pending
streams), UNAVAILABLE a few times for a transient outage, PERMISSION_DENIED for a fatal error. The client
code above it (the library's gapic client, its error mapping, our retry) is the real one.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import psutil
import pyarrow as pa
import pytest

from bizon_fast.clients import bigquery as bqclient
from bizon_fast.connectors.destinations.bigquery.staged import BOOKKEEPING
from bizon_fast.connectors.destinations.bigquery_streaming_v2 import destination as storage_write
from bizon_fast.errors import UserError
from native_bench.services import BQEMU_PROJECT as PROJECT
from native_bench.services import start_run
from tests.faults import assert_synthetic_exact, committed_rows, fault_line, job_rows, run_log
from tests.test_bigquery import dataset, dest, emulator, ids_of, pipeline, query  # noqa: F401 - fixtures

WRITE_SERVICE = "/google.cloud.bigquery.storage.v1.BigQueryWrite/"
MSG = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


class WriteProxy:
    """A gRPC proxy for the Storage Write service: forwards raw bytes to ``upstream``; ``create_answers`` is a
    list of status codes that the next ``CreateWriteStream`` calls get instead (popped one per call), and
    ``create_always`` a code every ``CreateWriteStream`` gets. ``calls`` counts calls per method."""

    def __init__(self, upstream: str) -> None:
        self.channel = grpc.insecure_channel(upstream, options=MSG)
        self.create_answers: list[grpc.StatusCode] = []
        self.create_always: grpc.StatusCode | None = None
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(16), handlers=[self._Handler(self)], options=MSG)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.target = f"127.0.0.1:{self.port}"

    class _Handler(grpc.GenericRpcHandler):
        def __init__(self, proxy: WriteProxy) -> None:
            self.proxy = proxy

        def service(self, details: grpc.HandlerCallDetails):  # noqa: ANN201 - a grpc handler
            method = details.method
            if not method.startswith(WRITE_SERVICE):
                return None
            md = [(k, v) for k, v in details.invocation_metadata if not k.startswith(":") and k != "user-agent"]
            proxy = self.proxy
            if method.endswith("/AppendRows"):

                def bidi(requests, context):
                    proxy.count(method)
                    call = proxy.channel.stream_stream(method)(requests, metadata=md)
                    try:
                        yield from call
                    except grpc.RpcError as exc:
                        context.abort(exc.code(), exc.details())

                return grpc.stream_stream_rpc_method_handler(bidi)

            def unary(request, context):
                proxy.count(method)
                if method.endswith("/CreateWriteStream"):
                    with proxy.lock:
                        code = proxy.create_answers.pop(0) if proxy.create_answers else proxy.create_always
                    if code is not None:
                        context.abort(code, f"injected by the test proxy: {code.name}")
                try:
                    return proxy.channel.unary_unary(method)(request, metadata=md)
                except grpc.RpcError as exc:
                    context.abort(exc.code(), exc.details())

            return grpc.unary_unary_rpc_method_handler(unary)

    def count(self, method: str) -> None:
        with self.lock:
            name = method.rsplit("/", 1)[1]
            self.calls[name] = self.calls.get(name, 0) + 1

    def stop(self) -> None:
        self.server.stop(0)
        self.channel.close()


@pytest.fixture
def proxy(emulator, monkeypatch):  # noqa: F811 - the fixture imported above
    p = WriteProxy(emulator.grpc)
    monkeypatch.setenv(bqclient.GRPC_ENV, p.target)  # in-process destinations and CLI subprocesses
    yield p
    p.stop()


# ---------------------------------------------------------------- 1a: an emulator endpoint with a key


def test_endpoint_with_a_key_is_refused_naming_both(monkeypatch, tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text("{}")
    monkeypatch.setenv(bqclient.ENDPOINT_ENV, "http://127.0.0.1:1")
    monkeypatch.delenv(bqclient.GRPC_ENV, raising=False)
    path = "destination.config.authentication.service_account_key"
    for given in (str(key), '{"type": "service_account"}'):
        with pytest.raises(UserError) as err:
            bqclient.bigquery_client(PROJECT, given, key_path=path)
        text = str(err.value)
        assert bqclient.ENDPOINT_ENV in text and path in text and "\n" not in text
    with pytest.raises(UserError, match=re.escape(path)):
        bqclient.credentials(str(key), path)
    # no key: anonymous credentials against the endpoint (and only then)
    from google.auth.credentials import AnonymousCredentials

    assert isinstance(bqclient.credentials(None, path), AnonymousCredentials)
    assert isinstance(bqclient.credentials("", path), AnonymousCredentials)
    # the Storage API override is held to the same rule
    monkeypatch.setenv(bqclient.GRPC_ENV, "127.0.0.1:1")
    with pytest.raises(UserError, match=bqclient.GRPC_ENV):
        bqclient.write_client(str(key), key_path=path)
    # without an override a key is read as a key (here: an invalid one), never turned anonymous
    monkeypatch.delenv(bqclient.ENDPOINT_ENV)
    monkeypatch.delenv(bqclient.GRPC_ENV)
    with pytest.raises(UserError, match="not a valid service account key"):
        bqclient.credentials(str(key), path)


def test_checkpoint_backend_key_with_endpoint_is_refused(monkeypatch) -> None:
    from bizon_fast.checkpoint.factory import create_backend
    from bizon_fast.config.engine import BackendConfig

    monkeypatch.setenv(bqclient.ENDPOINT_ENV, "http://127.0.0.1:1")
    cfg = BackendConfig.model_validate(
        {"type": "bigquery", "config": {"database": PROJECT, "schema": "d", "service_account_key": "{}"}}
    )
    with pytest.raises(UserError) as err:
        create_backend(cfg).open()
    assert bqclient.ENDPOINT_ENV in str(err.value)
    assert "engine.backend.config.service_account_key" in str(err.value)


def test_cli_endpoint_with_a_key_is_one_line_exit_2(emulator, dataset, cli, tmp_path: Path) -> None:  # noqa: F811
    key = tmp_path / "key.json"
    key.write_text("{}")
    config = pipeline(tmp_path, dataset, rows=1000, extra_dest=f", authentication: {{service_account_key: {key}}}")
    done = cli("run", config, "--quiet")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert bqclient.ENDPOINT_ENV in lines[0] and "destination.config.authentication.service_account_key" in lines[0]
    assert "events" not in {t.table_id for t in emulator.client().list_tables(f"{PROJECT}.{dataset}")}


# ---------------------------------------------------------------- 1b: what CreateWriteStream's answers mean


def _write_one(name: str, rows: int = 1000):  # noqa: ANN202 - the destination
    d = dest(name, "bigquery_streaming_v2")
    d.prepare({})
    d.write("s0", 0, 0, [pa.record_batch({"id": pa.array(range(rows), pa.int64())})])
    return d


def test_v2_unimplemented_falls_back_to_default_once(emulator, dataset, proxy, caplog) -> None:  # noqa: F811
    proxy.create_always = grpc.StatusCode.UNIMPLEMENTED
    caplog.set_level("INFO", logger="bizon_fast.destination.bigquery_streaming_v2")
    d = _write_one(dataset)
    d.write("s0", 1, 1, [pa.record_batch({"id": pa.array(range(1000, 2000), pa.int64())})])
    d.publish()
    d.close()
    assert ids_of(emulator, dataset) == (2000, 2000, 0, 1999)
    assert proxy.calls.get("CreateWriteStream") == 1, "after UNIMPLEMENTED, later units go straight to _default"
    assert "FinalizeWriteStream" not in proxy.calls and "BatchCommitWriteStreams" not in proxy.calls
    fallbacks = [r for r in caplog.records if "using _default" in r.getMessage()]
    assert len(fallbacks) == 1


def test_v2_transient_errors_are_retried_not_downgraded(emulator, dataset, proxy, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(storage_write, "RETRY_INITIAL_S", 0.05)
    proxy.create_answers = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    d = _write_one(dataset)
    assert proxy.calls["CreateWriteStream"] == 3  # two injected failures, then the emulator's answer
    assert d._pending_supported is True  # noqa: SLF001 - the claim: still on pending streams, not _default
    assert proxy.calls.get("BatchCommitWriteStreams") == 1
    proxy.create_answers = [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED]
    d.write("s0", 1, 1, [pa.record_batch({"id": pa.array(range(1000, 1500), pa.int64())})])
    assert proxy.calls["CreateWriteStream"] == 7 and proxy.calls["BatchCommitWriteStreams"] == 2
    d.publish()
    d.close()
    assert ids_of(emulator, dataset) == (1500, 1500, 0, 1499)


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT])
def test_v2_other_errors_fail_the_write(emulator, dataset, proxy, code) -> None:  # noqa: F811
    from google.api_core import exceptions as gexc

    proxy.create_always = code
    with pytest.raises(gexc.GoogleAPICallError) as err:
        _write_one(dataset)
    assert err.value.grpc_status_code == code
    assert proxy.calls["CreateWriteStream"] == 1, "a non-transient error is not retried"
    assert "AppendRows" not in proxy.calls, "and not downgraded to _default"


def test_v2_unimplemented_after_pending_worked_fails(emulator, dataset, proxy) -> None:  # noqa: F811
    from google.api_core import exceptions as gexc

    d = _write_one(dataset)
    proxy.create_always = grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(gexc.MethodNotImplemented):
        d.write("s0", 1, 1, [pa.record_batch({"id": pa.array(range(1000, 1010), pa.int64())})])
    d.close()


def test_v2_incomplete_default_write_is_not_published(emulator, dataset, proxy) -> None:  # noqa: F811
    """A unit cut short on ``_default`` (its first request landed, the rest did not): its rows are staged but
    its write is incomplete, so the publish keeps the replay's rows instead, once each."""
    proxy.create_always = grpc.StatusCode.UNIMPLEMENTED
    d = dest(dataset, "bigquery_streaming_v2")
    d.prepare({})
    batch = pa.record_batch({"id": pa.array(range(3000), pa.int64()), "pad": pa.array(["x" * 200] * 3000)})
    table = d.rows("s0", 0, 0, [batch])
    d.ensure_stage(table.schema)
    requests = storage_write.chunks(table, 200_000)  # several requests: send the first only, as a crash would
    cut = d._requests(f"{d._parent()}/streams/_default", pa.Table.from_batches(requests[:1]), False)  # noqa: SLF001
    d._send(cut)  # noqa: SLF001
    staged = d.staged_writes()
    assert len(staged) == 1 and staged[0][4] == 3000 and 0 < staged[0][5] < 3000, staged
    d.close()
    resumed = dest(dataset, "bigquery_streaming_v2")
    resumed.write("s0", 0, 0, [batch])  # the replay (the write was never reported)
    resumed.publish()
    resumed.close()
    assert ids_of(emulator, dataset) == (3000, 3000, 0, 2999)


# ---------------------------------------------------------------- 2: SIGKILL at the named points, through the CLI


def wait_or_gone(event: threading.Event, gone: Callable[[], bool], limit_s: float) -> bool:
    """Whether ``event`` was set within ``limit_s``; False at once when the stream's client is ``gone``."""
    deadline = time.monotonic() + limit_s
    while not event.wait(0.05):
        if gone() or time.monotonic() > deadline:
            return False
    return True


def next_or_gone(it: Iterator[Any], gone: Callable[[], bool]) -> Any:
    """The next request of a server-side stream, or None once the stream ends or its client is ``gone``.

    Why not a plain ``next``: a client SIGKILLed between two requests sends no more, and gRPC's server may notice
    its connection closed late; a plain ``next`` would block on the dead client while the streams of the living
    ones wait for that death to be seen. A helper thread takes the ``next``; this thread polls ``gone`` meanwhile."""
    box: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        try:
            box.put(next(it, None))
        except grpc.RpcError:
            box.put(None)

    threading.Thread(target=read, daemon=True, name="cut-proxy-next").start()
    while True:
        try:
            return box.get(timeout=0.05)
        except queue.Empty:
            if gone():
                return None


class CutProxy(WriteProxy):
    """A ``WriteProxy`` that also cuts ``AppendRows`` streams short while ``cut_armed``: the first request is
    forwarded and answered, the others are held back until that client is gone (then dropped: only the first
    request's rows landed) or until another held client is gone (then forwarded: that client lives on).

    Without it, the requests of a unit that a client sent before dying may all reach the emulator, and the
    write would be complete; with it, the client killed at ``bigquery_v2.mid_append`` (on its first answer of a
    unit with more requests) deterministically leaves an *incomplete* write in the stage."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.cut_armed = False
        self.released = threading.Event()
        self.cut_streams = 0
        self.hold_timeouts = 0
        self.events: list[str] = []  # what each AppendRows stream went through: the message of a failure
        self.t0 = time.monotonic()

    def event(self, peer: str, what: str) -> None:
        with self.lock:
            self.events.append(f"{time.monotonic() - self.t0:7.2f}s {peer}: {what}")

    def client_alive(self, peer: str) -> bool:
        """Whether the client at ``peer`` still holds its connection to this proxy (an ESTABLISHED socket)."""
        _, _, port = peer.rpartition(":")
        if not port.isdigit():
            return True  # not a TCP peer: only gRPC's cancellation tells
        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == self.port and c.raddr and c.raddr.port == int(port):
                return c.status == psutil.CONN_ESTABLISHED
        return False

    class _Handler(WriteProxy._Handler):
        def service(self, details: grpc.HandlerCallDetails):  # noqa: ANN201 - a grpc handler
            proxy = self.proxy
            if not (details.method.endswith("/AppendRows") and isinstance(proxy, CutProxy)):
                return super().service(details)
            method = details.method
            md = [(k, v) for k, v in details.invocation_metadata if not k.startswith(":") and k != "user-agent"]

            def bidi(requests, context):
                proxy.count(method)
                answered = threading.Event()
                peer = context.peer()  # "ipv4:127.0.0.1:<port>": the client's end of the connection

                def gone() -> bool:
                    # gRPC's own cancellation (is_active) can lag a SIGKILL on a loaded machine: a client whose
                    # socket is no longer ESTABLISHED is dead too (its kernel closed the socket)
                    return not context.is_active() or not proxy.client_alive(peer)

                def upstream_requests():
                    it = iter(requests)
                    first = next(it, None)
                    proxy.event(peer, "first request" if first is not None else "no request")
                    if first is None:
                        return
                    yield first
                    if proxy.cut_armed and not proxy.released.is_set():
                        proxy.event(peer, f"first answered: {wait_or_gone(answered, gone, 60)}")
                        second = next_or_gone(it, gone)
                        if gone():  # this client died on its first answer: cut, release the others
                            proxy.event(peer, "gone after its first answer: released")
                            proxy.released.set()
                            with proxy.lock:
                                proxy.cut_streams += 1
                            return
                        if second is None:
                            proxy.event(peer, "one request")
                            return
                        with proxy.lock:
                            proxy.cut_streams += 1
                        proxy.event(peer, "held")
                        held = time.monotonic()
                        while not proxy.released.wait(0.05):  # held: does this client die, or another?
                            if time.monotonic() - held > 30:  # nobody died: a failure the test reports
                                proxy.event(peer, "held 30 s: nobody died")
                                with proxy.lock:
                                    proxy.hold_timeouts += 1
                                break
                            if gone():
                                proxy.event(peer, "gone while held: released")
                                proxy.released.set()  # this one died: the rest of its unit never lands
                                return
                        if gone():
                            proxy.event(peer, "gone")
                            return
                        proxy.event(peer, "forwarded")
                        yield second
                    yield from it

                call = proxy.channel.stream_stream(method)(upstream_requests(), metadata=md)
                try:
                    for response in call:
                        # set before the yield: a client that this answer kills asks for no next one, so gRPC may
                        # never resume this generator past the yield (seen on the loaded CI machine: the killed
                        # stream waited out its 60 s and the living ones their 30 s hold)
                        answered.set()
                        yield response
                except grpc.RpcError as exc:
                    if context.is_active():
                        context.abort(exc.code(), exc.details())

            return grpc.stream_stream_rpc_method_handler(bidi)


@pytest.fixture
def cut_proxy(emulator, monkeypatch):  # noqa: F811 - the fixture imported above
    p = CutProxy(emulator.grpc)
    monkeypatch.setenv(bqclient.GRPC_ENV, p.target)
    yield p
    p.stop()


ROWS = 60_000


def _pipeline(tmp_path: Path, dataset: str, destination: str, rows: int, batch_rows: int, extra_source: str) -> str:  # noqa: F811
    """Like ``test_bigquery.pipeline``, with ring slots of about one batch: many writes per consumer, so a
    point armed for its n-th pass is reached mid-run and the replacement has work left."""
    pipeline(tmp_path, dataset, destination=destination, rows=rows, batch_rows=batch_rows, extra_source=extra_source)
    path = tmp_path / "pipeline.yml"
    text = path.read_text().replace("engine:\n", "engine:\n  queue: {config: {batch_size_mb: 0.1}}\n")
    path.write_text(text)
    return path.name


def _arm(monkeypatch, tmp_path: Path, point: str) -> None:
    monkeypatch.setenv("BIZON_FAST_FAULT", point)
    monkeypatch.setenv("BIZON_FAST_FAULT_MARK", str(tmp_path / "fault.mark"))


SENTINEL_ID = -1  # a row of the previous content: an incremental run keeps it once


def previous_content(emulator, dataset: str) -> None:  # noqa: F811
    """An existing target with one row, so an incremental publish appends (INSERT ... SELECT) to it."""
    query(
        emulator,
        f"CREATE TABLE `{dataset}.events` AS SELECT {SENTINEL_ID} AS id, CURRENT_TIMESTAMP() AS ts, 0 AS user_id,"
        " 0.0 AS amount, 0 AS quantity, 'old' AS category, 'old' AS payload",
    )


def assert_table_exact(emulator, dataset: str, rows: int, payload_bytes: int = 32, sentinel: int = 0) -> None:  # noqa: F811
    """The published table by values: each id once, every column what the synthetic source generated (and the
    previous content's row ``sentinel`` times)."""
    import pyarrow.compute as pc

    client = emulator.client()
    try:
        table = client.list_rows(f"{PROJECT}.{dataset}.events").to_arrow(create_bqstorage_client=False)
    finally:
        client.close()
    assert not set(BOOKKEEPING) & set(table.schema.names), "bookkeeping columns were published"
    old = pc.equal(table["id"], SENTINEL_ID)
    assert (pc.sum(old).as_py() or 0) == sentinel, "the previous content is not there exactly as expected"
    assert_synthetic_exact(table.filter(pc.invert(old)), rows, seed=0, payload_bytes=payload_bytes)


def _published(emulator, dataset: str) -> list[tuple]:  # noqa: F811
    return query(emulator, f"SELECT destination, job_id FROM `{dataset}.bizon_fast_published`")


WORKER_POINTS = [
    # (point, destination, _default fallback through the proxy)
    ("bigquery.mid_load@3", "bigquery", False),
    ("bigquery_v2.mid_append@3", "bigquery_streaming_v2", False),  # pending stream appended, not committed
    ("bigquery_v2.mid_append@1", "bigquery_streaming_v2", True),  # _default: the first request of a unit landed
]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "destination", "default_stream"), WORKER_POINTS, ids=lambda v: str(v))
def test_consumer_dies_at_the_point_and_the_run_recovers_exactly(
    emulator,  # noqa: F811
    dataset,  # noqa: F811
    cut_proxy,
    tmp_path: Path,
    monkeypatch,
    point: str,
    destination: str,
    default_stream: bool,
) -> None:
    payload, rows = 32, ROWS
    if default_stream:
        # writes of about 20 MiB (a consumer buffer) of wide rows: each unit takes several AppendRows requests
        # (at most 9 MiB each), so a unit can be cut short
        payload, rows = 2_000, 30_000
        cut_proxy.create_always = grpc.StatusCode.UNIMPLEMENTED
        cut_proxy.cut_armed = True
        config = pipeline(
            tmp_path,
            dataset,
            destination=destination,
            rows=rows,
            batch_rows=2_000,
            extra_source=f", payload_bytes: {payload}",
            extra_dest=", buffer_size: 20",
        )
        text = (tmp_path / config).read_text().replace("buffer_size: 0, ", "")
        (tmp_path / config).write_text(text)
    else:
        config = _pipeline(tmp_path, dataset, destination, rows, 2_000, "")
    _arm(monkeypatch, tmp_path, point)
    proc = start_run(tmp_path, config)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    log = run_log(tmp_path, proc.pid)
    who, pid = fault_line(log, point.partition("@")[0])
    assert who.startswith("consumer-") and pid != proc.pid, f"the fault killed {who} (pid {pid}), not a consumer"
    assert re.search(rf"supervisor bizon_fast\.supervisor: {who} died \(killed by SIGKILL\); restart 1 of 50", log), log
    assert log.count(" died (") == 1, "one death was injected, one must be seen"
    [(_, status, attempt, _)] = job_rows(tmp_path, "ckpt.sqlite3")
    assert (status, attempt) == ("succeeded", 1)
    if point.startswith("bigquery.mid_load"):
        # the killed consumer's load job had landed: its replay is a second write of those seqs, dropped
        assert re.search(r"\d+ of \d+ staged writes are replays; deduplicated", log), "the replay was not staged"
    if default_stream:
        assert log.count("using _default") >= 1 and "FinalizeWriteStream" not in cut_proxy.calls
        assert cut_proxy.cut_streams >= 1 and cut_proxy.hold_timeouts == 0, (
            "the cut client was not the one killed:\n" + ("\n".join(cut_proxy.events))
        )
        # the killed unit's first request landed, the second never did: the publish saw it and left it out
        assert re.search(r"write \d+ of \S+ is incomplete \(\d+/\d+ rows\)", log), "no incomplete write was staged"
    assert_table_exact(emulator, dataset, rows, payload)
    assert "events_temp" not in {t.table_id for t in emulator.client().list_tables(f"{PROJECT}.{dataset}")}


SUPERVISOR_POINTS = [
    # (point, destination, mode)
    ("bigquery.publish", "bigquery", "full_refresh"),  # kept writes chosen, CREATE OR REPLACE not run
    ("bigquery.publish", "bigquery", "incremental"),  # kept writes chosen, INSERT ... SELECT not run
    ("bigquery.publish_unrecorded", "bigquery", "full_refresh"),  # table replaced, not recorded as published
    ("bigquery.publish_unrecorded", "bigquery", "incremental"),  # appended and recorded (one transaction)
    ("bigquery.publish_unrecorded", "bigquery", "incremental_new"),  # the same, into a target created empty
    ("bigquery.publish", "bigquery_streaming_v2", "full_refresh"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "destination", "mode"), SUPERVISOR_POINTS, ids=lambda v: str(v))
def test_supervisor_dies_publishing_and_the_rerun_publishes_once(
    emulator,  # noqa: F811
    dataset,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
    point: str,
    destination: str,
    mode: str,
) -> None:
    rows = 20_000
    extra = ", sync_mode: incremental" if mode.startswith("incremental") else ""
    config = _pipeline(tmp_path, dataset, destination, rows, 2_000, extra)
    incremental = mode == "incremental"  # "incremental_new": no target yet, the first incremental run
    if incremental:
        previous_content(emulator, dataset)
    _arm(monkeypatch, tmp_path, point)
    proc = start_run(tmp_path, config)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == -9, err
    who, pid = fault_line(run_log(tmp_path, proc.pid), point)
    assert (who, pid) == ("supervisor", proc.pid), f"the fault killed {who} (pid {pid}), not the supervisor"
    [(job_id, status, attempt, _)] = job_rows(tmp_path, "ckpt.sqlite3")
    assert (status, attempt) == ("running", 1), "the job must be left unfinished by the kill"
    assert committed_rows(tmp_path, "ckpt.sqlite3") == rows, "a publish point comes after every row is committed"
    recorded = [(f"{PROJECT}.{dataset}.events", job_id)]
    if point == "bigquery.publish_unrecorded" and mode.startswith("incremental"):
        # the append and its record are one transaction: both happened before the kill, the stage is left
        assert _published(emulator, dataset) == recorded
        assert_table_exact(emulator, dataset, rows, sentinel=int(incremental))
    else:
        assert _published(emulator, dataset) == [], "the kill came before the publish was recorded"

    rerun = start_run(tmp_path, config)
    _, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    log = run_log(tmp_path, rerun.pid)
    assert re.search(rf"resuming job {re.escape(job_id)} \(attempt 2", log), log
    assert "fault point" not in log, "the rerun must pass the point unharmed"
    assert job_rows(tmp_path, "ckpt.sqlite3") == [(job_id, "succeeded", 2, None)], (
        "the rerun must resume the job, not start a new one"
    )
    assert _published(emulator, dataset) == recorded, "published once"
    assert_table_exact(emulator, dataset, rows, sentinel=int(incremental))


# ---------------------------------------------------------------- 3: insertAll's deterministic insertIds


def test_insert_ids_are_the_same_on_a_replay_and_distinct_otherwise(emulator, dataset) -> None:  # noqa: F811
    """The insertId of a row is a function of (job, split, seq, row): a replay sends the same ids (the real
    service's best-effort dedupe can drop it), any other row another id. Read from the request bodies as they
    go out over HTTP (the emulator ignores insertId, so its table cannot show this)."""
    import json

    sent: list[dict] = []

    def capture(d):  # noqa: ANN001, ANN202 - wraps the client's HTTP session of destination ``d``
        session = d.client._http  # noqa: SLF001 - the transport the library itself uses
        real = session.request

        def request(method, url, *args, **kwargs):  # noqa: ANN001, ANN202
            if method == "POST" and url.split("?")[0].endswith("/insertAll"):
                sent.append({"job": d.context.job_id, "body": json.loads(kwargs.get("data"))})
            return real(method, url, *args, **kwargs)

        session.request = request
        return d

    def ids(i: int) -> list[tuple[str, int]]:
        return [(row["insertId"], row["json"]["id"]) for row in sent[i]["body"]["rows"]]

    def batch(first: int, n: int) -> pa.RecordBatch:
        return pa.record_batch({"id": pa.array(range(first, first + n), pa.int64())})

    d = capture(dest(dataset, "bigquery_streaming", bq_max_rows_per_request=1000))
    d.write("s0", 0, 1, [batch(0, 5), batch(5, 5)])  # seq 0: ids 0-4, seq 1: ids 5-9
    d.write("s0", 0, 1, [batch(0, 5), batch(5, 5)])  # the same write replayed
    d.write("s0", 0, 0, [batch(0, 5)])  # replayed regrouped: seq 0 alone
    d.write("s0", 1, 1, [batch(5, 5)])  # and seq 1 alone
    d.write("s1", 0, 1, [batch(0, 5), batch(5, 5)])  # another split, same seqs and rows
    d.close()
    other = capture(dest(dataset, "bigquery_streaming", job="job-2", bq_max_rows_per_request=1000))
    other.write("s0", 0, 1, [batch(0, 5), batch(5, 5)])  # another job, same split, seqs and rows
    other.close()

    first = [i for i, _ in ids(0)] + [i for i, _ in ids(1)]
    assert len(first) == 10 and len(set(first)) == 10, "every row of a write has its own insertId"
    assert [i for i, _ in ids(2)] + [i for i, _ in ids(3)] == first, "a replay sends the same insertIds"
    assert [i for i, _ in ids(4)] + [i for i, _ in ids(5)] == first, "a regrouped replay sends the same insertIds"
    other_split = [i for i, _ in ids(6)] + [i for i, _ in ids(7)]
    other_job = [i for i, _ in ids(8)] + [i for i, _ in ids(9)]
    assert len(sent) == 10, f"one request per seq: {len(sent)}"
    assert not set(other_split) & set(first), "another split's rows get other insertIds"
    assert not set(other_job) & set(first) and not set(other_job) & set(other_split), "another job: other ids"
    assert [r for _, r in ids(0)] == [0, 1, 2, 3, 4] and [r for _, r in ids(1)] == [5, 6, 7, 8, 9]
    assert ids_of(emulator, dataset) == (50, 10, 0, 9), "all five writes landed (the emulator does not dedupe)"
