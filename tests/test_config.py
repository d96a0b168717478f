"""Pipeline config: bizon's YAML accepted unchanged, bizon-fast's keys, and errors that say where and what."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bizon_fast.config.load import read_raw_config
from bizon_fast.config.pipeline import PipelineConfig
from bizon_fast.config.secrets import find_references
from bizon_fast.connectors.pipeline import load_config
from bizon_fast.errors import ConfigError

# bizon.md 1.7: the README quickstart (dummy -> logger)
MINIMAL = """\
name: demo-creatures-pipeline

source:
  name: dummy
  stream: creatures
  authentication:
    type: api_key
    params:
      token: dummy_key

destination:
  name: logger
  config:
    dummy: dummy
"""

# bizon.md 1.8(b): every non-stream key (validation does not connect to Postgres, Slack or Datadog)
MAXIMAL = """\
name: dummy-creatures-max
secrets: {gsm: {project_id: my-gcp-project}}
source:
  name: dummy
  stream: creatures
  sync_mode: incremental
  cursor_field: updated_at
  force_ignore_checkpoint: false
  reset: false
  max_iterations: 1000
  api_config: {retry_limit: 10}
  init_pipeline: true
  sleep: 0                       # dummy-specific
  authentication:
    type: api_key
    params: {token: "${env://DUMMY_TOKEN}", auth_method: Bearer, auth_header: Authorization}
transforms:
  - label: upper_name
    python: |
      if 'name' in data:
          data['name'] = data['name'].upper()
destination:
  name: file
  alias: file
  config:
    destination_id: creatures_out
    format: json
    buffer_size: 50
    buffer_flush_timeout: 600
    max_concurrent_threads: 10
    unnest: true
    record_schemas:
      - destination_id: creatures_out
        record_schema:
          - {name: id, type: integer, description: creature id}
          - {name: name, type: string}
          - {name: age, type: integer}
engine:
  backend:
    type: postgres
    config: {host: localhost, port: 5432, database: bizon, schema: public, username: postgres,
             password: "${env://PG_PASSWORD}", syncCursorInDBEvery: 2, echoEngine: false}
  queue:
    type: python_queue
    config: {max_nb_messages: 1000000, queue: {max_size: 0}, consumer: {poll_interval: 1}}
  runner:
    type: thread
    log_level: INFO
    config: {max_workers: 2, consumer_start_delay: 2, is_alive_check_interval: 2}
alerting: {type: slack, log_levels: [ERROR, WARNING], config: {webhook_url: "https://hooks.slack.com/services/XXX"}}
monitoring:
  type: datadog
  enable_tracing: false
  config: {enable_tracing: false, datadog_agent_host: localhost, datadog_agent_port: 8125, tags: {env: dev}}
"""

# bizon.md 1.8(a): bizon's kafka_streams.example.yml, verbatim
KAFKA_STREAMS = """\
name: kafka_streams_example

source:
  name: kafka
  stream: topic
  sync_mode: stream
  # No topics needed - they are automatically extracted from streams config
  nb_bytes_schema_id: 4
  timestamp_ms_name: ts_ms
  batch_size: 100
  consumer_timeout: 30
  bootstrap_servers: your-kafka-broker:9092
  group_id: your-consumer-group
  authentication:
    type: basic
    schema_registry_url: https://your-schema-registry:8081
    params:
      username: your-kafka-username
      password: your-kafka-password

destination:
  name: bigquery_streaming_v2
  config:
    dataset_id: your_dataset
    dataset_location: US
    project_id: your-gcp-project
    unnest: true
    time_partitioning:
      type: DAY
      field: __inserted_at

