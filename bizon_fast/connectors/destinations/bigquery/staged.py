"""What the ``bigquery`` (load jobs) and ``bigquery_streaming_v2`` (Storage Write API) destinations share:
table naming, rows as Arrow, and an effectively-once stage published by one query.

**Stage.** A job writes into ``<table>_temp`` (full refresh) or ``<table>_incremental`` (incremental),
labelled ``bizon_fast_job=<job>``. Every staged row carries five bookkeeping columns:
``_bizon_fast_split`` (the split), ``_bizon_fast_first`` / ``_bizon_fast_last`` (the seq range of the
write that brought it), ``_bizon_fast_write`` (a random id drawn per write call) and
``_bizon_fast_rows`` (how many rows that write has). A write of ``(split, first..last)`` is *complete*
when the stage holds exactly ``_bizon_fast_rows`` rows of its write id.

**Why this is effectively-once.** BigQuery has no transaction that spans a load job (or an append)
and a bookkeeping row, so the stage itself is the record of what was written. A replay after a crash
(same range, or regrouped: ``[5,9]`` loaded by a consumer that died before reporting, replayed as
``[5,6]`` and ``[7,12]``) adds a second write covering seqs already staged; nothing is deleted on the
hot path (a killed consumer's load job may still be running server-side, so deleting would race it).
Instead ``publish`` reads one row per write (``GROUP BY`` over the small bookkeeping columns) and, per
split, keeps a set of complete, non-overlapping writes that covers the most seqs (weighted interval
scheduling). Within a run a seq always carries the same rows, and the reported writes partition the
split's seqs, so that set holds every seq exactly once; the published table is ``SELECT * EXCEPT
(bookkeeping) FROM stage WHERE _bizon_fast_write IN UNNEST(@keep)``. An orphan load that lands after
the publish query read the stage changes nothing (the stage is dropped).

Across runs the engine re-reads each split from its committed seq (possibly different data), so
``prepare(committed)`` deletes the writes past each split's committed seq (after waiting for load jobs
of this job still running) and bumps the stage's ``bizon_fast_epoch`` label. Load job ids are
deterministic, ``bf_<job>_<epoch>_<split hash>_<first>_<last>``: on the real service a replayed range
gets ``409 Already Exists``, and a successful earlier job means the range is staged already (its rows
are a complete write), so the load is skipped; the epoch keeps a job id whose rows ``prepare`` deleted
from being mistaken for a staged one. (The emulator registers no upload job ids: every replay loads
again, and the publish dedupe is what keeps it exact.)

**Publish.** Full refresh: ``CREATE OR REPLACE TABLE <table> AS SELECT ...`` -- atomic: readers see
the old table or the new one. A copy job (free) cannot drop the bookkeeping columns nor dedupe, so the
swap is this one query (the same price as bizon's ``streaming_v2`` finalize); it keeps the stage's
partitioning and clustering. Then a row in ``bizon_fast_published`` (destination, job) makes a repeated
publish a no-op, and the stage is dropped. Incremental: ``INSERT INTO <table> (cols) SELECT ...`` and
that row in one multi-statement transaction (with a deterministic job id: a repeated publish is a 409 on
the real service), so a crash cannot leave the rows appended but the job unrecorded -- a rerun would
append them again.
Merge (``write_disposition: merge``): the same transaction with a ``MERGE`` of the last version of each
key (cursor field, then arrival: split, first seq, row position, a ``_bizon_fast_pos`` column merging jobs
stage) in place of the ``INSERT``; rows whose ``deleted_flag`` is true delete their key. Appends and merges
evolve the target's schema first (``merge.evolve``: ``ALTER TABLE`` outside the transaction, idempotent);
everything that can fail the job is checked before the first statement, so a failed job publishes nothing.
The key is ``primary_key`` or the source's, kept in the stage's description by the first write.
A stale stage of an earlier, dead job is dropped by ``prepare``; the stage of the job being resumed is
kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from bizon_fast.clients import bigquery as bqclient
from bizon_fast.config.destination import DestinationDetails
from bizon_fast.connectors.destinations.bigquery import merge as bqmerge
from bizon_fast.connectors.destinations.bigquery.cover import best_cover
from bizon_fast.connectors.destinations.bigquery.rows import bigquery_rows
from bizon_fast.connectors.destinations.bigquery.types import arrow_type, bq_schema, declared_schema
from bizon_fast.destination.base import Destination, DestinationContext
from bizon_fast.errors import StepFailed, UserError
from bizon_fast.faults import fault_point

log = logging.getLogger("bizon_fast.destination.bigquery")

KEY = "destination.config"
SPLIT, FIRST, LAST, WRITE, ROWS = (
    "_bizon_fast_split",
    "_bizon_fast_first",
    "_bizon_fast_last",
    "_bizon_fast_write",
    "_bizon_fast_rows",
)
BOOKKEEPING = (SPLIT, FIRST, LAST, WRITE, ROWS)
#: a merging job's rows also carry their position in their write: the last version of a key is the last to arrive
POS = "_bizon_fast_pos"
#: the stage's columns that never reach the target
HIDDEN = (*BOOKKEEPING, POS)
PUBLISHED = "bizon_fast_published"
JOB_LABEL, EPOCH_LABEL = "bizon_fast_job", "bizon_fast_epoch"


def partition_spec(table: Any) -> tuple[str, str] | None:
    """A table's column partitioning as ``(field, window)``; None when it has none on a column."""
    tp = table.time_partitioning
    return (tp.field, tp.type_) if tp is not None and tp.field else None


