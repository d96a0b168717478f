"""The ``kafka`` source against a real Kafka-protocol broker (Tansu), through the CLI, plus decoder units.

The schema registry is not on this machine, so the Avro test serves ``/schemas/ids/{id}`` from an
``http.server`` thread: that is the HTTP boundary the source talks to, nothing inside it is mocked.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import confluent_kafka  # the [test] extra installs these: a missing package is a failure
import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from bizon_fast.connectors.sources.kafka import decode  # noqa: E402
from tests.conftest import REPO

TOPIC_CFG = "{name: %s, destination_id: %s}"


def _topic() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _produce(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes | None, int]]) -> None:
    """(key, value, partition) triples, flushed."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value, partition in values:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(15) == 0


def _json_rows(start: int, stop: int, partitions: int) -> list[tuple[bytes | None, bytes | None, int]]:
    """``at``: an instant with a +02:00 offset (i seconds after 2024-01-01T00:00:00Z); ``local``: a naive one."""
    return [
        (
            json.dumps({"k": i}).encode(),
            json.dumps(
                {
                    "id": i,
                    "name": f"n{i}",
                    "amount": i / 4,
                    "at": f"2024-01-01T02:{i // 60 % 60:02d}:{i % 60:02d}+02:00",
                    "local": f"2024-01-01T00:00:{i % 60:02d}.5",
                }
            ).encode(),
            i % partitions,
        )
        for i in range(start, stop)
    ]


def _pipeline(tmp_path: Path, bootstrap: str, topic: str, extra: str = "", fmt: str = "parquet") -> str:
    (tmp_path / "p.yml").write_text(
        f"""
name: kafka-{topic}
source:
  name: kafka
  stream: topic
  topics: [{TOPIC_CFG % (topic, topic)}]
  bootstrap_servers: {bootstrap}
  group_id: g-{topic}
  message_encoding: utf-8
  consumer_timeout: 3
  batch_size: 500
  consumer_config: {{security.protocol: PLAINTEXT, auto.offset.reset: earliest}}
{extra}
destination: {{name: file, config: {{destination_id: out/{topic}, format: {fmt}, buffer_size: 1}}}}
engine: {{runner: {{config: {{max_workers: 2}}}}}}
"""
    )
    return "p.yml"


def _read_parquet(path: Path) -> pa.Table:
    return ds.dataset(path, format="parquet").to_table()


# ---------------------------------------------------------------- through the CLI


def test_json_topic_to_parquet_reads_every_partition_once(tmp_path: Path, cli, kafka_bootstrap: str) -> None:
    from tests.services.kafka import create_topic

    topic = _topic()
    create_topic(kafka_bootstrap, topic, 4)
    _produce(kafka_bootstrap, topic, _json_rows(0, 4000, 4))
    res = cli("run", _pipeline(tmp_path, kafka_bootstrap, topic, "  record_layout: columns"), "--quiet")
    assert res.returncode == 0, res.stderr
    table = _read_parquet(tmp_path / "out" / topic)
    assert table.num_rows == 4000
    assert pc.count_distinct(table["id"]).as_py() == 4000
    assert sorted(pc.unique(table["_source_partition"]).to_pylist()) == [0, 1, 2, 3]
    assert table.schema.field("amount").type == pa.float64()
    assert table.schema.field("_source_timestamp").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC"), "an offset makes a zoned timestamp"
    assert table.schema.field("local").type == pa.timestamp("us"), "no offset: naive"
    ordered = table.sort_by("id")
    assert ordered["at"].cast(pa.int64()).to_pylist() == [(1_704_067_200 + i % 3600) * 10**6 for i in range(4000)]
    assert ordered["local"].cast(pa.int64()).to_pylist()[:2] == [1_704_067_200_500_000, 1_704_067_201_500_000]
    row = table.filter(pc.equal(table["id"], 7)).to_pylist()[0]
    assert (row["name"], row["_source_partition"], row["_source_offset"], row["_source_key"]) == (
        "n7",
        3,
        1,
        '{"k": 7}',
    )