streams:
  - name: "users"
    source:
      topic: "cdc.public.users"
    destination:
      table_id: "your-gcp-project.your_dataset.users"
      clustering_keys:
        - "id"
      record_schema:
        - name: "id"
          type: "INTEGER"
          mode: "REQUIRED"
        - name: "email"
          type: "STRING"
          mode: "NULLABLE"
        - name: "payload"
          type: "JSON"
          mode: "NULLABLE"
        - name: "__operation"
          type: "STRING"
          mode: "NULLABLE"
        - name: "__deleted"
          type: "BOOLEAN"
          mode: "NULLABLE"
        - name: "__kafka_partition"
          type: "INTEGER"
          mode: "NULLABLE"
        - name: "__kafka_offset"
          type: "INTEGER"
          mode: "NULLABLE"
        - name: "__kafka_topic"
          type: "STRING"
          mode: "NULLABLE"
        - name: "__event_timestamp"
          type: "TIMESTAMP"
          mode: "NULLABLE"
        - name: "__inserted_at"
          type: "TIMESTAMP"
          mode: "NULLABLE"
          default_value_expression: "CURRENT_TIMESTAMP()"

  - name: "orders"
    source:
      topic: "cdc.public.orders"
    destination:
      table_id: "your-gcp-project.your_dataset.orders"
      clustering_keys:
        - "id"
        - "user_id"
      record_schema:
        - name: "id"
          type: "INTEGER"
          mode: "REQUIRED"
        - name: "user_id"
          type: "INTEGER"
          mode: "REQUIRED"
        - name: "payload"
          type: "JSON"
          mode: "NULLABLE"
        - name: "__operation"
          type: "STRING"
          mode: "NULLABLE"
        - name: "__deleted"
          type: "BOOLEAN"
          mode: "NULLABLE"
        - name: "__kafka_partition"
          type: "INTEGER"
          mode: "NULLABLE"
        - name: "__kafka_offset"
          type: "INTEGER"
          mode: "NULLABLE"
        - name: "__kafka_topic"
          type: "STRING"
          mode: "NULLABLE"
        - name: "__event_timestamp"
          type: "TIMESTAMP"
          mode: "NULLABLE"
        - name: "__inserted_at"
          type: "TIMESTAMP"
          mode: "NULLABLE"
          default_value_expression: "CURRENT_TIMESTAMP()"

engine:
  runner:
    type: stream  # Required when using streams config
"""

SYNTHETIC = """\
name: synth
source:
  name: synthetic
  stream: events
  rows: 1000
