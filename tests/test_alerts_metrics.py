"""bizon's ``alerting: slack`` and ``monitoring: datadog``, for real: a local webhook and a local DogStatsD socket.

Through the CLI: a failing transform posts bizon's Slack payload (pipeline, source and stream, destination,
level, the error) once to a webhook served by this test, and sends ``bizon_pipeline.status`` with
``pipeline_status:transform_error``; a run with ``monitoring: datadog`` sends bizon's metrics and bizon-fast's
own to a UDP socket this test reads, every one with bizon's tags and the configured ones. The Slack sender's
retries, its refusal of a bad webhook and its bounded flush are checked against the same local server.
``bizon_pipeline.large_records`` is checked through the CLI into ``bigquery_streaming`` on the BigQuery emulator,
and the ``bigquery_streaming_v2`` row measure against real protobuf messages.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bizon_fast.config.alerting import AlertingConfig, DatadogDetails
from bizon_fast.engine.alerts import SlackSender
from bizon_fast.engine.datadog import failure_status
from tests.conftest import REPO

DUMMY = "source: {name: dummy, stream: creatures, authentication: {type: api_key, params: {token: x}}}\n"
RAISING = "transforms:\n  - {label: boom, python: \"raise ValueError('transform exploded')\"}\n"
BIZON_TAGS = {"pipeline_source", "pipeline_stream", "pipeline_destination", "pipeline_name"}


class Webhook:
    """A Slack webhook on loopback: records every POST's JSON body; answers the queued statuses, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.bodies: list[dict] = []
        self.statuses = list(statuses or [])
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/secret"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Metric:
    name: str
    value: float
    kind: str
    tags: dict[str, str] = field(default_factory=dict)


class Agent:
    """A DogStatsD agent on loopback UDP: parses every datagram it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.metrics: list[Metric] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                name, _, rest = line.partition(":")
                value, kind, *extra = rest.split("|")
                tags = next((f[1:].split(",") for f in extra if f.startswith("#")), [])
                self.metrics.append(Metric(name, float(value), kind, dict(t.split(":", 1) for t in tags)))

    def close(self) -> None:
        time.sleep(0.2)  # the last datagrams of the run, already sent, are read
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()

    def named(self, name: str) -> list[Metric]:
        return [m for m in self.metrics if m.name == name]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    yield a
    a.close()


def statuses(agent: Agent) -> list[str]:
    return [m.tags["pipeline_status"] for m in agent.named("bizon_pipeline.status")]


@pytest.mark.parametrize("runner", ["process", "thread"])  # thread: the worker's own lines are in this process
def test_a_failing_transform_posts_bizon_payload_with_the_error_once(
    tmp_path: Path, cli, webhook, agent, runner: str
) -> None:
    (tmp_path / "p.yml").write_text(
        f"name: alerted\n{DUMMY}{RAISING}destination: {{name: noop}}\n"
        f"alerting: {{type: slack, log_levels: [ERROR], config: {{webhook_url: '{webhook.url}'}}}}\n"
        f"monitoring: {{type: datadog, config: {{datadog_agent_host: 127.0.0.1, datadog_agent_port: {agent.port}}}}}\n"
    )
    res = cli("run", "p.yml", "--quiet", "--workers", "2", "--runner", runner, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "transform exploded" in res.stderr
    # two consumers fail alike and the job fails with their error: one message says it
    [body] = webhook.bodies
    text = body["text"]
    assert text.startswith(":rotating_light: *Bizon Pipeline Alert* :rotating_light:\n\n"), text
    assert "*Sync*: `alerted`\n*Source*: `dummy` - `creatures`\n*Destination*: `noop`\n\n" in text, text
    message = text.split("*Message:*\n```", 1)[1].split("```", 1)[0]
    assert "transform exploded" in message and "Error applying transformation 'boom'" in message, message
    assert "*Level:* `ERROR`" in text and "*File:* `" in text and "*Function:* `" in text, text
    assert "secret" not in next((tmp_path / "logs").iterdir()).read_text(), "the webhook URL is a secret"
    agent.close()
    assert statuses(agent) == ["running", "transform_error"]
    assert all(m.tags["pipeline_name"] == "alerted" for m in agent.metrics)


def test_datadog_metrics_arrive_with_bizon_tags_and_the_configured_ones(
    tmp_path: Path, cli, agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", "slow_file=tests.fixtures.slow_file:SlowFileDestination")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    rows = 200_000
    (tmp_path / "p.yml").write_text(
        f"""
name: watched
source: {{name: synthetic, stream: events, rows: {rows}, splits: 4, batch_rows: 10000}}
destination:
  name: slow_file
  config: {{destination_id: out/events, format: parquet, buffer_size: 1, write_delay_s: 0.25}}
engine:
  queue: {{config: {{batch_size_mb: 1}}}}
  runner: {{config: {{max_workers: 2}}}}
monitoring:
  type: datadog
  enable_tracing: true
  config:
    datadog_host_env_var: BF_TEST_AGENT_HOST   # wins over datadog_agent_host, as in bizon
    datadog_agent_host: agent.invalid
    datadog_agent_port: {agent.port}
    tags: {{team: data, env: ci}}