def test_bizon_layout_matches_bizon_records(tmp_path: Path, cli, kafka_bootstrap: str) -> None:
    """bizon's envelope: source_record_id partition_<p>_offset_<o>, source_data {topic, offset, ..., value}."""
    from tests.services.kafka import create_topic

    topic = _topic()
    create_topic(kafka_bootstrap, topic, 2)
    _produce(kafka_bootstrap, topic, [*_json_rows(0, 50, 2), (None, None, 0), (None, b'{"id": 50}', 1)])
    res = cli("run", _pipeline(tmp_path, kafka_bootstrap, topic, fmt="json"), "--quiet")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in (tmp_path / "out" / f"{topic}.json").read_text().splitlines()]
    assert len(lines) == 51, "the tombstone is skipped (skip_message_empty_value), the rest read once"
    by_id = {line["source_record_id"]: json.loads(line["source_data"]) for line in lines}
    data = by_id["partition_1_offset_3"]
    assert data == {
        "topic": topic,
        "offset": 3,
        "partition": 1,
        "timestamp": data["timestamp"],
        "keys": {"k": 7},
        "headers": {},
        "value": {
            "id": 7,
            "name": "n7",
            "amount": 1.75,
            "at": "2024-01-01T02:00:07+02:00",
            "local": "2024-01-01T00:00:07.5",
        },
        "schema": {},
    }
    assert by_id["partition_1_offset_25"]["keys"] == {}, "no key: bizon's {}"


