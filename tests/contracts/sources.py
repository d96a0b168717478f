"""One adapter per built-in source that can run here: its ``source:`` block against the real local service
(with data the adapter put there), the rows that block must yield, and a block for the same source with
nothing to read. Sources are built as the engine builds them: ``registry.source_class`` and the class's
config model, a fresh instance for every read (a producer builds its own from the config).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bizon_fast.connectors.registry import source_class
from bizon_fast.source.base import Source
from tests.services.kafka import create_topic
from tests.services.postgres import PG_DSN


@dataclass
class SourceCase:
    """``config`` yields exactly the rows whose ``key`` values are ``expected`` (as text); ``volatile`` columns
    differ from one read to the next (a fetch time) and are left out of comparisons."""

    config: dict[str, Any]
    key: str
    expected: list[str]
    volatile: tuple[str, ...] = ()


def build(config: dict[str, Any]) -> Source:
    cls = source_class(config["name"], config["stream"])
    return cls(cls.get_config_class().model_validate(config))


def synthetic(rows: int = 5_000) -> SourceCase:
    config = {"name": "synthetic", "stream": "events", "rows": rows, "splits": 4, "batch_rows": 300}
    return SourceCase(config, "id", [str(i) for i in range(rows)])


def file(folder: Path, rows: int = 6_000) -> SourceCase:
    """A folder of a Parquet file (row groups), a CSV (byte ranges) and a gzip NDJSON file (one stream), each
    read as several batches; with no rows, a header-only CSV and an empty NDJSON file."""
    import gzip

    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    third = rows // 3
    parts = [range(0, third), range(third, 2 * third), range(2 * third, rows)]
    tables = [pa.table({"id": list(r), "v": [f"v{i}" for i in r]}) for r in parts]
    if rows:
        pq.write_table(tables[0], folder / "a.parquet", row_group_size=max(1, third // 8))
        pcsv.write_csv(tables[1], folder / "b.csv")
        lines = "".join(json.dumps(r) + "\n" for r in tables[2].to_pylist())
        (folder / "c.ndjson.gz").write_bytes(gzip.compress(lines.encode()))
    else:
        (folder / "b.csv").write_text('"id","v"\n')
        (folder / "c.ndjson").write_text("")
    config = {"name": "file", "stream": "rows", "path": str(folder), "split_size_mb": 0.02, "chunk_mb": 0.005}
    return SourceCase(config, "id", [str(i) for i in range(rows)])


def dummy() -> SourceCase:
    auth = {"type": "api_key", "params": {"token": "t"}}
    config = {"name": "dummy", "stream": "creatures", "authentication": auth}
    return SourceCase(config, "id", ["9898", "88787", "98", "3333", "56565"], volatile=("timestamp",))


def postgres(admin: Any, schema: str, rows: int = 3_000) -> SourceCase:  # admin: psycopg.Connection
    """A keyed table with gaps in its ids (``3, 6, ...``), read in key ranges of a few chunks each."""
    table = f"{schema}.src_{rows}"
    admin.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, v text)")
    admin.execute(f"INSERT INTO {table} SELECT g * 3, md5(g::text) FROM generate_series(1, %s) g", (rows,))
    admin.execute(f"ANALYZE {table}")
    config = {"name": "postgres", "stream": table, "dsn": PG_DSN, "splits": 4, "chunk_rows": 200}
    return SourceCase(config, "id", [str(3 * g) for g in range(1, rows + 1)])


def kafka(bootstrap: str, rows: int = 600, partitions: int = 3) -> SourceCase:
    """A topic of JSON messages over ``partitions`` partitions, read in the typed-columns layout in batches of
    a couple of kilobytes (several per partition)."""
    import confluent_kafka

    topic = f"contract_{secrets.token_hex(5)}"
    create_topic(bootstrap, topic, partitions)
    if rows:
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i in range(rows):
            producer.produce(topic, value=json.dumps({"id": i, "name": f"n{i}"}).encode(), partition=i % partitions)
        assert producer.flush(15) == 0
    config = {
        "name": "kafka",
        "stream": "topic",
        "topics": [{"name": topic, "destination_id": topic}],
        "bootstrap_servers": bootstrap,
        "group_id": f"g_{topic}",
        "message_encoding": "utf-8",
        "consumer_timeout": 3,
        "batch_size": 50,
        "batch_bytes": 2_000,
        "record_layout": "columns",
        "consumer_config": {"security.protocol": "PLAINTEXT", "auto.offset.reset": "earliest"},
    }
    return SourceCase(config, "id", [str(i) for i in range(rows)])