destination:
  name: noop
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in an empty directory (no stray ./.env) with the variables the examples use unset."""
    monkeypatch.chdir(tmp_path)
    for name in ("DUMMY_TOKEN", "PG_PASSWORD", "BF_TEST_VAR", "BIZON_ENV_BF_TEST"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "pipeline.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    return str(info.value)


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# ---------------------------------------------------------------- bizon's examples


def test_minimal_example_validates_with_bizon_fast_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert isinstance(cfg, PipelineConfig)
    assert (cfg.name, cfg.source.name, cfg.source.stream, cfg.source.sync_mode) == (
        "demo-creatures-pipeline",
        "dummy",
        "creatures",
        "full_refresh",
    )
    assert cfg.destination.name == "logger" and cfg.destination.alias == "logger"
    assert cfg.destination.config.buffer_size == 50 and cfg.destination.config.buffer_flush_timeout == 600
    assert cfg.engine.backend.type == "sqlite" and cfg.engine.backend.config.syncCursorInDBEvery == 10
    assert cfg.engine.queue.type == "shm" and cfg.engine.queue.config.batch_size_mb == 4
    assert cfg.engine.runner.type == "process" and cfg.engine.runner.log_level == "INFO"
    assert cfg.engine.runner.config.max_workers is None and cfg.engine.runner.config.workers() >= 1
    assert cfg.transforms == [] and cfg.streams is None


def test_maximal_example_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUMMY_TOKEN", "tok")
    monkeypatch.setenv("PG_PASSWORD", "pw")
    cfg = load_config(write(tmp_path, MAXIMAL))
    assert cfg.source.sync_mode == "incremental" and cfg.source.max_iterations == 1000
    auth = cfg.source.model_dump()["authentication"]
    assert auth["type"] == "api_key" and auth["params"]["token"] == "tok"
    assert cfg.transforms[0].label == "upper_name" and "upper()" in cfg.transforms[0].python
    dest = cfg.destination.config
    assert cfg.destination.alias == "file" and dest.destination_id == "creatures_out" and dest.unnest
    assert [c.name for c in dest.record_schemas[0].record_schema] == ["id", "name", "age"]
    backend = cfg.engine.backend.config
    assert cfg.engine.backend.type == "postgres"
    assert (backend.host, backend.port, backend.schema_name, backend.password) == ("localhost", 5432, "public", "pw")
    assert backend.syncCursorInDBEvery == 2
    assert cfg.engine.queue.type == "python_queue" and cfg.engine.queue.config.queue.max_size == 0
    assert cfg.engine.runner.type == "thread" and cfg.engine.runner.config.max_workers == 2
    assert cfg.alerting.config.webhook_url.startswith("https://hooks.slack.com/")
    assert cfg.alerting.log_levels == ["ERROR", "WARNING"]
    assert cfg.monitoring.config.tags == {"env": "dev"}
    assert cfg.secrets.gsm.project_id == "my-gcp-project"


def test_kafka_streams_example_validates_and_injects_topics_and_schemas(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, KAFKA_STREAMS))
    source = cfg.source.model_dump()
    assert source["topics"] == [
        {"name": "cdc.public.users", "destination_id": "your-gcp-project.your_dataset.users"},
        {"name": "cdc.public.orders", "destination_id": "your-gcp-project.your_dataset.orders"},
    ]
    assert source["bootstrap_servers"] == "your-kafka-broker:9092" and source["nb_bytes_schema_id"] == 4
    assert cfg.destination.alias == "bigquery"
    schemas = cfg.destination.config.record_schemas
    assert [s.destination_id for s in schemas] == [
        "your-gcp-project.your_dataset.users",
        "your-gcp-project.your_dataset.orders",
    ]
    assert schemas[1].clustering_keys == ["id", "user_id"]
    assert cfg.destination.config.time_partitioning.field == "__inserted_at"
    assert [s.name for s in cfg.streams] == ["users", "orders"]
    assert cfg.engine.runner.type == "stream"


def test_synthetic_source_is_validated_with_its_own_config_class(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SYNTHETIC))
    assert type(cfg.source).__name__ == "SyntheticSourceConfig"
    assert cfg.source.rows == 1000 and cfg.destination.alias == "noop"


def test_destination_config_round_trips_through_its_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers rebuild the destination config from ``model_dump(by_alias=True)``: it must validate again."""
    monkeypatch.setenv("DUMMY_TOKEN", "tok")
    monkeypatch.setenv("PG_PASSWORD", "pw")
    for text in (MINIMAL, MAXIMAL, KAFKA_STREAMS, SYNTHETIC):
        cfg = load_config(write(tmp_path, text))
        details = cfg.destination.config
        assert type(details).model_validate(details.model_dump(mode="json", by_alias=True)) == details
        source = cfg.source
        assert type(source).model_validate(source.model_dump(mode="json")) == source


# ---------------------------------------------------------------- errors


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "foo: 1\n")
    message = error_of(path)
    assert message.startswith(f"{path}:{len(MINIMAL.splitlines()) + 1}: foo: unknown key 'foo'; expected one of: ")
    assert "name, source, transforms, destination, engine" in message
    assert "\n" not in message


def test_unknown_nested_key_names_path_line_and_the_accepted_keys(tmp_path: Path) -> None:
    text = SYNTHETIC + "engine:\n  runner:\n    config:\n      max_wrkers: 2\n"
    path = write(tmp_path, text)
    message = error_of(path)
    line = line_of(text, "max_wrkers")
    assert message == (
        f"{path}:{line}: engine.runner.config.max_wrkers: unknown key 'max_wrkers'; expected one of: max_workers, "
        "producers, consumers, max_restarts, role, lease_seconds, stall_timeout_s, drain_timeout_s, "
        "consumer_start_delay, is_alive_check_interval "
        "(did you mean 'max_workers'?)"
    )