def _wait_rows(path: Path, rows: int, proc, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists() and any(path.glob("*.parquet")):
            try:
                if _read_parquet(path).num_rows >= rows:
                    return
            except (OSError, pa.ArrowInvalid):
                pass  # a part appearing as we list
        time.sleep(0.2)
    raise AssertionError(f"{rows} rows not written in {deadline_s} s")


def test_stream_mode_resumes_from_committed_offsets(tmp_path: Path, kafka_bootstrap: str) -> None:
    """Stop a stream, produce more, run again: only the new rows arrive, none twice; group offsets follow."""
    from native_bench.services import start_run
    from tests.services.kafka import create_topic

    topic = _topic()
    create_topic(kafka_bootstrap, topic, 3)
    _produce(kafka_bootstrap, topic, _json_rows(0, 1500, 3))
    config = _pipeline(tmp_path, kafka_bootstrap, topic, "  sync_mode: stream\n  record_layout: columns")
    out = tmp_path / "out" / topic

    def run_until(rows: int, produce_while_running: int = 0) -> None:
        proc = start_run(tmp_path, config)
        try:
            _wait_rows(out, rows, proc)
            if produce_while_running:
                _produce(kafka_bootstrap, topic, _json_rows(rows, rows + produce_while_running, 3))
                _wait_rows(out, rows + produce_while_running, proc)
            time.sleep(0.5)  # nothing more may arrive
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err  # interrupted: drained, committed, resumable
        table = _read_parquet(out)
        expected = rows + produce_while_running
        assert table.num_rows == expected, f"{table.num_rows} rows, expected {expected}"
        assert pc.count_distinct(table["id"]).as_py() == expected, "duplicates"

    run_until(1500, produce_while_running=900)  # the stream reads live messages too
    _produce(kafka_bootstrap, topic, _json_rows(2400, 3000, 3))
    run_until(3000)  # resumed from the committed cursors: only the 600 new rows
    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}"})
    try:
        committed = consumer.committed([confluent_kafka.TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        consumer.close()
    assert sum(tp.offset for tp in committed) == 3000, "group offsets follow the committed cursors (lag dashboards)"


class _Registry(ThreadingHTTPServer):
    schemas: dict[int, str]
    auth: str
    requests: list[str]


class _RegistryHandler(BaseHTTPRequestHandler):
    server: _Registry

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests.append(self.path)
        if self.headers.get("Authorization") != self.server.auth:
            self.send_response(401)
            self.end_headers()
            return
        schema_id = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/schemas/ids/") else -1
        if schema_id not in self.server.schemas:
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"schema": self.server.schemas[schema_id]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[_Registry]:
    server = _Registry(("127.0.0.1", 0), _RegistryHandler)
    server.schemas, server.requests = {}, []
    server.auth = "Basic " + base64.b64encode(b"reg:secret").decode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
ORDER_V2 = {**ORDER_V1, "fields": [*ORDER_V1["fields"], {"name": "vip", "type": "boolean", "default": False}]}


def _avro(schema: dict, schema_id: int, record: dict) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def _order(i: int) -> dict:
    return {"id": i, "name": f"n{i}", "amount": i / 2, "ts": 1_700_000_000_000 + i, "note": None if i % 2 else "x"}


def test_avro_with_schema_registry_gives_typed_columns(
    tmp_path: Path, cli, kafka_bootstrap: str, registry: _Registry
) -> None:
    from tests.services.kafka import create_topic

    registry.schemas = {11: json.dumps(ORDER_V1), 12: json.dumps(ORDER_V2)}
    topic = _topic()
    create_topic(kafka_bootstrap, topic, 2)
    messages = [
        (None, _avro(ORDER_V2, 12, {**_order(i), "vip": True}) if i % 3 == 0 else _avro(ORDER_V1, 11, _order(i)), i % 2)
        for i in range(3000)
    ]
    _produce(kafka_bootstrap, topic, messages)
    url = f"http://127.0.0.1:{registry.server_address[1]}"
    extra = f"""  record_layout: columns
  message_encoding: avro
  authentication:
    type: basic
    schema_registry_type: confluent
    schema_registry_url: {url}
    schema_registry_username: reg
    schema_registry_password: secret"""
    config = _pipeline(tmp_path, kafka_bootstrap, topic, extra)
    path = tmp_path / config  # the avro encoding replaces the default one (a duplicate key is refused)
    path.write_text(path.read_text().replace("  message_encoding: utf-8\n", ""))
    res = cli("run", config, "--quiet")
    assert res.returncode == 0, res.stderr
    table = _read_parquet(tmp_path / "out" / topic)
    assert table.num_rows == 3000 and pc.count_distinct(table["id"]).as_py() == 3000
    schema = table.schema
    assert schema.field("id").type == pa.int64()
    assert schema.field("amount").type == pa.float64()
    assert pa.types.is_timestamp(schema.field("ts").type)
    assert pa.types.is_string(schema.field("name").type) or pa.types.is_large_string(schema.field("name").type)
    rows = {r["id"]: r for r in table.select(["id", "name", "note", "vip", "_source_offset"]).to_pylist()}
    assert rows[3]["vip"] is True and rows[3]["note"] is None
    assert rows[4]["vip"] is None and rows[4]["note"] == "x" and rows[4]["_source_offset"] == 2
    assert sorted(set(registry.requests)) == ["/schemas/ids/11", "/schemas/ids/12"], "schemas fetched once, cached"


def test_undecodable_message_fails_naming_it_or_is_skipped(tmp_path: Path, cli, kafka_bootstrap: str) -> None:
    from tests.services.kafka import create_topic

    topic = _topic()
    create_topic(kafka_bootstrap, topic, 1)
    _produce(kafka_bootstrap, topic, [*_json_rows(0, 10, 1), (None, b'{"id": 10, oops}', 0), *_json_rows(11, 20, 1)])
    res = cli("run", _pipeline(tmp_path, kafka_bootstrap, topic), "--quiet")
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert f"topic '{topic}' partition 0 offset 10" in text and "skip_message_on_decode_error" in text, text
    extra = "  skip_message_on_decode_error: true\n  record_layout: columns"
    (tmp_path / "p.yml").write_text((tmp_path / "p.yml").read_text().replace("name: kafka-", "name: skip-"))
    res = cli("run", _pipeline(tmp_path, kafka_bootstrap, topic, extra), "--quiet")
    assert res.returncode == 0, res.stderr
    assert sorted(_read_parquet(tmp_path / "out" / topic)["id"].to_pylist()) == [*range(10), *range(11, 20)]


def test_missing_topic_and_unreachable_broker_are_clear_errors(tmp_path: Path, cli, kafka_bootstrap: str) -> None:
    res = cli("run", _pipeline(tmp_path, kafka_bootstrap, "no_such_topic"), "--quiet")
    assert res.returncode == 2, res.stderr
    assert "source.topics" in res.stderr and "'no_such_topic' not found" in res.stderr
    started = time.monotonic()
    res = cli("run", _pipeline(tmp_path, "127.0.0.1:9", "whatever"), "--quiet")
    assert res.returncode == 2 and time.monotonic() - started < 30, "bounded by consumer_timeout"
    assert "source.bootstrap_servers: cannot reach Kafka at 127.0.0.1:9" in res.stderr


def test_empty_topic_finishes_with_no_rows(tmp_path: Path, cli, kafka_bootstrap: str) -> None:
    from tests.services.kafka import create_topic

    topic = _topic()
    create_topic(kafka_bootstrap, topic, 2)
    started = time.monotonic()
    res = cli("run", _pipeline(tmp_path, kafka_bootstrap, topic, fmt="json"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - started < 20
    out = tmp_path / "out" / f"{topic}.json"
    assert not out.exists() or out.read_text() == ""


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{name: kafka, stream: topic, bootstrap_servers: 'h:9092'}", "source.authentication"),
        (
            "{name: kafka, stream: topic, bootstrap_servers: 'h:9092', consumer_config: {}, record_layout: rows}",
            "record_layout",
        ),
        ("{name: kafka, stream: topic, consumer_config: {}}", "bootstrap_servers"),
        (
            "{name: kafka, stream: topic, bootstrap_servers: h, consumer_config: {}, message_encoding: protobuf}",
            "message_encoding",
        ),
    ],
)
def test_bad_kafka_configs_name_the_key(tmp_path: Path, source: str, message: str) -> None:
    from bizon_fast.connectors.pipeline import load_config
    from bizon_fast.errors import UserError

    (tmp_path / "p.yml").write_text(f"name: x\nsource: {source}\ndestination: {{name: noop}}\n")
    with pytest.raises(UserError) as info:
        load_config(str(tmp_path / "p.yml"))
    assert message in str(info.value)


def test_example_config_validates() -> None:
    from bizon_fast.connectors.pipeline import load_config
    from bizon_fast.connectors.sources.kafka.config import KafkaSourceConfig

    cfg = load_config(str(REPO / "configs" / "kafka_to_parquet.yml"))
    assert isinstance(cfg.source, KafkaSourceConfig)
    assert cfg.source.topics[0].name and cfg.source.record_layout == "columns"


# ---------------------------------------------------------------- decoder units


def test_avro_container_decode_matches_fastavro() -> None:
    datums = [_avro(ORDER_V1, 5, _order(i)) for i in range(1000)]
    ids, heads = decode.wire_ids(datums, "confluent")
    assert set(ids) == {5} and set(heads) == {5}
    table = decode.avro_table(json.dumps(ORDER_V1), [memoryview(d)[5:] for d in datums])
    assert table.num_rows == 1000
    assert table.column("id").to_pylist() == list(range(1000))
    assert table.column("note").to_pylist()[:2] == ["x", None]
    assert table.column("ts")[1].as_py().timestamp() == 1_700_000_000.001


def test_apicurio_ids_and_malformed_headers() -> None:
    apicurio = struct.pack(">bq", 0, 42) + b"\x02"
    confluent = struct.pack(">bI", 0, 7) + b"\x02"
    ids, heads = decode.wire_ids([apicurio, confluent, b"{}", b""], "apicurio")
    assert ids == [42, 7, -1, -1] and heads[:2] == [9, 5]


def test_json_table_keeps_one_row_per_message_and_known_types() -> None:
    values = [b'{"a": 1,\n "b": "x"}', b'{"a": 2}', b'{\r\n"c": true}']
    table = decode.json_table(values)
    assert table.num_rows == 3 and table.column("a").to_pylist() == [1, 2, None]
    known = decode.merge_schema(None, table.schema)
    later = decode.json_table([b'{"c": false}'], known)
    assert later.schema.names == ["a", "b", "c"] and later.schema.field("a").type == pa.int64()


UTC = pa.timestamp("us", tz="UTC")
NAIVE = pa.timestamp("us")


def _micros(text: str) -> int:
    """Microseconds since the epoch of an ISO text (a naive one read as UTC), computed outside Arrow."""
    from datetime import UTC as utc
    from datetime import datetime

    moment = datetime.fromisoformat(text)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=utc)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _stamps(values: list[str], known: pa.Schema | None = None) -> pa.ChunkedArray:
    rows = [b'{"t": null}' if v is None else json.dumps({"t": v}).encode() for v in values]
    return decode.json_table(rows, known).column("t")


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-01-01T00:00:00+00:00", "2024-01-01T00:00:00+00:00"),
        ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00+00:00"),
        ("2024-01-01T02:00:00+02:00", "2024-01-01T00:00:00+00:00"),
        ("2024-06-30T23:30:00.123456-05:30", "2024-07-01T05:00:00.123456+00:00"),
    ],
)
def test_json_timestamp_with_an_offset_is_a_utc_instant(text: str, utc: str) -> None:
    column = _stamps([text])
    assert column.type == UTC
    assert column.cast(pa.int64()).to_pylist() == [_micros(utc)]


