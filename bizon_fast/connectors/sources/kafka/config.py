"""Config of the ``kafka`` source: bizon's keys plus bizon-fast's (``record_layout``, ``stream_splits``...).

Importable without confluent-kafka, so a pipeline validates (``config check``) where the library is
missing; running it then fails clearly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bizon_fast.config.auth import AuthConfig, BasicAuthParams
from bizon_fast.config.blocks import Strict
from bizon_fast.config.source import BizonSourceConfig


class KafkaAuthConfig(AuthConfig):
    """bizon's Kafka auth: SASL ``basic`` only, plus the schema registry's location and credentials.

    ``params`` may be left out for a broker without SASL that still needs the schema registry keys;
    ``schema_registry_type: confluent`` (``/schemas/ids/{id}``, 4-byte ids) is added to bizon's apicurio.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["basic"] = "basic"
    params: BasicAuthParams | None = None  # type: ignore[assignment]
    schema_registry_type: Literal["apicurio", "confluent"] = "apicurio"
    schema_registry_url: str = ""
    schema_registry_username: str = ""
    schema_registry_password: str = Field("", repr=False)

    @field_validator("params", mode="before")
    @classmethod
    def _params_for_type(cls, value: Any, info: ValidationInfo) -> Any:
        return value


class KafkaTopicConfig(Strict):
    name: str
    destination_id: str


def _default_kafka_consumer_config() -> dict[str, Any]:
    return {
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 45000,
        "security.protocol": "SASL_SSL",
    }


class KafkaSourceConfig(BizonSourceConfig):
    """bizon's ``kafka`` source keys, plus bizon-fast's (``record_layout``, ``commit_group_offsets``,
    ``stream_splits``). Also the model validation uses when confluent-kafka is not installed.

    Unknown keys stay allowed (bizon's kafka example carries ``nb_bytes_schema_id`` and
    ``timestamp_ms_name``, which are not fields). ``authentication`` is optional (bizon required it):
    it is needed only for SASL brokers, which the config check below enforces.
    """

    topics: list[KafkaTopicConfig] = Field(default_factory=list)
    bootstrap_servers: str
    group_id: str = "bizon"
    batch_size: int = Field(100, ge=1, le=1_000_000, description="messages per consume() call")
    consumer_timeout: float = Field(10, gt=0, description="seconds: consume() wait, metadata and end-of-data timeout")
    consumer_config: dict[str, Any] = Field(default_factory=_default_kafka_consumer_config)
    message_encoding: Literal["utf-8", "avro"] = "avro"
    skip_message_empty_value: bool = True
    skip_message_invalid_keys: bool = False
    skip_message_on_decode_error: bool = False
    authentication: KafkaAuthConfig | None = None
    record_layout: Literal["bizon", "columns"] = Field(
        "bizon",
        description="bizon: bizon's records (id, data JSON text, timestamp, destination_id); "
        "columns: the decoded value's typed columns plus _source_* metadata columns",
    )
    commit_group_offsets: bool = Field(True, description="also commit committed cursor positions to group_id")
    stream_splits: int = Field(1, ge=1, description="stream mode: splits per topic (partitions dealt among them)")
    batch_bytes: int = Field(4 << 20, ge=1, description="raw message bytes gathered into one Arrow batch at most")

    @field_validator("topics", mode="before")
    @classmethod
    def _no_topics(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSourceConfig:
        protocol = str(self.consumer_config.get("security.protocol", "plaintext")).upper()
        explicit = "sasl.username" in self.consumer_config
        if (
            protocol.startswith("SASL")
            and not explicit
            and (self.authentication is None or not self.authentication.params)
        ):
            raise PydanticCustomError(
                "config",
                "consumer_config security.protocol is {protocol}: set source.authentication (type: basic, "
                "params: {username, password}), or set consumer_config security.protocol: PLAINTEXT",
                {"protocol": protocol},
            )
        return self


#: the streams the source serves, for validation when confluent-kafka is not installed
STREAMS = ("topic",)
#: the model of ``source:`` for every stream
CONFIG_CLASS = KafkaSourceConfig