def test_wrong_type_names_path_line_given_and_expected(tmp_path: Path) -> None:
    text = SYNTHETIC + "engine:\n  runner:\n    config:\n      max_workers: four\n"
    path = write(tmp_path, text)
    assert error_of(path) == (
        f"{path}:{line_of(text, 'four')}: engine.runner.config.max_workers: expected an integer, got 'four'"
    )


def test_wrong_type_of_a_connector_key_is_reported_at_its_path(tmp_path: Path) -> None:
    text = SYNTHETIC.replace("rows: 1000", "rows: lots")
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:{line_of(text, 'rows: lots')}: source.rows: expected an integer, got 'lots'"


def test_several_errors_are_listed_one_per_line_in_file_order(tmp_path: Path) -> None:
    text = """\
    name: x
    bogus: 1
    source:
      name: synthetic
      stream: events
      sync_mode: fullrefresh
    destination:
      name: file
      config:
        unnest: true
    """
    path = write(tmp_path, text)
    lines = error_of(path).splitlines()
    assert lines == [
        f"{path}:2: bogus: unknown key 'bogus'; expected one of: name, source, transforms, destination, engine, "
        "alerting, monitoring, secrets, streams",
        f"{path}:6: source.sync_mode: expected one of 'full_refresh', 'incremental' or 'stream', got 'fullrefresh'",
        f"{path}:10: destination.config.unnest: unnest: true needs record_schemas (the columns of each destination_id)",
    ]


def test_missing_required_key_points_at_its_block(tmp_path: Path) -> None:
    text = """\
    name: x
    source:
      name: synthetic
      stream: events
    destination:
      name: bigquery
      config:
        project_id: p
    """
    path = write(tmp_path, text)
    lines = error_of(path).splitlines()
    assert lines == [
        f"{path}:7: destination.config.dataset_id: required key is missing",
    ]
    no_name = write(tmp_path, "source: {name: synthetic, stream: events}\ndestination: {name: noop}\n", "n.yml")
    assert error_of(no_name) == f"{no_name}: name: required key is missing"


def test_malformed_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsource:\n  name: dummy\n   stream: creatures\n")
    assert error_of(path) == f"{path}:4:10: malformed YAML: mapping values are not allowed here"
    tabs = write(tmp_path, "name: x\nsource:\n\tname: a\n", "tabs.yml")
    assert "tabs.yml:3:1: malformed YAML" in error_of(tabs) and "tabs" in error_of(tabs)


def test_not_a_pipeline(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, "")).endswith(
        "the file is empty; expected a pipeline (name, source, destination, ...)"
    )
    assert error_of(write(tmp_path, "- a\n- b\n")).endswith(
        ":1: expected a mapping of keys (name, source, destination, ...), got a list"
    )
    assert error_of(tmp_path / "nope.yml") == f"{tmp_path / 'nope.yml'}: no such file"


def test_unknown_source_lists_the_available_ones(tmp_path: Path) -> None:
    text = SYNTHETIC.replace("name: synthetic", "name: nope")
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:3: source.name: unknown source 'nope'; available: ")
    assert "dummy" in message and "synthetic" in message


def test_bizon_source_without_a_bizon_fast_connector_says_so(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, SYNTHETIC.replace("name: synthetic", "name: hubspot")))
    expected = "source.name: 'hubspot' is one of bizon's sources: pip install 'bizon-fast[bizon]' brings it; "
    assert expected in message


def test_unknown_stream_lists_the_source_streams(tmp_path: Path) -> None:
    path = write(tmp_path, SYNTHETIC.replace("stream: events", "stream: rows"))
    assert error_of(path) == f"{path}:4: source.stream: unknown stream 'rows' for source 'synthetic'; available: events"


def test_unknown_destination_lists_the_available_ones(tmp_path: Path) -> None:
    path = write(tmp_path, SYNTHETIC.replace("name: noop", "name: s3"))
    message = error_of(path)
    assert message.startswith(f"{path}:7: destination.name: unknown destination 's3'; available: ")
    for name in ("bigquery", "bigquery_streaming", "bigquery_streaming_v2", "file", "logger", "noop", "postgres"):
        assert name in message