def test_json_timestamp_without_an_offset_stays_naive() -> None:
    column = _stamps(["2024-01-01T02:00:00", "2024-01-01 03:00:00.5", None])
    assert column.type == NAIVE
    assert column.cast(pa.int64()).to_pylist() == [
        _micros("2024-01-01T02:00:00"),
        _micros("2024-01-01T03:00:00.5"),
        None,
    ]


def test_json_timestamps_mixed_in_one_column() -> None:
    """A new column with any offset is zoned, its naive values taken as UTC; after that a column keeps its type."""
    mixed = _stamps(["2024-01-01T02:00:00+02:00", "2024-01-01T05:00:00"])
    assert mixed.type == UTC
    assert mixed.cast(pa.int64()).to_pylist() == [_micros("2024-01-01T00:00:00"), _micros("2024-01-01T05:00:00")]
    naive_known = pa.schema([pa.field("t", NAIVE)])
    later = _stamps(["2024-01-01T02:00:00+02:00", "2024-01-01T05:00:00"], naive_known)
    assert later.type == NAIVE, "a column first seen naive stays naive: offsets are converted to UTC, then dropped"
    assert later.cast(pa.int64()).to_pylist() == [_micros("2024-01-01T00:00:00"), _micros("2024-01-01T05:00:00")]
    zoned_known = pa.schema([pa.field("t", UTC)])
    later = _stamps(["2024-01-01T05:00:00", None], zoned_known)
    assert later.type == UTC and later.cast(pa.int64()).to_pylist() == [_micros("2024-01-01T05:00:00"), None]
    assert _stamps(["2024-01-01T05:00:00Z", "not a time"]).type == pa.string(), "a non-timestamp keeps the strings"