def label_value(text: str) -> str:
    """A GCP label value: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    clean = "".join(c if c.isalnum() or c in "_-" else "_" for c in text.lower())
    return clean[:63]


def sql_string(text: str) -> str:
    """``text`` as a GoogleSQL string literal (for a script, where parameters are not an option)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def split_hash(split_id: str) -> str:
    return hashlib.blake2b(split_id.encode(), digest_size=8).hexdigest()


class StagedBigQueryDestination(Destination):
    """The stage, the dedupe and the publish; subclasses implement ``_append(table_ref, rows, job_id)``."""

    #: the envelope's ``_source_data`` type (bizon: STRING for batch loads, JSON for insertAll)
    source_data_type = "STRING"

    def __init__(self, config: DestinationDetails, context: DestinationContext) -> None:
        if not isinstance(config, self.config_class):
            config = self.config_class.model_validate(config.model_dump(by_alias=True, exclude_unset=True))
        super().__init__(config, context)
        self.project = config.project_id  # type: ignore[attr-defined]
        self.dataset = config.dataset_id  # type: ignore[attr-defined]
        self.table_id = self.table_ref(config, context)
        self.table = self.table_id.rsplit(".", 1)[1]
        suffix = "_temp" if context.sync_mode == "full_refresh" else "_incremental"
        self.stage_id = f"{self.table_id}{suffix}"
        #: append | replace | merge (default: replace for a full refresh, else append)
        self.disposition = getattr(config, "write_disposition", None) or (
            "replace" if context.sync_mode == "full_refresh" else "append"
        )
        self.declared = None
        self.clustering: list[str] | None = None
        if config.unnest:
            from bizon_fast.connectors.destinations.envelope import record_columns

            self.declared = record_columns(config.record_schemas, config.destination_id)
        for entry in config.record_schemas or []:
            if entry.destination_id == config.destination_id:
                self.clustering = getattr(entry, "clustering_keys", None)
        self._client: Any = None
        self._stage: Any = None  # the stage Table once known
        self.api_calls = 0

    # ------------------------------------------------------------ naming

    @staticmethod
    def table_ref(config: Any, context: DestinationContext) -> str:
        """``project.dataset.table``: ``destination_id`` bare, ``dataset.table`` or full; else bizon's default."""
        name = config.destination_id or f"{config.table_prefix}{context.source_name}_{context.stream}"
        parts = name.split(".")
        if len(parts) == 1:
            return f"{config.project_id}.{config.dataset_id}.{name}"
        if len(parts) == 2:
            return f"{config.project_id}.{name}"
        if len(parts) == 3:
            return name
        raise UserError(f"{KEY}.destination_id: '{name}' is not table, dataset.table or project.dataset.table")

    def partition_field(self, columns: list[str]) -> str | None:
        """``time_partitioning.field`` (default ``_bizon_loaded_at``) when the table has that column; every
        BigQuery destination takes ``{type, field}`` or a bare window (bizon 0.6.4's keys)."""
        field = getattr(self.config.time_partitioning, "field", "_bizon_loaded_at")  # type: ignore[attr-defined]
        return field if field in columns else None

    def partition_type(self) -> str:
        window = self.config.time_partitioning  # type: ignore[attr-defined]
        return str(getattr(window, "type", window))

    # ------------------------------------------------------------ client

    @property
    def client(self) -> Any:
        if self._client is None:
            auth = self.config.authentication  # type: ignore[attr-defined]
            key = auth.service_account_key if auth else ""
            self._client = bqclient.bigquery_client(
                self.project,
                key,
                key_path=f"{KEY}.authentication.service_account_key",
                location=self.config.dataset_location,  # type: ignore[attr-defined]
            )
        return self._client

    def _query(self, sql: str, params: list[Any] | None = None, job_id: str | None = None) -> list[Any]:
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=params or [])
        self.api_calls += 1
        try:
            job = self.client.query(sql, job_config=config, job_id=job_id, retry=bqclient.retry())
        except gexc.Conflict:
            job = self.client.get_job(job_id, retry=bqclient.retry())
            log.info("bigquery destination: query job %s already exists; waiting for it", job_id)
        return list(job.result(retry=bqclient.retry()))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------ rows

    def rows(self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch]) -> pa.Table | None:
        """The write as the stage's columns (typed, enveloped or unnested) plus the bookkeeping columns."""
        from bizon_fast.connectors.destinations.envelope import row_origins

        loaded_at = datetime.now(UTC)
        parts = []
        for seq, offset, batch in row_origins(batches, first_seq, last_seq):
            table = bigquery_rows(
                batch,
                self.declared,
                job_id=self.context.job_id,
                split_id=split_id,
                seq=seq,
                offset=offset,
                loaded_at=loaded_at,
            )
            parts.append(self._declared_types(table) if self.declared is not None else table)
        if not parts:
            return None
        table = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
        n = table.num_rows
        write_id = secrets.randbits(63)
        table = table.append_column(SPLIT, pa.repeat(pa.scalar(split_id, pa.string()), n))
        table = table.append_column(FIRST, pa.repeat(pa.scalar(first_seq, pa.int64()), n))
        table = table.append_column(LAST, pa.repeat(pa.scalar(last_seq, pa.int64()), n))
        table = table.append_column(WRITE, pa.repeat(pa.scalar(write_id, pa.int64()), n))
        table = table.append_column(ROWS, pa.repeat(pa.scalar(n, pa.int64()), n))
        if self.disposition == "merge":  # rows are concatenated in seq order: the position orders them within a write
            table = table.append_column(POS, pa.array(range(n), pa.int64()))
        return table

    def _declared_types(self, table: pa.Table) -> pa.Table:
        """Unnested columns cast to their declared BigQuery types where Arrow has a matching type."""
        assert self.declared is not None
        for name, kind in self.declared:
            have = table.schema.field(name).type
            want = arrow_type(kind)
            if want is not None and have != want and not pa.types.is_null(have):
                try:
                    table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(want))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise UserError(f"{KEY}.record_schemas: column {name} is not a valid {kind}: {exc}") from None
        return table

    def _stage_schema(self, schema: pa.Schema) -> list[Any]:
        from google.cloud.bigquery import SchemaField

        if self.declared is not None:
            entry = next(e for e in self.config.record_schemas or [] if e.destination_id == self.config.destination_id)
            declared = declared_schema(entry.record_schema)  # REQUIRED is relaxed, as bizon does since 0.4.1
            relaxed = [
                SchemaField.from_api_repr({**f.to_api_repr(), "mode": "NULLABLE"}) if f.mode == "REQUIRED" else f
                for f in declared
            ]
            return relaxed + bq_schema(pa.schema([schema.field(n) for n in HIDDEN if n in schema.names]))
        fields = bq_schema(schema)
        if self.source_data_type != "STRING":
            fields = [SchemaField(f.name, self.source_data_type) if f.name == "_source_data" else f for f in fields]
        return fields

    # ------------------------------------------------------------ stage table

    def _get_stage(self) -> Any | None:
        from google.api_core import exceptions as gexc

        self.api_calls += 1
        try:
            return self.client.get_table(self.stage_id, retry=bqclient.retry())
        except gexc.NotFound:
            return None

    def ensure_stage(self, schema: pa.Schema, source_key: list[str] | None = None) -> Any:
        """The stage table, created from the first write's schema when missing (consumers race: 409 is fine).

        ``source_key``: the primary key the source named in its rows, kept in the stage's description for a
        merging publish (which runs in the supervisor, far from the rows)."""
        if self._stage is not None:
            return self._stage
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        stage = self._get_stage()
        if stage is None:
            table = bigquery.Table(self.stage_id, schema=self._stage_schema(schema))
            table.labels = {JOB_LABEL: label_value(self.context.job_id), EPOCH_LABEL: "0"}
            if source_key:
                table.description = json.dumps({"primary_key": source_key})
            field = self.partition_field(schema.names)
            if field:
                table.time_partitioning = bigquery.TimePartitioning(type_=self.partition_type(), field=field)
            if self.clustering:
                table.clustering_fields = self.clustering
            self.api_calls += 1
            try:
                stage = self.client.create_table(table, retry=bqclient.retry())
            except gexc.Conflict:
                stage = self._get_stage()
        if stage is None or (stage.labels or {}).get(JOB_LABEL) != label_value(self.context.job_id):
            raise RuntimeError(f"bigquery destination: stage {self.stage_id} belongs to another job")
        self._stage = stage
        return stage

    @property
    def epoch(self) -> str:
        return (self._stage.labels or {}).get(EPOCH_LABEL, "0") if self._stage is not None else "0"

    def job_id_for(self, split_id: str, first_seq: int, last_seq: int) -> str:
        job = label_value(self.context.job_id)
        return f"bf_{job}_e{self.epoch}_{split_hash(split_id)}_{first_seq}_{last_seq}"

    # ------------------------------------------------------------ supervisor

    def check_connection(self) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        dataset = f"{self.table_id.rsplit('.', 1)[0]}"
        try:
            self.client.get_dataset(dataset, retry=bqclient.retry())
        except gexc.NotFound:
            if not getattr(self.config, "create_dataset", False):
                raise UserError(
                    f"{KEY}.dataset_id: dataset {dataset} does not exist (create it, or set create_dataset: true)"
                ) from None
            ds = bigquery.Dataset(dataset)
            ds.location = self.config.dataset_location  # type: ignore[attr-defined]
            self.client.create_dataset(ds, exists_ok=True, retry=bqclient.retry())
        except gexc.GoogleAPIError as exc:
            raise UserError(f"{KEY}: cannot reach BigQuery dataset {dataset}: {exc}") from None

    def check(self) -> str:
        """Read only (``bizon-fast check``): the dataset exists, or ``create_dataset`` will make it; the target
        table is looked up, not created."""
        from google.api_core import exceptions as gexc

        dataset = self.table_id.rsplit(".", 1)[0]
        try:
            self.client.get_dataset(dataset, retry=bqclient.retry())
            try:
                table = self.client.get_table(self.table_id, retry=bqclient.retry())
            except gexc.NotFound:
                return f"dataset {dataset}, table {self.table_id} (new)"
        except gexc.NotFound:
            if not getattr(self.config, "create_dataset", False):
                raise UserError(
                    f"{KEY}.dataset_id: dataset {dataset} does not exist (create it, or set create_dataset: true)"
                ) from None
            return f"dataset {dataset} (to be created: create_dataset), table {self.table_id} (new)"
        except gexc.GoogleAPIError as exc:
            raise UserError(f"{KEY}: cannot reach BigQuery dataset {dataset}: {exc}") from None
        return f"dataset {dataset}, table {self.table_id} (exists, {len(table.schema)} columns)"

    def _published_table(self) -> str:
        return f"{self.table_id.rsplit('.', 1)[0]}.{PUBLISHED}"

    def _ensure_published_table(self) -> None:
        from google.cloud import bigquery

        schema = [
            bigquery.SchemaField("destination", "STRING"),
            bigquery.SchemaField("job_id", "STRING"),
            bigquery.SchemaField("sync_mode", "STRING"),
            bigquery.SchemaField("published_at", "TIMESTAMP"),
        ]
        self.api_calls += 1
        self.client.create_table(bigquery.Table(self._published_table(), schema=schema), exists_ok=True)

    def _is_published(self) -> bool:
        from google.cloud import bigquery

        self._ensure_published_table()
        rows = self._query(
            f"SELECT COUNT(*) AS n FROM `{self._published_table()}` WHERE destination = @d AND job_id = @j",
            [
                bigquery.ScalarQueryParameter("d", "STRING", self.table_id),
                bigquery.ScalarQueryParameter("j", "STRING", self.context.job_id),
            ],
        )
        return bool(rows and rows[0][0])

    def staged_writes(self) -> list[tuple[str, int, int, int, int, int]]:
        """``(split, first, last, write_id, rows_expected, rows_staged)`` of every write in the stage."""
        return [
            tuple(r)
            for r in self._query(
                f"SELECT {SPLIT}, {FIRST}, {LAST}, {WRITE}, MAX({ROWS}), COUNT(*) FROM `{self.stage_id}`"
                f" GROUP BY {SPLIT}, {FIRST}, {LAST}, {WRITE}"
            )
        ]

    def _wait_for_running_jobs(self) -> None:
        """Load jobs of this job still running server-side (a killed consumer's) finish before the stage is trimmed."""
        prefix = f"bf_{label_value(self.context.job_id)}_"
        try:
            running = [
                j
                for j in self.client.list_jobs(state_filter="running", max_results=1000)
                if j.job_id.startswith(prefix)
            ]
        except Exception as exc:  # listing needs bigquery.jobs.list; without it, trimming still works
            log.warning("bigquery destination: cannot list running jobs (%s); not waiting for orphan loads", exc)
            return
        for job in running:
            log.info("bigquery destination: waiting for load job %s of an earlier attempt", job.job_id)
            try:
                job.result(retry=bqclient.retry())
            except Exception as exc:
                log.info("bigquery destination: earlier load job %s failed: %s", job.job_id, exc)

    def prepare(self, committed: dict[str, int]) -> None:
        stage = self._get_stage()
        if stage is None:
            return
        if (stage.labels or {}).get(JOB_LABEL) != label_value(self.context.job_id):
            log.info("bigquery destination: dropping stale stage %s of an earlier job", self.stage_id)
            self.client.delete_table(self.stage_id, not_found_ok=True, retry=bqclient.retry())
            return
        if self._is_published():
            return
        self._wait_for_running_jobs()
        stale = [w for w in self.staged_writes() if w[0] not in committed or w[2] > committed[w[0]]]
        if not stale:
            return
        from google.cloud import bigquery

        log.info("bigquery destination: removing %d uncommitted writes of job %s", len(stale), self.context.job_id)
        self._query(
            f"DELETE FROM `{self.stage_id}` WHERE {WRITE} IN UNNEST(@w)",
            [bigquery.ArrayQueryParameter("w", "INT64", [w[3] for w in stale])],
        )
        stage.labels = {**(stage.labels or {}), EPOCH_LABEL: str(int(self.epoch_of(stage)) + 1)}
        self.client.update_table(stage, ["labels"], retry=bqclient.retry())

    @staticmethod
    def epoch_of(stage: Any) -> str:
        return (stage.labels or {}).get(EPOCH_LABEL, "0")

    def keep(self) -> tuple[list[int], int]:
        """The write ids to publish (one complete write per seq) and how many writes are staged in all."""
        by_split: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        writes = self.staged_writes()
        for split, first, last, write_id, expected, staged in writes:
            if staged == expected:
                by_split[split].append((first, last, write_id))
            else:
                log.info(
                    "bigquery destination: write %s of %s is incomplete (%d/%d rows)", write_id, split, staged, expected
                )
        keep = [w for items in by_split.values() for w in best_cover(items)]
        return keep, len(writes)

    def publish(self) -> None:
        from google.cloud import bigquery

        if self._is_published():
            log.info("bigquery destination: job %s was already published to %s", self.context.job_id, self.table_id)
            self.client.delete_table(self.stage_id, not_found_ok=True)
            return
        merging = self.disposition == "merge"
        # a merge's full refresh (or reset) rebuilds the table from the job's rows, one per key
        full = self.disposition == "replace" or (merging and self.context.sync_mode == "full_refresh")
        stage = self._get_stage()
        target = self._get_table(self.table_id)
        if stage is None:
            if full and target is not None:
                self._query(f"DELETE FROM `{self.table_id}` WHERE TRUE")  # an empty source replaces by nothing
            log.info("bigquery destination: job %s staged no rows for %s", self.context.job_id, self.table_id)
        else:
            keep, total = self.keep()
            fault_point("bigquery.publish")  # the kept writes chosen, the target not yet replaced
            where, params = "", []
            if len(keep) < total:
                log.info(
                    "bigquery destination: %d of %d staged writes are replays; deduplicated", total - len(keep), total
                )
                where = f" WHERE {WRITE} IN UNNEST(@keep)"
                params = [bigquery.ArrayQueryParameter("keep", "INT64", keep)]
            columns = [f.name for f in stage.schema if f.name not in HIDDEN]
            select = f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM `{self.stage_id}`{where}"
            spec = partition_spec(stage)
            if full and target is not None and partition_spec(target) != spec:
                spec = self._repartition(target, spec)
            options = f" PARTITION BY TIMESTAMP_TRUNC(`{spec[0]}`, {spec[1]})" if spec else ""
            if stage.clustering_fields:
                options += f" CLUSTER BY {', '.join(f'`{c}`' for c in stage.clustering_fields)}"
            if full and merging:
                fields = {f.name: f for f in stage.schema}
                key = bqmerge.merge_key(getattr(self.config, "primary_key", None), stage, columns)
                flag = getattr(self.config, "deleted_flag", None)
                bqmerge.check_flag(flag, fields)
                self._check_null_keys(key, where, params)
                cursor = self.context.cursor_field
                order = [*([cursor] if cursor in columns else []), SPLIT, FIRST, *([POS] if POS in fields else [])]
                select = bqmerge.rebuild_sql(self.stage_id, columns, key, order, flag, where)
                log.info("bigquery destination: rebuilding %s from the last version of each key", self.table_id)
            if full:
                self._query(f"CREATE OR REPLACE TABLE `{self.table_id}`{options} AS {select}", params)
            else:
                self._publish_into(stage, target, columns, keep if where else None, options)
                return
            fault_point("bigquery.publish_unrecorded")  # the target replaced, bizon_fast_published not yet
        self._query(
            f"INSERT INTO `{self._published_table()}` (destination, job_id, sync_mode, published_at)"
            " VALUES (@d, @j, @m, CURRENT_TIMESTAMP())",
            [
                bigquery.ScalarQueryParameter("d", "STRING", self.table_id),
                bigquery.ScalarQueryParameter("j", "STRING", self.context.job_id),
                bigquery.ScalarQueryParameter("m", "STRING", self.context.sync_mode),
            ],
        )
        self.client.delete_table(self.stage_id, not_found_ok=True, retry=bqclient.retry())
        log.info("bigquery destination: published %s (%s)", self.table_id, self.context.sync_mode)

    def _publish_into(self, stage: Any, target: Any, columns: list[str], keep: list[int] | None, options: str) -> None:
        """Append or merge the kept writes into the target, evolving its schema first (``merge``).

        Everything that can fail the job (the key, the flag, the schema's compatibility) is checked before the
        first statement; the DDL runs next (idempotent), then the rows and their record in one transaction.
        """
        merging = self.disposition == "merge"
        fields = {f.name: f for f in stage.schema}
        config = self.config
        key: list[str] = []
        if merging:
            key = bqmerge.merge_key(getattr(config, "primary_key", None), stage, columns)
            bqmerge.check_flag(getattr(config, "deleted_flag", None), fields)
            inline = f" WHERE {WRITE} IN UNNEST(ARRAY<INT64>[{', '.join(str(int(w)) for w in keep or [])}])"
            self._check_null_keys(key, "" if keep is None else inline, [])
        if target is None:  # created empty, then appended to like any target: a crash between the
            # two leaves an empty table, never rows that a rerun's append would double
            empty = f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM `{self.stage_id}` WHERE FALSE"
            self._query(f"CREATE TABLE IF NOT EXISTS `{self.table_id}`{options} AS {empty}")
            target = self._get_table(self.table_id)
        policy = getattr(config, "schema_evolution", "evolve")
        if not self.capabilities.schema_evolution:  # the streaming destinations keep their table's columns:
            policy = "fail"  # a new column fails the job, as before schema evolution
        plan = bqmerge.evolve(
            self.table_id, [fields[c] for c in columns], self._live_schema(self.table_id), target.schema, policy
        )
        columns = plan.columns
        flag = getattr(config, "deleted_flag", None) if merging else None
        dropped = [k for k in [*key, *([flag] if flag else [])] if k not in columns]
        if dropped:
            raise StepFailed(
                f"{KEY}.schema_evolution: {dropped} are new to {self.table_id} and schema_evolution is freeze; "
                "merge needs them; nothing was published"
            )
        for statement in plan.ddl:
            self._query(statement)
        for change in plan.changes:
            log.info("bigquery destination: %s: %s", self.table_id, change)
        self.schema_changes = list(plan.changes)
        fault_point("bigquery.publish_evolved")  # the schema evolved, the rows not yet published
        names = ", ".join(f"`{c}`" for c in columns)
        job = f"bf_publish_{label_value(self.context.job_id)}_{split_hash(self.table_id)}"
        # the rows and their record in one transaction: a crash between two separate statements left rows
        # appended but the job unrecorded, and the rerun appended them again (the deterministic job id's 409
        # guards that only where the service keeps job ids: the emulator does not). Values inline: the
        # emulator drops parameters of a script's statements.
        where = ""
        if keep is not None:
            where = f" WHERE {WRITE} IN UNNEST(ARRAY<INT64>[{', '.join(str(int(w)) for w in keep)}])"
        if merging:
            cursor = self.context.cursor_field
            order = [*([cursor] if cursor in columns else []), SPLIT, FIRST, *([POS] if POS in fields else [])]
            rows = bqmerge.merge_sql(self.table_id, self.stage_id, columns, key, order, flag, where)
        else:
            rows = f"INSERT INTO `{self.table_id}` ({names}) SELECT {names} FROM `{self.stage_id}`{where}"
        record = ", ".join(sql_string(v) for v in (self.table_id, self.context.job_id, self.context.sync_mode))
        self._query(
            f"BEGIN TRANSACTION;\n{rows};\n"
            f"INSERT INTO `{self._published_table()}` (destination, job_id, sync_mode, published_at)"
            f" VALUES ({record}, CURRENT_TIMESTAMP());\nCOMMIT TRANSACTION;",
            job_id=job,
        )
        fault_point("bigquery.publish_unrecorded")  # published and recorded, the stage not dropped
        self.client.delete_table(self.stage_id, not_found_ok=True, retry=bqclient.retry())
        log.info("bigquery destination: published %s (%s, %s)", self.table_id, self.context.sync_mode, self.disposition)

    def _check_null_keys(self, key: list[str], where: str, params: list[Any]) -> None:
        """A NULL in the merge key fails the job before anything is published (NULL matches no row)."""
        rows = self._query(bqmerge.null_key_sql(self.stage_id, key, where), params)
        count = int(rows[0][0]) if rows else 0
        if count:
            raise bqmerge.null_key_failure(count, key)

    def _live_schema(self, ref: str) -> list[Any]:
        """The table's columns as a query sees them (no bytes billed): the emulator's metadata misses DDL changes."""
        self.api_calls += 1
        job = self.client.query(f"SELECT * FROM `{ref}` WHERE FALSE", retry=bqclient.retry())
        return list(job.result(retry=bqclient.retry()).schema)

    def _repartition(self, target: Any, wanted: tuple[str, str] | None) -> tuple[str, str] | None:
        """The partitioning a full refresh publishes with when the target table is partitioned otherwise.

        BigQuery refuses ``CREATE OR REPLACE`` with another partitioning. With ``enforce_partitioning``
        the target is dropped (briefly absent; the stage is kept until the publish is recorded, so a
        crash here is retried) and recreated as configured; without, it keeps its own partitioning.
        """
        current = partition_spec(target)
        if getattr(self.config, "enforce_partitioning", False):
            log.warning(
                "bigquery destination: %s is partitioned %s, configured %s; enforce_partitioning: dropping and "
                "recreating it (its description, labels and ACLs are not kept)",
                self.table_id,
                current,
                wanted,
            )
            self.api_calls += 1
            self.client.delete_table(self.table_id, not_found_ok=True, retry=bqclient.retry())
            return wanted
        if target.time_partitioning is not None and current is None:  # ingestion-time: CTAS cannot keep it
            raise UserError(
                f"{KEY}.time_partitioning: {self.table_id} is ingestion-time partitioned and a full refresh cannot "
                "replace it; set enforce_partitioning: true to rebuild it as configured"
            )
        log.warning(
            "bigquery destination: %s keeps its partitioning %s (configured %s): BigQuery cannot repartition a "
            "table; set enforce_partitioning: true to rebuild it on a full refresh",
            self.table_id,
            current,
            wanted,
        )
        return current

    def _get_table(self, ref: str) -> Any | None:
        from google.api_core import exceptions as gexc

        self.api_calls += 1
        try:
            return self.client.get_table(ref, retry=bqclient.retry())
        except gexc.NotFound:
            return None

    # ------------------------------------------------------------ consumer

    def units(
        self, split_id: str, first_seq: int, last_seq: int, batches: list[pa.RecordBatch], unit_bytes: int
    ) -> list[tuple[int, int, list[pa.RecordBatch]]]:
        """The write cut into seq-aligned units of about ``unit_bytes`` (each a write of its own); one unit
        when the batches are not one per seq."""
        if len(batches) != last_seq - first_seq + 1 or len(batches) < 2:
            return [(first_seq, last_seq, batches)]
        out: list[tuple[int, int, list[pa.RecordBatch]]] = []
        start, group, size = first_seq, [], 0
        for i, batch in enumerate(batches):
            if group and size + batch.nbytes > unit_bytes:
                out.append((start, first_seq + i - 1, group))
                start, group, size = first_seq + i, [], 0
            group.append(batch)
            size += batch.nbytes
        out.append((start, last_seq, group))
        return out

    def wait_delay(self, attempt: int) -> None:
        time.sleep(min(30.0, 0.5 * 2**attempt))