"""
    )
    started = time.monotonic()
    res = cli("run", "p.yml", "--quiet", env={"BF_TEST_AGENT_HOST": "127.0.0.1"}, timeout=120)
    seconds = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    agent.close()
    assert statuses(agent) == ["running", "success"]
    for m in agent.metrics:
        assert m.tags.keys() >= BIZON_TAGS and m.tags["team"] == "data" and m.tags["env"] == "ci", m
        assert m.tags["pipeline_name"] == "watched" and m.tags["pipeline_destination"] == "slow_file", m
        assert m.tags["pipeline_source"] == "synthetic" and m.tags["pipeline_stream"] == "events", m
    assert sum(m.value for m in agent.named("bizon_pipeline.records_synced")) == rows
    assert {m.kind for m in agent.named("bizon_pipeline.records_synced")} == {"c"}
    for name in ("rows_read", "rows_written"):
        assert sum(m.value for m in agent.named(f"bizon_fast.{name}")) == rows, name
    for name in ("bytes_read", "bytes_written", "batches_read", "batches_written"):
        assert sum(m.value for m in agent.named(f"bizon_fast.{name}")) > 0, name
    assert not agent.named("bizon_fast.worker_restarts")  # nothing restarted: no count sent
    assert agent.named("bizon_fast.splits")[-1].value == 4
    assert agent.named("bizon_fast.splits_done")[-1].value == 4
    lags = agent.named("bizon_fast.split_lag_rows")
    assert lags and all(m.kind == "g" and m.tags.get("split") for m in lags), lags
    last = {m.tags["split"]: m.value for m in lags}
    assert set(last.values()) == {0}, f"a split that leaves the active set ends at lag 0: {last}"
    log = next((tmp_path / "logs").iterdir()).read_text()
    assert "sending Datadog metrics to 127.0.0.1:" in log, log
    try:
        import ddtrace  # noqa: F401
    except ImportError:
        assert "enable_tracing needs ddtrace" in log, log
    print(f"datadog run: {rows} rows in {seconds:.1f}s, {len(agent.metrics)} datagrams")


def test_slack_sender_retries_5xx_and_429_then_delivers() -> None:
    hook = Webhook([500, 429])
    try:
        sender = SlackSender(hook.url)
        started = time.monotonic()
        sender.submit({"text": "one"})
        sender.close(timeout=10)
        waited = time.monotonic() - started
    finally:
        hook.close()
    assert [b["text"] for b in hook.bodies] == ["one", "one", "one"]
    assert (sender.sent, sender.failed, sender.not_sent) == (1, 0, 0)
    assert waited >= 1.4, "0.5 s after the 500, then the 429's Retry-After: 1"


def test_slack_sender_does_not_retry_a_refused_webhook(caplog: pytest.LogCaptureFixture) -> None:
    hook = Webhook([404])
    try:
        sender = SlackSender(hook.url)
        sender.submit({"text": "one"})
        with caplog.at_level(logging.WARNING, "bizon_fast.alerts"):
            sender.close(timeout=5)
    finally:
        hook.close()
    assert len(hook.bodies) == 1 and (sender.sent, sender.failed) == (0, 1)
    assert "HTTP 404" in caplog.text and "secret" not in caplog.text


def test_slack_sender_gives_up_at_the_flush_deadline() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    sender = SlackSender(f"http://127.0.0.1:{port}/hook")
    for i in range(3):
        sender.submit({"text": str(i)})
    started = time.monotonic()
    sender.close(timeout=1.0)
    assert time.monotonic() - started < 2.0, "the run's end waits for the flush deadline, not for every retry"
    assert sender.sent == 0 and sender.failed + sender.not_sent == 3


def test_config_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    alerting = AlertingConfig.model_validate(
        {"type": "slack", "log_levels": ["ERROR", "WARNING"], "config": {"webhook_url": "http://x"}}
    )
    assert alerting.min_level == logging.WARNING
    assert "http://x" not in repr(alerting)
    details = DatadogDetails.model_validate(
        {"datadog_host_env_var": "BF_DD_HOST", "datadog_agent_host": "h", "tags": None}
    )
    assert details.tags == {}
    monkeypatch.delenv("BF_DD_HOST", raising=False)
    assert details.agent_host() == "h"
    monkeypatch.setenv("BF_DD_HOST", "10.0.0.7")
    assert details.agent_host() == "10.0.0.7"


@pytest.mark.parametrize(
    ("role", "error", "status"),
    [
        ("producer", "ConnectionError: reset", "source_error"),
        ("consumer", "DataError: Error applying transformation 'x': ValueError: boom", "transform_error"),
        ("consumer", "OSError: disk full", "destination_error"),
        ("", "the job failed on another machine: x", "error"),
    ],
)
def test_failure_status_names_the_side_that_failed(role: str, error: str, status: str) -> None:
    assert failure_status(role, error) == status


def test_datadog_large_records_counts_the_rows_over_bizon_threshold(
    tmp_path: Path, cli, agent, bq_emulator, bq_dataset: str
) -> None:
    """bigquery_streaming: rows whose JSON is over 0.9 MiB are bizon's large records; one just under is not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from native_bench.services import BQEMU_PROJECT

    small, large = 2_000, 3
    bodies = ["x" * 100] * small + ["L" * 960_000] * large + ["n" * 900_000]  # 900 kB: under 0.9 MiB
    pq.write_table(pa.table({"id": list(range(len(bodies))), "body": bodies}), tmp_path / "rows.parquet")
    (tmp_path / "p.yml").write_text(
        f"""
name: big
source: {{name: file, stream: events, path: rows.parquet}}
destination:
  name: bigquery_streaming
  config: {{project_id: {BQEMU_PROJECT}, dataset_id: {bq_dataset}, destination_id: events, buffer_size: 0}}
engine:
  backend: {{type: sqlite, config: {{database: {tmp_path / "ckpt"}}}}}
  runner: {{config: {{max_workers: 2}}}}
monitoring: {{type: datadog, config: {{datadog_agent_host: 127.0.0.1, datadog_agent_port: {agent.port}}}}}
"""
    )
    res = cli("run", "p.yml", "--quiet", timeout=120)
    assert res.returncode == 0, res.stderr
    agent.close()
    client = bq_emulator.client()
    try:
        [(stored,)] = [tuple(r.values()) for r in client.query(f"SELECT COUNT(*) FROM `{bq_dataset}.events`").result()]
    finally:
        client.close()
    assert stored == len(bodies)
    assert sum(m.value for m in agent.named("bizon_pipeline.records_synced")) == len(bodies)
    sent = agent.named("bizon_pipeline.large_records")
    assert sum(m.value for m in sent) == large, sent
    for m in sent:  # a count, with bizon's tags and its destination_id
        assert m.kind == "c" and m.tags["destination_id"] == "events" and m.tags.keys() >= BIZON_TAGS, m