def test_json_validation_repairs_like_bizon() -> None:
    values = [b'{"a": "\\udf31"}', b'{"a": "ok\x01"}', b'{"a":}', b"[1]"]
    assert not decode.validate_json(values)
    fixed, bad = decode.repair_json(values, objects_only=True)
    assert fixed[0] == b'{"a": "\\ufffd"}' and fixed[1] == b'{"a": "ok"}'
    assert bad == [2, 3]
    assert decode.repair_json(values, objects_only=False)[1] == [2]


def test_bizon_data_is_valid_json_in_bizons_key_order() -> None:
    data = decode.bizon_data(
        topic='we"ird',
        partitions=pa.array([0, 1], pa.int32()),
        offsets=pa.array([5, 6], pa.int64()),
        timestamps_ms=pa.array([1, 2], pa.int64()),
        keys_json=decode.keys_json([None, b'"k"']),
        headers_json=decode.headers_json([None, [("h", b"v")]]),
        values_json=pa.array(['{"x":1}', "null"]),
        schema_json="{}",
    )
    first, second = (json.loads(s) for s in data.to_pylist())
    assert list(first) == ["topic", "offset", "partition", "timestamp", "keys", "headers", "value", "schema"]
    assert first["topic"] == 'we"ird' and first["keys"] == {} and first["value"] == {"x": 1}
    assert second["keys"] == "k" and second["headers"] == {"h": "v"} and second["value"] is None
    assert decode.bad_keys([b"{}", b"not json", None]) == [1]


def test_registry_errors_name_the_setting(registry: _Registry) -> None:
    url = f"http://127.0.0.1:{registry.server_address[1]}"
    client = decode.SchemaRegistry(url, "confluent", "reg", "secret", timeout=5)
    with pytest.raises(decode.MessageDecodeError, match="schema id 99 not found"):
        client.schema(99)
    with pytest.raises(decode.MessageDecodeError, match="HTTP 401"):
        decode.SchemaRegistry(url, "confluent", "reg", "wrong", timeout=5).schema(1)
    with pytest.raises(decode.MessageDecodeError, match="schema_registry_url"):
        decode.SchemaRegistry("http://127.0.0.1:9", "confluent", timeout=2).schema(1)


class _Msg:
    """What the source reads of a confluent_kafka.Message (the class cannot be built outside librdkafka)."""

    def __init__(self, value: bytes | None, offset: int, partition: int = 0, key: bytes | None = None) -> None:
        self._value, self._offset, self._partition, self._key = value, offset, partition, key

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._offset)

    def headers(self) -> None:
        return None

    def topic(self) -> str:
        return "orders"

    def error(self) -> None:
        return None