def test_destination_config_is_checked_by_the_destination_named(tmp_path: Path) -> None:
    text = SYNTHETIC.replace("name: noop", "name: file\n  config:\n    destination_id: out\n    dummy: x")
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line_of(text, 'dummy: x')}: destination.config.dummy: unknown key 'dummy'")
    assert "format" in message  # the file destination's keys are the ones offered


def test_missing_env_var_names_path_line_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("token: dummy_key", "token: ${env://DUMMY_TOKEN}"))
    message = error_of(path)
    assert message.startswith(f"{path}:{line_of(MINIMAL, 'token:')}: source.authentication.params.token: ")
    assert "environment variable DUMMY_TOKEN is not set" in message


def test_a_value_from_a_reference_is_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BF_TEST_VAR", "hunter2")
    text = SYNTHETIC.replace("rows: 1000", "rows: ${env://BF_TEST_VAR}")
    message = error_of(write(tmp_path, text))
    assert "hunter2" not in message
    assert "source.rows: expected an integer, got the value of '${env://BF_TEST_VAR}'" in message


# ---------------------------------------------------------------- bizon's validators


STREAMS_BASE = """\
name: x
source:
  name: synthetic
  stream: events
  sync_mode: stream
destination:
  name: file
  config:
    unnest: true
streams:
  - name: a
    destination:
      table_id: p.d.a
      record_schema: [{name: id, type: INTEGER, mode: REQUIRED}]
      clustering_keys: [id]
"""


def test_streams_with_a_file_destination_validate(tmp_path: Path) -> None:
    """bizon injected BigQuery-only clustering_keys and rejected this; only BigQuery gets them here."""
    cfg = load_config(write(tmp_path, STREAMS_BASE))
    assert cfg.destination.config.record_schemas[0].destination_id == "p.d.a"
    assert [c.name for c in cfg.destination.config.record_schemas[0].record_schema] == ["id"]


def test_streams_duplicate_names_and_table_ids(tmp_path: Path) -> None:
    text = STREAMS_BASE + (
        "  - name: a\n    destination:\n      table_id: p.d.a\n"
        "      record_schema: [{name: id, type: INTEGER, mode: REQUIRED}]\n"
    )
    path = write(tmp_path, text)
    lines = error_of(path).splitlines()
    assert lines == [
        f"{path}:16: streams[1].name: duplicate stream name 'a' (also streams[0])",
        f"{path}:18: streams[1].destination.table_id: duplicate table_id 'p.d.a' (also streams[0])",
    ]


def test_streams_need_stream_sync_mode(tmp_path: Path) -> None:
    path = write(tmp_path, STREAMS_BASE.replace("  sync_mode: stream\n", ""))
    assert error_of(path) == (f"{path}:9: streams: a streams block needs source.sync_mode: stream (got 'full_refresh')")


def test_stream_table_id_needs_three_parts(tmp_path: Path) -> None:
    path = write(tmp_path, STREAMS_BASE.replace("table_id: p.d.a", "table_id: d.a"))
    assert error_of(path) == (
        f"{path}:{line_of(STREAMS_BASE, 'table_id')}: streams[0].destination.table_id: "
        "expected 'project.dataset.table' (3 dot-separated parts)"
    )


def test_unnest_without_record_schemas_is_rejected(tmp_path: Path) -> None:
    text = SYNTHETIC.replace("name: noop", "name: file\n  config:\n    unnest: true")
    path = write(tmp_path, text)
    assert error_of(path) == (
        f"{path}:{line_of(text, 'unnest')}: destination.config.unnest: "
        "unnest: true needs record_schemas (the columns of each destination_id)"
    )


def test_reset_with_bigquery_streaming_is_rejected(tmp_path: Path) -> None:
    text = """\
    name: x
    source: {name: synthetic, stream: events, sync_mode: incremental, reset: true}
    destination: {name: bigquery_streaming, config: {project_id: p, dataset_id: d}}
    """
    message = error_of(write(tmp_path, text))
    assert ":2: source.reset: destination 'bigquery_streaming' appends in every sync mode" in message
    ok = load_config(write(tmp_path, text.replace("bigquery_streaming", "bigquery_streaming_v2"), "ok.yml"))
    assert ok.source.reset is True


