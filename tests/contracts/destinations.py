"""One adapter per built-in destination: its ``destination.config`` against the real local service, and how
to read back what it published. The engine's lifecycle is mirrored by ``Job``: a supervisor instance checks,
prepares and publishes; a consumer instance (another object, as it is another process in a run) writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from bizon_fast.connectors.registry import destination_class
from bizon_fast.destination.base import Destination, DestinationContext
from bizon_fast.source.records import with_extracted_at
from native_bench.services import BQEMU_PROJECT
from tests.services.postgres import PG_DSN

EXTRACTED = datetime(2024, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
ROWS_PER_BATCH = 10


def batches(split: int, count: int) -> list[pa.RecordBatch]:
    """``count`` batches of split number ``split``: batch ``seq`` holds ids ``split*10_000 + seq*10 + 0..9``,
    stamped with an extraction time as the producer stamps them."""
    out = []
    for seq in range(count):
        first = split * 10_000 + seq * ROWS_PER_BATCH
        ids = pa.array(range(first, first + ROWS_PER_BATCH), pa.int64())
        batch = pa.record_batch({"id": ids, "name": pa.array([f"row {i}" for i in ids.to_pylist()])})
        out.append(with_extracted_at(batch, EXTRACTED))
    return out


def ids(of: list[pa.RecordBatch]) -> list[int]:
    return sorted(i for b in of for i in b.column("id").to_pylist())


@dataclass
class Target:
    """A destination under test. ``published()`` is the sorted ids of what the destination holds now (None when
    it has no target at all); destinations that keep nothing readable (``noop`` discards, ``logger`` logs) say
    ``readable = False``."""

    name: str
    details: dict[str, Any]
    readable: bool = True
    read: Any = None  # () -> list[int] | None

    @property
    def cls(self) -> type[Destination]:
        return destination_class(self.name)

    def build(self, job_id: str, sync_mode: str, worker: str) -> Destination:
        cls = self.cls
        context = DestinationContext(
            job_id=job_id,
            pipeline="contract",
            source_name="synthetic",
            stream="events",
            sync_mode=sync_mode,
            worker=worker,
        )
        return cls(cls.config_class.model_validate(self.details), context)

    def published(self) -> list[int] | None:
        return sorted(self.read()) if self.readable else None


@dataclass
class Job:
    """One job's run of the destination, driven as the engine drives it."""

    target: Target
    job_id: str
    sync_mode: str = "full_refresh"
    supervisor: Destination = field(init=False)
    consumer: Destination | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.supervisor = self.target.build(self.job_id, self.sync_mode, "supervisor")
        self.supervisor.check_connection()

    def prepare(self, committed: dict[str, int]) -> None:
        self.supervisor.prepare(committed)

    def write(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> None:
        if self.consumer is None:
            self.consumer = self.target.build(self.job_id, self.sync_mode, "consumer-0")
        self.consumer.write(split_id, first_seq, last_seq, batches)

    def publish(self) -> None:
        self.supervisor.publish()

    def close(self) -> None:
        """The end of this run: a crash when nothing was published."""
        if self.consumer is not None:
            self.consumer.close()
        self.supervisor.close()


def file_target(fmt: str, tmp_path: Path) -> Target:
    base = tmp_path / "out" / "events"

    def read() -> list[int] | None:
        if fmt == "parquet":
            if not base.exists():
                return None
            dataset = ds.dataset(base, format="parquet")  # an empty full refresh publishes an empty folder
            return dataset.to_table(columns=["id"]).column("id").to_pylist() if dataset.files else []
        path = base.with_suffix(".json")
        if not path.exists():
            return None
        return [int(json.loads(line)["source_record_id"]) for line in path.read_text().splitlines()]

    return Target("file", {"destination_id": str(base), "format": fmt}, read=read)


def postgres_target(admin: Any, schema: str) -> Target:  # admin: psycopg.Connection
    table = f"{schema}.events"

    def read() -> list[int] | None:
        if admin.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
            return None
        return [r[0] for r in admin.execute(f"SELECT id FROM {table}").fetchall()]

    return Target("postgres", {"dsn": PG_DSN, "destination_id": table}, read=read)


def bigquery_target(name: str, emulator: Any, dataset: str) -> Target:  # emulator: native_bench.services.Emulator
    def read() -> list[int] | None:
        from google.api_core.exceptions import NotFound

        client = emulator.client()
        try:
            client.get_table(f"{BQEMU_PROJECT}.{dataset}.events")
            return [r[0] for r in client.query(f"SELECT id FROM `{dataset}.events`").result()]
        except NotFound:
            return None
        finally:
            client.close()

    details = {"project_id": BQEMU_PROJECT, "dataset_id": dataset, "destination_id": "events"}
    return Target(name, details, read=read)