def _source(**extra: object):
    from bizon_fast.connectors.sources.kafka.config import KafkaSourceConfig
    from bizon_fast.connectors.sources.kafka.source import KafkaSource

    config = {"name": "kafka", "stream": "topic", "bootstrap_servers": "unused:9092", "consumer_config": {}}
    config["topics"] = [{"name": "orders", "destination_id": "orders_table"}]
    source = KafkaSource(KafkaSourceConfig.model_validate({**config, **extra}))
    source.registry.cache.update({11: json.dumps(ORDER_V1), 12: json.dumps(ORDER_V2)})
    return source


def test_avro_batch_keeps_message_order_across_schema_ids_in_both_layouts() -> None:
    msgs = [
        _Msg(_avro(ORDER_V2, 12, {**_order(i), "vip": True}) if i % 3 == 0 else _avro(ORDER_V1, 11, _order(i)), i)
        for i in range(30)
    ]
    msgs.insert(5, _Msg(b"not avro", 99))
    with pytest.raises(decode.MessageDecodeError, match="partition 0 offset 99"):
        _source(record_layout="columns")._batch("orders", msgs)
    batch = _source(record_layout="columns", skip_message_on_decode_error=True)._batch("orders", msgs)
    assert batch.column("id").to_pylist() == list(range(30))
    assert batch.column("_source_offset").to_pylist() == list(range(30))
    assert batch.column("vip").to_pylist()[:4] == [True, None, None, True]
    records = _source(record_layout="bizon", skip_message_on_decode_error=True)._batch("orders", msgs)
    assert records.column("id").to_pylist()[:2] == ["partition_0_offset_0", "partition_0_offset_1"]
    assert set(records.column("destination_id").to_pylist()) == {"orders_table"}
    first, second = (json.loads(t) for t in records.column("data").to_pylist()[:2])
    assert first["value"]["vip"] is True and first["value"]["id"] == 0 and first["schema"] == ORDER_V2
    assert "vip" not in second["value"] and second["value"]["name"] == "n1"


# ---------------------------------------------------------------- SIGKILL (issue 18)

SLOW_FILE = "slow_file=tests.fixtures.slow_file:SlowFileDestination"
KILL_ROWS = 16_000


def _kill_pipeline(tmp_path: Path, bootstrap: str, topic: str) -> str:
    """Small source batches, one ring slot each, a destination that takes 100 ms a write: the run lasts a few
    seconds, so kills land mid-run."""
    (tmp_path / "p.yml").write_text(
        f"""
name: kafka-kill-{topic}
source:
  name: kafka
  stream: topic
  topics: [{TOPIC_CFG % (topic, topic)}]
  bootstrap_servers: {bootstrap}
  group_id: g-{topic}
  message_encoding: utf-8
  consumer_timeout: 3
  batch_size: 200
  record_layout: columns
  consumer_config: {{auto.offset.reset: earliest}}
destination: {{name: slow_file, config: {{destination_id: out/{topic}, format: parquet, buffer_size: 0,
  write_delay_s: 0.1}}}}
engine: {{queue: {{config: {{batch_size_mb: 0.01}}}}, runner: {{config: {{max_workers: 2, max_restarts: 50}}}}}}
"""
    )
    return "p.yml"