# ---------------------------------------------------------------- overrides and substitution


def test_workers_override_only_when_given(tmp_path: Path) -> None:
    path = write(tmp_path, SYNTHETIC + "engine:\n  runner:\n    type: thread\n    config: {max_workers: 2}\n")
    assert load_config(path).engine.runner.config.max_workers == 2
    cfg = load_config(path, workers=7)
    assert cfg.engine.runner.config.max_workers == 7
    assert cfg.engine.runner.config.producer_count() == 7 and cfg.engine.runner.config.consumer_count() == 7
    assert load_config(write(tmp_path, SYNTHETIC, "bare.yml"), workers=3).engine.runner.config.max_workers == 3
    with pytest.raises(ConfigError, match=r"^--workers: expected an integer >= 1, got 0$"):
        load_config(path, workers=0)


def test_runner_and_log_level_override_only_when_given(tmp_path: Path) -> None:
    path = write(tmp_path, SYNTHETIC + "engine:\n  runner:\n    type: thread\n    log_level: WARNING\n")
    cfg = load_config(path)
    assert (cfg.engine.runner.type, cfg.engine.runner.log_level) == ("thread", "WARNING")
    cfg = load_config(path, runner="process", log_level="debug")
    assert (cfg.engine.runner.type, cfg.engine.runner.log_level) == ("process", "DEBUG")
    with pytest.raises(ConfigError, match="^--runner: expected one of thread, process, stream"):
        load_config(path, runner="fork")
    with pytest.raises(ConfigError, match="^--log-level: expected one of TRACE"):
        load_config(path, log_level="LOUD")


def test_custom_source_sets_source_file_path(tmp_path: Path) -> None:
    custom = tmp_path / "flowers.py"
    custom.write_text(
        textwrap.dedent(
            """\
            from pydantic import Field

            from bizon_fast.config.source import SourceConfig
            from bizon_fast.source.base import Source


            class FlowersConfig(SourceConfig):
                petals: int = Field(5, ge=1)


            class FlowerSource(Source):
                @staticmethod
                def streams():
                    return ["flowers"]

                @staticmethod
                def get_config_class():
                    return FlowersConfig

                def splits(self):
                    return []

                def read(self, split, position):
                    return iter(())
            """
        )
    )
    text = "name: x\nsource: {name: anything, stream: flowers, petals: 0}\ndestination: {name: noop}\n"
    path = write(tmp_path, text)
    message = error_of(path, custom_source=str(custom))
    assert message == f"{path}:2: source.petals: expected a value >= 1, got 0"
    cfg = load_config(write(tmp_path, text.replace("petals: 0", "petals: 3"), "ok.yml"), custom_source=custom)
    assert cfg.source.source_file_path == str(custom) and cfg.source.petals == 3
    assert "source.stream: unknown stream 'roses'" in error_of(
        write(tmp_path, text.replace("flowers", "roses"), "r.yml"), custom_source=custom
    )
    assert "source.source_file_path: no such file" in error_of(path, custom_source=tmp_path / "missing.py")


def test_legacy_bizon_env_values_are_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIZON_ENV_BF_TEST", "p.d.t")
    text = STREAMS_BASE.replace("table_id: p.d.a", "table_id: BIZON_ENV_BF_TEST")
    cfg = load_config(write(tmp_path, text))
    assert cfg.streams[0].destination.table_id == "p.d.t"  # inside a list, which bizon skipped
    monkeypatch.delenv("BIZON_ENV_BF_TEST")
    message = error_of(write(tmp_path, text, "unset.yml"))
    where = f"{tmp_path / 'unset.yml'}:{line_of(text, 'table_id')}"
    assert message == (
        f"{where}: streams[0].destination.table_id: "
        "environment variable BIZON_ENV_BF_TEST is not set; export it or put it in the --env-file"
    )