def test_v2_row_size_is_bizon_protobuf_size_and_counts_the_large_rows() -> None:
    """bigquery_streaming_v2: ``proto_row_bytes`` is the size of the protobuf message bizon compared (8 MiB)."""
    import pyarrow as pa
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    from bizon_fast.connectors.destinations.bigquery.staged import SPLIT
    from bizon_fast.connectors.destinations.bigquery_streaming_v2.destination import (
        LARGE_ROW_BYTES,
        count_large,
        proto_row_bytes,
    )

    # bizon's row message: scalar fields; a nested value travels as its JSON text; a null is left out
    proto = descriptor_pb2.FileDescriptorProto(name="row.proto", package="t")
    row = proto.message_type.add(name="Row")
    text, i64, boolean = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    )
    for number, (name, kind) in enumerate(
        [("_bizon_id", text), ("_source_data", text), ("rec", text), ("n", i64), ("flag", boolean)], 1
    ):
        row.field.add(name=name, number=number, type=kind)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    message = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Row"))

    lengths = [0, 1, 127, 128, 16_383, 16_384, 2_097_152, 70_000]
    data = ["d" * k for k in lengths]
    data[-1] = None
    recs = [{"a": "x" * k, "b": [1, 2]} if k % 2 == 0 else None for k in range(len(lengths))]
    table = pa.table(
        {
            "_bizon_id": [f"id-{k}" for k in range(len(lengths))],
            "_source_data": data,
            "rec": pa.array(recs, pa.struct([("a", pa.string()), ("b", pa.list_(pa.int64()))])),
            SPLIT: ["s0"] * len(lengths),  # bizon-fast's bookkeeping: not in bizon's row
        }
    )
    measured = proto_row_bytes(table)
    for k in range(len(lengths)):
        fields = {"_bizon_id": f"id-{k}"}
        if data[k] is not None:
            fields["_source_data"] = data[k]
        if recs[k] is not None:
            fields["rec"] = json.dumps(recs[k], separators=(",", ":"))
        assert measured[k] == len(message(**fields).SerializeToString()), k
    # numbers: their width, a few bytes off the varint at most
    numbers = pa.table({"n": pa.array([5, None, 1 << 40]), "flag": [True, None, False]})
    exact = [
        len(message(n=5, flag=True).SerializeToString()),
        0,
        len(message(n=1 << 40, flag=False).SerializeToString()),
    ]
    assert all(abs(int(a) - b) <= 8 for a, b in zip(proto_row_bytes(numbers), exact, strict=True))

    over = int(LARGE_ROW_BYTES) + 1 - 5  # tag byte and a 4-byte length: the message is 8 MiB + 1
    sizes = [over, over - 1, 100, over + 1000]
    big = pa.table({"_source_data": ["z" * k for k in sizes], SPLIT: ["s0"] * len(sizes)})
    assert [len(message(_source_data="z" * k).SerializeToString()) for k in sizes[:2]] == [LARGE_ROW_BYTES + 1] + [
        LARGE_ROW_BYTES
    ]
    assert count_large(big) == 2  # strictly over, as bizon's ``item_size > MAX_ROW_SIZE_BYTES``