def _kill_env(monkeypatch) -> None:
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", SLOW_FILE)
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def _assert_each_message_once(path: Path, rows: int, partitions: int) -> None:
    """Every message exactly once, with the values it was produced with (id, name, amount, its partition
    and offset): a replay that wrote a message twice or under another offset fails here."""
    table = _read_parquet(path).sort_by("id")
    assert table.num_rows == rows, f"{table.num_rows} rows, expected {rows}"
    assert table["id"].to_pylist() == list(range(rows)), "an id is missing or repeated"
    assert table["name"].to_pylist() == [f"n{i}" for i in range(rows)]
    assert table["amount"].to_pylist() == [i / 4 for i in range(rows)]
    assert table["_source_partition"].to_pylist() == [i % partitions for i in range(rows)]
    assert table["_source_offset"].to_pylist() == [i // partitions for i in range(rows)]


@pytest.mark.slow
def test_kafka_source_survives_sigkilled_workers(tmp_path: Path, kafka_bootstrap: str, monkeypatch) -> None:
    """Random producers (the Kafka readers) and consumers are SIGKILLed mid-run: a replacement reads its
    partition again from the last batch that reached the ring; each message lands once."""
    import random

    from native_bench.services import start_run
    from tests.faults import kill_workers_randomly
    from tests.services.kafka import create_topic

    _kill_env(monkeypatch)
    topic = _topic()
    create_topic(kafka_bootstrap, topic, 4)
    _produce(kafka_bootstrap, topic, _json_rows(0, KILL_ROWS, 4))
    proc = start_run(tmp_path, _kill_pipeline(tmp_path, kafka_bootstrap, topic))
    deadline = time.monotonic() + 60
    while not any((tmp_path / "out").glob(f".{topic}.bizon-fast/*/part-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    killed = kill_workers_randomly(proc, kills=3, rng=random.Random("kafka-source"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(killed) == 3, f"the run ended before the kills: {killed}"
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    import re

    deaths = re.findall(r"(?:producer|consumer)-\d+ died \(killed by SIGKILL\)", log)
    assert len(deaths) == 3, f"the supervisor must see every kill: {killed} vs {deaths}"
    _assert_each_message_once(tmp_path / "out" / topic, KILL_ROWS, 4)


@pytest.mark.slow
def test_kafka_source_supervisor_sigkill_then_rerun_resumes(tmp_path: Path, kafka_bootstrap: str, monkeypatch) -> None:
    """The supervisor is SIGKILLed once some offsets are committed; the same command resumes the job
    (attempt 2) from the committed offsets: nothing read twice, nothing skipped."""
    import psutil

    from native_bench.services import start_run, workers_of
    from tests.faults import committed_rows, job_rows
    from tests.services.kafka import create_topic

    _kill_env(monkeypatch)
    topic = _topic()
    create_topic(kafka_bootstrap, topic, 4)
    _produce(kafka_bootstrap, topic, _json_rows(0, KILL_ROWS, 4))
    config = _kill_pipeline(tmp_path, kafka_bootstrap, topic)
    proc = start_run(tmp_path, config)
    deadline = time.monotonic() + 60
    while committed_rows(tmp_path) < 1000:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    orphans = workers_of(proc.pid)
    psutil.Process(proc.pid).kill()
    proc.communicate(timeout=10)
    psutil.wait_procs(orphans, timeout=5)
    committed = committed_rows(tmp_path)
    assert 0 < committed < KILL_ROWS, f"{committed} rows committed at the kill"

    again = start_run(tmp_path, config)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    [(job_id, status, attempt, _)] = job_rows(tmp_path)
    assert (status, attempt) == ("succeeded", 2), "the job resumed instead of starting over"
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert f"resuming job {job_id} (attempt 2)" in log
    _assert_each_message_once(tmp_path / "out" / topic, KILL_ROWS, 4)


@pytest.mark.parametrize("layout", ["columns", "bizon"])
@pytest.mark.parametrize("bad", [b'{"id": 3, "name": "\xff"}', b'{"id": 3} {"id": 33}', b"   "])
def test_json_batch_names_or_skips_a_bad_value_the_bulk_decode_let_through(layout: str, bad: bytes) -> None:
    """Invalid UTF-8 inside a string, two documents in one value, a blank value: the bulk decode must not
    let them pass as rows (or crash): the message is named, or skipped with skip_message_on_decode_error."""
    msgs = [_Msg(json.dumps({"id": i}).encode() if i != 3 else bad, i) for i in range(6)]
    with pytest.raises(decode.MessageDecodeError, match="partition 0 offset 3"):
        _source(record_layout=layout, message_encoding="utf-8")._batch("orders", msgs)
    batch = _source(record_layout=layout, message_encoding="utf-8", skip_message_on_decode_error=True)._batch(
        "orders", msgs
    )
    if layout == "columns":
        assert batch.column("id").to_pylist() == [0, 1, 2, 4, 5]
        assert batch.column("_source_offset").to_pylist() == [0, 1, 2, 4, 5]
    else:
        assert batch.column("id").to_pylist() == [f"partition_0_offset_{i}" for i in (0, 1, 2, 4, 5)]
        assert [json.loads(t)["value"] for t in batch.column("data").to_pylist()] == [
            {"id": i} for i in (0, 1, 2, 4, 5)
        ]