def test_inline_env_references_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BF_TEST_VAR", "s3cret")
    text = """\
    name: x
    source: {name: synthetic, stream: events}
    destination: {name: noop}
    engine:
      backend:
        type: postgres
        config: {dsn: "postgresql://bizon:${env://BF_TEST_VAR}@db:5432/bizon"}
    """
    cfg = load_config(write(tmp_path, text))
    assert cfg.engine.backend.config.dsn == "postgresql://bizon:s3cret@db:5432/bizon"
    assert "s3cret" not in repr(cfg)


def test_env_file_is_loaded_before_resolving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL.replace("token: dummy_key", "token: ${env://BF_TEST_VAR}"))
    env_file = tmp_path / "secrets.env"
    env_file.write_text("BF_TEST_VAR=from-env-file\n")
    cfg = load_config(path, env_file=env_file)
    assert cfg.source.model_dump()["authentication"]["params"]["token"] == "from-env-file"
    with pytest.raises(ConfigError, match="^--env-file .*nope.env: no such file$"):
        load_config(path, env_file=tmp_path / "nope.env")


def test_dot_env_in_the_working_directory_is_loaded_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, MINIMAL.replace("token: dummy_key", "token: ${env://BF_TEST_VAR}"))
    (tmp_path / ".env").write_text("BF_TEST_VAR=from-dot-env\n")
    cfg = load_config(path)
    assert cfg.source.model_dump()["authentication"]["params"]["token"] == "from-dot-env"
    monkeypatch.setenv("BF_TEST_VAR", "from-environment")
    cfg = load_config(path)
    assert cfg.source.model_dump()["authentication"]["params"]["token"] == "from-environment"


def test_read_raw_config_keeps_references_for_secrets_check(tmp_path: Path) -> None:
    path = write(tmp_path, MAXIMAL)
    refs = find_references(read_raw_config(path))
    assert refs == [
        ("source.authentication.params.token", "env://DUMMY_TOKEN"),
        ("engine.backend.config.password", "env://PG_PASSWORD"),
    ]


# ---------------------------------------------------------------- fixed bizon config bugs and bizon-fast keys


def test_backend_schema_name_is_accepted_and_misplaced_keys_are_errors(tmp_path: Path) -> None:
    text = SYNTHETIC + "engine:\n  backend:\n    type: sqlite\n    config: {database: db, schema_name: s}\n"
    assert load_config(write(tmp_path, text)).engine.backend.config.schema_name == "s"
    flat = SYNTHETIC + "engine:\n  backend:\n    type: sqlite\n    syncCursorInDBEvery: 2\n"
    path = write(tmp_path, flat, "flat.yml")
    assert error_of(path) == (
        f"{path}:{line_of(flat, 'syncCursorInDBEvery')}: engine.backend.syncCursorInDBEvery: unknown key "
        "'syncCursorInDBEvery'; expected one of: type, config; "
        "'syncCursorInDBEvery' belongs under engine.backend.config"
    )


def test_backends(tmp_path: Path) -> None:
    def backend(block: str, name: str) -> object:
        return load_config(write(tmp_path, SYNTHETIC + "engine:\n  backend:\n" + block, name)).engine.backend.config

    bq = backend("    type: bigquery\n    config: {database: proj, schema: ds, service_account_key: '{}'}\n", "bq.yml")
    assert (bq.database, bq.schema_name, bq.service_account_key) == ("proj", "ds", "{}")
    pg = backend("    type: postgres\n    config: {dsn: 'postgresql://u@h/db'}\n", "pg.yml")
    assert pg.dsn == "postgresql://u@h/db" and pg.schema_name == "public"
    assert backend("    type: sqlite_in_memory\n", "mem.yml").database == "bizon"
    path = write(tmp_path, SYNTHETIC + "engine:\n  backend:\n    type: postgres\n", "nopg.yml")
    assert "engine.backend.config.host: missing required key (or give a dsn" in error_of(path)


def test_queues(tmp_path: Path) -> None:
    def queue(block: str, name: str) -> object:
        return load_config(write(tmp_path, SYNTHETIC + "engine:\n  queue:\n" + block, name)).engine.queue

    shm = queue("    type: shm\n    config: {ring_size_mb: 256, batch_size_mb: 8}\n", "shm.yml")
    assert (shm.config.ring_size_mb, shm.config.batch_size_mb) == (256, 8)
    kafka = queue(
        "    type: kafka\n    config: {queue: {bootstrap_servers: 'k:9092'}, consumer: {group_id: g}}\n", "k.yml"
    )
    assert (kafka.config.queue.bootstrap_server, kafka.config.queue.topic) == ("k:9092", "bizon")
    assert kafka.config.consumer.group_id == "g" and kafka.config.consumer.auto_offset_reset == "earliest"
    rabbit = queue("    type: rabbitmq\n    config: {queue: {host: r, queue_name: q}}\n", "r.yml")
    assert (rabbit.config.queue.port, rabbit.config.consumer.poll_interval) == (5672, 1)
    assert "engine.queue.config.queue: required key is missing" in error_of(
        write(tmp_path, SYNTHETIC + "engine:\n  queue:\n    type: kafka\n", "k2.yml")
    )


def test_transforms_take_exactly_one_of_python_sql_polars(tmp_path: Path) -> None:
    text = SYNTHETIC + (
        "transforms:\n"
        "  - {label: a, python: 'data[\"x\"] = 1'}\n"
        "  - {label: b, sql: 'SELECT * FROM batch WHERE id > 3'}\n"
        "  - {label: c, polars: 'pl.col(\"id\") * 2'}\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert [(t.label, t.python is not None, t.sql is not None, t.polars is not None) for t in cfg.transforms] == [
        ("a", True, False, False),
        ("b", False, True, False),
        ("c", False, False, True),
    ]
    both = write(tmp_path, SYNTHETIC + "transforms:\n  - {label: a, python: x, sql: y}\n", "both.yml")
    assert error_of(both).endswith("transforms[0]: give exactly one of python, sql or polars (got python and sql)")


def test_destination_wrapper_defaults_and_bigquery_buffer_size(tmp_path: Path) -> None:
    text = """\
    name: x
    source: {name: synthetic, stream: events}
    destination:
      name: bigquery
      buffer_size: 400
      config: {project_id: p, dataset_id: d, gcs_buffer_bucket: b}
    """
    cfg = load_config(write(tmp_path, text))
    assert cfg.destination.alias == "bigquery" and cfg.destination.config.buffer_size == 400
    assert "destination.buffer_size: only bigquery destinations take it here" in error_of(
        write(tmp_path, SYNTHETIC.replace("name: noop", "name: noop\n  buffer_size: 4"), "b.yml")
    )


def test_postgres_destination_validates_without_code(tmp_path: Path) -> None:
    text = SYNTHETIC.replace("name: noop", "name: postgres\n  config: {dsn: 'postgresql://u@h/db', destination_id: t}")
    cfg = load_config(write(tmp_path, text))
    assert cfg.destination.alias == "postgres" and cfg.destination.config.destination_id == "t"
    missing = SYNTHETIC.replace("name: noop", "name: postgres\n  config: {host: h}")
    message = error_of(write(tmp_path, missing, "m.yml"))
    assert "destination.config.database: missing required key" in message


def test_monitoring_top_level_enable_tracing_is_honoured(tmp_path: Path) -> None:
    text = SYNTHETIC + "monitoring: {type: datadog, enable_tracing: true, config: {datadog_agent_host: h}}\n"
    assert load_config(write(tmp_path, text)).monitoring.config.enable_tracing is True


def test_empty_blocks_mean_defaults(tmp_path: Path) -> None:
    text = SYNTHETIC + "engine:\n  runner:\n    config:\ntransforms:\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.transforms == [] and cfg.engine.runner.config.max_restarts == 5


def test_union_members_do_not_show_in_error_paths(tmp_path: Path) -> None:
    """pydantic puts union tags in locations (``authentication.api_key.params``); users never wrote those."""
    text = MINIMAL.replace("token: dummy_key", "tokn: dummy_key")
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{path}:{line_of(text, 'params:')}: source.authentication.params.token: required key is missing" in message
    assert "api_key." not in message and "TokenAuthParams" not in message
