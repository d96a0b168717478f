"""The ``kafka`` source: topic partitions as splits, offsets as cursors, values decoded in bulk to Arrow.

bizon's YAML keys are kept (``topics``, ``bootstrap_servers``, ``group_id``, ``batch_size``,
``consumer_timeout``, ``consumer_config``, ``message_encoding``, ``authentication`` with the schema
registry, the three ``skip_message_*`` flags). How the work is cut and resumed:

- **Splits.** A backfill (``full_refresh``) has one split per (topic, partition), read from the low
  watermark to the end offset captured when the job was planned. In ``sync_mode: stream`` a split never
  ends, so a producer holds it for good: a topic's partitions are dealt among ``stream_splits`` splits
  (default 1) so that no partition waits for a producer that never frees up -- set it to at most the
  number of producers.
- **Positions.** A split's position is ``{partition: next offset to read}``. A resumed split assigns
  exactly those offsets (``Consumer.assign`` with explicit offsets; no subscribe, so no group
  rebalances either). Where no position exists yet, a backfill starts at the low watermark, and a new
  stream job at the group's committed offset (``OFFSET_STORED``, then ``auto.offset.reset``), so a
  pipeline that bizon ran before continues where bizon's consumer group stopped.
- **Group offsets** (``commit_group_offsets``, for the consumer-lag dashboards bizon users watch) are
  committed only for positions the engine has committed as cursors: the resume position when a split
  starts, and whatever :meth:`KafkaSource.commit_offsets` is given. They are never read to resume a
  split that has a cursor, so they can lag but can never skip data.
- **End of a backfill split.** Kafka's high watermark is last offset + 1, but Tansu (the broker the tests
  use) reports the base offset of the *last record batch*, which can be well below the real end
  (measured: 252 for 500 records). So a split does not stop at the captured watermark: past it, it
  stops at the partition-EOF event (``enable.partition.eof``, which both brokers emit at the real end)
  or after ``consumer_timeout`` seconds without a message for it.

Each Arrow batch gathers ``consume(batch_size)`` calls until ``batch_bytes`` of values or a short read
(caught up). Decoding is columnar (see :mod:`.decode`). Two layouts (``record_layout``):

- ``bizon`` (default): bizon's source records, so destinations write bizon's envelope unchanged:
  ``id`` = ``partition_<p>_offset_<o>``, ``data`` = ``{"topic", "offset", "partition", "timestamp",
  "keys", "headers", "value", "schema"}`` as JSON text (the value's original text for JSON messages),
  ``timestamp`` = the message time, ``destination_id`` from the topic's entry in ``topics``.
- ``columns``: the value's typed columns plus ``_source_topic``, ``_source_partition``,
  ``_source_offset``, ``_source_timestamp`` and ``_source_key``. A JSON date-time string with a UTC
  offset (``Z``, ``+02:00``) becomes ``timestamp[us, tz=UTC]`` (the instant, in UTC), one without stays
  a naive ``timestamp[us]`` (:func:`.decode.json_table` says what a column mixing both becomes).

Empty values (tombstones) are skipped (``skip_message_empty_value``, bizon's default) or kept as a
``null`` value / a row of nulls. A value that cannot be decoded fails the job with its topic, partition
and offset, or is skipped with a warning (``skip_message_on_decode_error``); a key that is not JSON
(bizon layout) likewise with ``skip_message_invalid_keys``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_BEGINNING, OFFSET_STORED, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import ValidationError

from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.sources.kafka import decode
from bizon_fast.connectors.sources.kafka.config import STREAMS, KafkaSourceConfig
from bizon_fast.connectors.sources.kafka.decode import MessageDecodeError
from bizon_fast.errors import ConfigError, UserError
from bizon_fast.source.base import Source, SourceBatch, Split
from bizon_fast.source.records import SOURCE_RECORDS_SCHEMA

log = logging.getLogger("bizon_fast.source.kafka")

#: librdkafka keys bizon-fast sets itself: reading is driven by explicit assignments and offsets
FORCED = {"enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True}
TS_NOT_AVAILABLE = 0  # confluent_kafka.TIMESTAMP_NOT_AVAILABLE
POLL_S = 0.1  # longest single consume() wait: a stop request is seen within it
GATHER_S = 1.0  # longest time spent gathering one batch


def _coerce(config: SourceConfig) -> KafkaSourceConfig:
    if isinstance(config, KafkaSourceConfig):
        return config
    try:
        return KafkaSourceConfig.model_validate(config.model_dump(by_alias=True))
    except ValidationError as exc:
        details = "; ".join(f"source.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid kafka source config: {details}") from None


class _Messages:
    """The fields of a run of messages, column by column, taken from each ``consume()`` call's messages at once.

    The ``Message`` objects are dropped right after (:meth:`add`): tens of thousands of them kept alive until
    the batch is built made Python's cyclic GC walk them over and over, measured at a quarter of the
    source's CPU. ``headers`` are read only when wanted (the bizon layout): every field costs ~50 ns a message.
    """

    def __init__(self, headers: bool = True) -> None:
        self.with_headers = headers
        self.values: list[bytes | None] = []
        self.keys: list[bytes | None] = []
        self.partitions: list[int] = []
        self.offsets: list[int] = []
        self.stamp_kinds: list[int] = []
        self.stamp_ms: list[int] = []
        self.headers: list[Any] = []
        self.topic = ""
        self.nbytes = 0  # value bytes, to size the batch

    @classmethod
    def of(cls, msgs: list[Any], headers: bool = True) -> _Messages:
        rows = cls(headers)
        rows.add(msgs)
        return rows

    def add(self, msgs: list[Any]) -> None:
        """Append the fields of ``msgs`` (data messages, no error events): one comprehension per field."""
        if not msgs:
            return
        values = [m.value() for m in msgs]
        self.values += values
        self.nbytes += sum(map(len, filter(None, values)))
        self.keys += [m.key() for m in msgs]
        self.partitions += [m.partition() for m in msgs]
        self.offsets += [m.offset() for m in msgs]
        stamps = [m.timestamp() for m in msgs]
        self.stamp_kinds += map(itemgetter(0), stamps)
        self.stamp_ms += map(itemgetter(1), stamps)
        self.headers += [m.headers() for m in msgs] if self.with_headers else [None] * len(msgs)
        self.topic = self.topic or msgs[0].topic()

    def __len__(self) -> int:
        return len(self.offsets)

    def next_offsets(self) -> dict[str, int]:
        """``{partition: last offset + 1}`` over every message (skipped ones included): where reading resumes.

        Messages of one partition come in offset order, so the last one per partition wins (``dict(zip)``).
        """
        return {str(p): o + 1 for p, o in dict(zip(self.partitions, self.offsets, strict=True)).items()}

    def keep(self, rows: list[int]) -> None:
        for name in ("values", "keys", "partitions", "offsets", "stamp_kinds", "stamp_ms", "headers"):
            column = getattr(self, name)
            setattr(self, name, [column[i] for i in rows])

    def where(self, i: int) -> str:
        return f"topic {self.topic!r} partition {self.partitions[i]} offset {self.offsets[i]}"


def _has_empty(values: list[bytes | None]) -> bool:
    """Whether any value is empty or null (a tombstone): two C-level scans, no loop body."""
    return None in values or b"" in values


def _json_rows(table: pa.Table) -> pa.Array:
    """Each row of a decoded table as JSON text (string type), built column-wise."""
    from bizon_fast.connectors.destinations.jsontext import row_json

    if table.num_rows == 0:
        return pa.array([], pa.string())
    batch = pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns], names=table.column_names)
    return row_json(batch).cast(pa.string())


class KafkaSource(Source):
    name = "kafka"

    def __init__(self, config: SourceConfig) -> None:
        config = _coerce(config)
        super().__init__(config)
        self.config: KafkaSourceConfig = config
        self.topic_map = {t.name: t.destination_id for t in config.topics}
        self.streaming = config.sync_mode == "stream"
        auth = config.authentication
        self.registry = decode.SchemaRegistry(
            auth.schema_registry_url if auth else "",
            auth.schema_registry_type if auth else "apicurio",
            auth.schema_registry_username if auth else "",
            auth.schema_registry_password if auth else "",
            timeout=config.consumer_timeout,
        )
        self._known: dict[str, pa.Schema] = {}  # topic -> the JSON columns seen so far (columns layout)
        self._committer: Consumer | None = None

    @staticmethod
    def streams() -> list[str]:
        return list(STREAMS)

    @staticmethod
    def get_config_class() -> type[SourceConfig]:
        return KafkaSourceConfig

    # ------------------------------------------------------------ client

    def consumer_settings(self) -> dict[str, Any]:
        """The librdkafka config: bizon's ``consumer_config`` + bootstrap, group, SASL, bounded timeouts."""
        cfg = self.config
        settings: dict[str, Any] = dict(cfg.consumer_config)
        settings["bootstrap.servers"] = cfg.bootstrap_servers
        settings["group.id"] = cfg.group_id
        auth = cfg.authentication
        protocol = str(settings.get("security.protocol", "plaintext")).upper()
        if auth is not None and auth.params is not None and protocol.startswith("SASL"):
            settings.setdefault("sasl.mechanisms", "PLAIN")
            settings.setdefault("sasl.username", auth.params.username)
            settings.setdefault("sasl.password", auth.params.password)
        settings.update(FORCED)
        if not self.streaming:
            # the end-of-partition event waits for an empty fetch, which the broker holds this long (500 ms default);
            # while data is there a fetch returns at once, so a short hold costs nothing but ends a split sooner
            settings.setdefault("fetch.wait.max.ms", 20)
        settings.setdefault("logger", log)  # librdkafka's connection noise goes to our log, not stderr
        return settings

    def _consumer(self) -> Consumer:
        try:
            return Consumer(self.consumer_settings())
        except KafkaException as exc:
            raise UserError(f"source.consumer_config: {exc.args[0].str() if exc.args else exc}") from None

    def _timeout(self) -> float:
        return float(self.config.consumer_timeout)

    def _metadata(self, consumer: Consumer) -> dict[str, list[int]]:
        """Partitions of each configured topic; a clear error for an unreachable broker or a missing topic."""
        cfg = self.config
        if not cfg.topics:
            raise UserError("source.topics: no topic configured (list topics, or give them in streams)")
        try:
            cluster = consumer.list_topics(timeout=self._timeout())
        except KafkaException as exc:
            raise UserError(
                f"source.bootstrap_servers: cannot reach Kafka at {cfg.bootstrap_servers} within "
                f"{self._timeout():g} s (source.consumer_timeout): {exc.args[0].str() if exc.args else exc}"
            ) from None
        missing = [t.name for t in cfg.topics if t.name not in cluster.topics or cluster.topics[t.name].error]
        if missing:
            known = sorted(n for n in cluster.topics if not n.startswith("__"))
            raise UserError(
                f"source.topics: topic(s) {', '.join(map(repr, missing))} not found on {cfg.bootstrap_servers}; "
                f"existing topics: {', '.join(known) or 'none'}"
            )
        return {t.name: sorted(cluster.topics[t.name].partitions) for t in cfg.topics}

    def endpoint(self) -> str | None:
        return self.config.bootstrap_servers

    def check_connection(self) -> tuple[bool, str | None]:
        consumer = self._consumer()
        try:
            self._metadata(consumer)
        finally:
            consumer.close()
        return True, None

    # ------------------------------------------------------------ planning

    def splits(self) -> list[Split]:
        consumer = self._consumer()
        try:
            topics = self._metadata(consumer)
            splits: list[Split] = []
            for topic, partitions in topics.items():
                if self.streaming:
                    n = min(self.config.stream_splits, max(len(partitions), 1))
                    for i in range(n):
                        mine = partitions[i::n]
                        splits.append(Split(id=f"{topic}:{i}of{n}", params={"topic": topic, "partitions": mine}))
                    continue
                for p in partitions:
                    low, high = self._watermarks(consumer, topic, p)
                    splits.append(
                        Split(
                            id=f"{topic}:{p}",
                            params={"topic": topic, "partitions": [p], "low": {str(p): low}, "end": {str(p): high}},
                            total_rows=max(high - low, 0),
                        )
                    )
            return splits
        finally:
            consumer.close()

    def _watermarks(self, consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self._timeout())
        except KafkaException as exc:
            raise UserError(
                f"source.topics: cannot read the offsets of {topic!r} partition {partition} on "
                f"{self.config.bootstrap_servers}: {exc.args[0].str() if exc.args else exc}"
            ) from None

    def total_rows(self) -> int | None:
        return None  # an estimate only (Tansu under-reports watermarks, streams never end): no false ETA

    # ------------------------------------------------------------ group offsets

    def commit_offsets(self, split: Split, position: dict[str, int] | None) -> None:
        """Commit ``position`` (a committed cursor's) to the consumer group, for lag monitoring.

        Failures are logged, not raised: group offsets are informational here (cursors drive resumes).
        """
        if not self.config.commit_group_offsets or not position:
            return
        if self._committer is None:
            self._committer = self._consumer()
        topic = split.params["topic"]
        offsets = [TopicPartition(topic, int(p), int(o)) for p, o in position.items()]
        try:
            self._committer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("could not commit group %s offsets of %s: %s", self.config.group_id, split.id, exc)

    # ------------------------------------------------------------ reading

    def read(self, split: Split, position: Any | None) -> Iterator[SourceBatch]:
        topic: str = split.params["topic"]
        partitions: list[int] = list(split.params["partitions"])
        pos: dict[str, int] = {str(k): int(v) for k, v in (position or {}).items()}
        ends: dict[str, int] = dict(split.params.get("end") or {})
        lows: dict[str, int] = dict(split.params.get("low") or {})
        if not self.streaming:
            for p in partitions:
                pos.setdefault(str(p), int(lows.get(str(p), 0)))
        self.commit_offsets(split, position)
        consumer = self._consumer()
        try:
            default = OFFSET_STORED if self.streaming else OFFSET_BEGINNING
            consumer.assign([TopicPartition(topic, p, pos.get(str(p), default)) for p in partitions])
            yield from self._read_assigned(consumer, topic, partitions, pos, ends)
        finally:
            consumer.close()
            if self._committer is not None:
                self._committer.close()
                self._committer = None

    def _read_assigned(
        self, consumer: Consumer, topic: str, partitions: list[int], pos: dict[str, int], ends: dict[str, int]
    ) -> Iterator[SourceBatch]:
        """Batches until every partition is past its end (never, in stream mode).

        ``consume(batch_size)`` is called without a wait: a blocking ``consume(n, timeout)`` returns only
        when ``n`` messages are there or the timeout is up, even once an end-of-partition event is queued
        (measured: each partition's end cost the full timeout, and every short queue between two fetches
        a wait). Only when nothing is queued does it wait, for one message or event, at most ``POLL_S``.
        A batch gathers for at most ``GATHER_S``, so a stop request is seen promptly; ``consumer_timeout``
        is the silence after which a partition past its captured end counts as finished (see the module
        docstring for why that end alone is not trusted).
        """
        cfg = self.config
        timeout = self._timeout()
        eof: dict[str, int] = {}
        last_seen = {str(p): time.monotonic() for p in partitions}
        pending = {str(p) for p in partitions}
        bizon = cfg.record_layout == "bizon"
        while True:
            rows = _Messages(headers=bizon)
            started = time.monotonic()
            while True:
                got = consumer.consume(cfg.batch_size, timeout=0)  # what is queued, without waiting
                if not got:  # wait for the next message or event only, not for a full batch_size
                    got = consumer.consume(1, timeout=POLL_S)
                events = [m for m in got if m.error() is not None]  # rare: one C call a message, no loop body
                data = [m for m in got if m.error() is None] if events else got
                for m in events:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof[str(m.partition())] = m.offset()
                    else:
                        self._raise_or_log(m.error(), topic, m)
                rows.add(data)
                caught_up = not data
                if caught_up or rows.nbytes >= cfg.batch_bytes or time.monotonic() - started >= GATHER_S:
                    break
                if events and events[-1] is got[-1] and events[-1].error().code() == KafkaError._PARTITION_EOF:
                    break  # the last event is an end of partition: nothing more is waiting
            now = time.monotonic()
            if len(rows):
                advanced = rows.next_offsets()  # before _batch drops skipped messages: they are read too
                batch = self._batch(topic, rows)
                pos.update(advanced)
                last_seen.update(dict.fromkeys(advanced, now))
                yield SourceBatch(batch, dict(pos))
            else:
                yield SourceBatch(self._empty(), dict(pos))  # lets the engine act on a stop request
            if self.streaming:
                continue
            for p in list(pending):
                quiet = now - last_seen[p] >= timeout
                if pos[p] >= int(ends.get(p, 0)) and (eof.get(p, -1) >= pos[p] or quiet):
                    pending.discard(p)
                elif quiet:
                    self._still_reachable(consumer, topic)
                    last_seen[p] = now
            if not pending:
                return

    def _still_reachable(self, consumer: Consumer, topic: str) -> None:
        """A partition below its end went quiet: fail clearly if the broker is gone, rather than wait forever."""
        try:
            consumer.list_topics(topic, timeout=self._timeout())
        except KafkaException as exc:
            raise RuntimeError(
                f"lost Kafka at source.bootstrap_servers={self.config.bootstrap_servers} while reading {topic!r}: "
                f"{exc.args[0].str() if exc.args else exc}"
            ) from None

    def _raise_or_log(self, err: KafkaError, topic: str, msg: Any) -> None:
        where = f"topic {topic!r} partition {msg.partition()}"
        if err.fatal() or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED):
            raise RuntimeError(f"Kafka error reading {where} (source.topics): {err.str()}")
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            raise RuntimeError(f"message at {where} offset {msg.offset()} is too large: {err.str()}")
        log.warning("Kafka error reading %s (retrying): %s", where, err.str())

    # ------------------------------------------------------------ decoding

    def _empty(self) -> pa.RecordBatch:
        if self.config.record_layout == "bizon":
            return pa.RecordBatch.from_pylist([], schema=SOURCE_RECORDS_SCHEMA)
        return pa.RecordBatch.from_pylist([], schema=pa.schema([]))

    def _batch(self, topic: str, msgs: list[Any] | _Messages) -> pa.RecordBatch:
        """One Arrow batch from a run of messages of ``topic`` (empty when every message was skipped)."""
        cfg = self.config
        rows = msgs if isinstance(msgs, _Messages) else _Messages.of(msgs)
        if cfg.skip_message_empty_value and _has_empty(rows.values):
            rows.keep([i for i, v in enumerate(rows.values) if v])
        if cfg.record_layout == "bizon":
            bad = decode.bad_keys(rows.keys)
            if bad:
                self._bad(rows, bad, "its key is not JSON", cfg.skip_message_invalid_keys, "skip_message_invalid_keys")
        if cfg.message_encoding == "avro":
            table, schema_json = self._decode_avro(rows)
        else:
            table, schema_json = self._decode_json(topic, rows), None
        if not len(rows):
            return self._empty()
        timestamps = pa.array(rows.stamp_ms, pa.int64())
        if TS_NOT_AVAILABLE in rows.stamp_kinds:
            missing = pa.array([k == TS_NOT_AVAILABLE for k in rows.stamp_kinds])
            timestamps = pc.if_else(missing, None, timestamps)
        partitions = pa.array(rows.partitions, pa.int32())
        offsets = pa.array(rows.offsets, pa.int64())
        if cfg.record_layout == "columns":
            meta = {
                "_source_topic": pa.repeat(pa.scalar(topic, pa.string()), len(rows)),
                "_source_partition": partitions,
                "_source_offset": offsets,
                "_source_timestamp": timestamps.cast(pa.timestamp("ms", tz="UTC")),
                "_source_key": decode.key_strings(rows.keys),
            }
            names = [n for n in table.column_names if n not in meta]
            arrays = [table.column(n).combine_chunks() for n in names]
            return pa.RecordBatch.from_arrays(arrays + list(meta.values()), names=names + list(meta))
        values_json = table  # bizon layout: a string array of JSON texts
        data = decode.bizon_data(
            topic=topic,
            partitions=partitions,
            offsets=offsets,
            timestamps_ms=timestamps.fill_null(-1),
            keys_json=decode.keys_json(rows.keys),
            headers_json=decode.headers_json(rows.headers),
            values_json=values_json,
            schema_json=schema_json if schema_json is not None else "{}",
        )
        now_ms = int(time.time() * 1000)
        stamps = timestamps.fill_null(now_ms).cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("us", tz="UTC"))
        dest = self.topic_map.get(topic)
        return pa.RecordBatch.from_arrays(
            [decode.record_ids(partitions, offsets), data, stamps, pa.repeat(pa.scalar(dest, pa.string()), len(rows))],
            schema=SOURCE_RECORDS_SCHEMA,
        )

    def _bad(self, rows: _Messages, bad: list[int], why: str, skip: bool, flag: str) -> None:
        """Drop the ``bad`` rows with a warning when ``skip``, else fail naming the first one."""
        if not skip:
            raise MessageDecodeError(
                f"cannot decode the message at {rows.where(bad[0])}: {why} "
                f"(set source.{flag}: true to skip such messages)"
            )
        for i in bad:
            log.warning("skipping the message at %s: %s (source.%s)", rows.where(i), why, flag)
        drop = set(bad)
        rows.keep([i for i in range(len(rows)) if i not in drop])

    def _decode_json(self, topic: str, rows: _Messages) -> Any:
        """bizon layout: the values' JSON text (string array); columns layout: a typed table.

        The whole batch is decoded in one call first; only when that fails is each value checked on its own
        (:func:`decode.repair_json`), to repair it like bizon, skip it or name it in the error.
        """
        cfg = self.config
        columns = cfg.record_layout == "columns"
        values = rows.values
        if _has_empty(values):  # kept tombstones (skip_message_empty_value: false)
            values = [v if v else (b"{}" if columns else b"null") for v in values]
        decoded = self._json_in_bulk(topic, values, columns)
        if decoded is not None:
            return decoded
        values, bad = decode.repair_json(values, objects_only=columns)
        if bad:
            why = "its value is not a JSON object" if columns else "its value is not valid UTF-8 JSON"
            self._bad(rows, bad, why, cfg.skip_message_on_decode_error, "skip_message_on_decode_error")
            drop = set(bad)
            values = [v for i, v in enumerate(values) if i not in drop]
        if not columns:
            return pa.array(values, pa.binary()).cast(pa.string())
        if not values:
            return pa.table({})
        try:
            table = decode.json_table(values, self._known.get(topic))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise MessageDecodeError(
                f"cannot decode the JSON messages of topic {topic!r} partition(s) "
                f"{sorted(set(rows.partitions))} offsets {rows.offsets[0]}..{rows.offsets[-1]}: {exc}"
            ) from None
        self._known[topic] = decode.merge_schema(self._known.get(topic), table.schema)
        return table

    def _json_in_bulk(self, topic: str, values: list[bytes], columns: bool) -> Any:
        """Every value decoded in one call, or None when any value is not valid JSON (or not UTF-8).

        Columns layout: pyarrow's reader is the validation (strict JSON; it fails on a syntax error, a
        non-object, bad UTF-8), and a row count other than the message count (two documents in one value,
        a blank value) counts as a failure too. bizon layout: one msgspec pass over ``[v1,v2,...]``, then
        the UTF-8 check of the cast to string (msgspec does not check the bytes inside strings).
        """
        if columns:
            try:
                table = decode.json_table(values, self._known.get(topic))
            except (pa.ArrowInvalid, UnicodeDecodeError):
                return None
            if table.num_rows != len(values):
                return None
            self._known[topic] = decode.merge_schema(self._known.get(topic), table.schema)
            return table
        if not decode.validate_json(values):
            return None
        try:
            return pa.array(values, pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:
            return None

    def _decode_avro(self, rows: _Messages) -> tuple[Any, Any]:
        """Group the datums by schema id, decode each group in bulk, restore the message order."""
        cfg = self.config
        values = [v or b"" for v in rows.values]
        framed = decode.Framed(values, self.registry.registry_type)
        bad = (framed.ids < 0).nonzero()[0].tolist()
        if bad:
            why = "its value has no schema-registry header (magic byte 0 + schema id)"
            self._bad(rows, bad, why, cfg.skip_message_on_decode_error, "skip_message_on_decode_error")
            values = [v or b"" for v in rows.values]
            framed = decode.Framed(values, self.registry.registry_type)
        ids = framed.ids.tolist()
        groups: dict[int, list[int]] = {}
        for i, schema_id in enumerate(ids):
            groups.setdefault(schema_id, []).append(i)
        bizon = cfg.record_layout == "bizon"
        parts: list[Any] = []  # per schema id: a typed table (columns) or its rows' JSON text (bizon)
        order: list[int] = []
        schemas: list[str] = []
        for schema_id, members in groups.items():
            try:
                schema_text = self.registry.schema(schema_id)
            except MessageDecodeError as exc:
                raise MessageDecodeError(f"message at {rows.where(members[0])}: {exc}") from None
            try:
                table, decoded = decode.avro_table(schema_text, framed.datums(members)), members
            except Exception as exc:  # noqa: BLE001 - fastavro/polars raise many kinds; name the messages
                datums = [framed.datums([i])[0] for i in members]
                table, decoded = self._avro_one_by_one(rows, members, schema_text, datums, exc)
            # bizon layout: each record as its own schema wrote it (no null fields borrowed from another version)
            parts.append(_json_rows(table) if bizon else table)
            order += decoded
            schemas += [schema_text] * table.num_rows
        inverse = None if order == sorted(order) else pa.array(sorted(range(len(order)), key=order.__getitem__))
        if bizon:
            merged: Any = pa.concat_arrays(parts) if parts else pa.array([], pa.string())
        else:
            merged = pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({})
        if inverse is not None:
            merged = merged.take(inverse)
            schemas = [schemas[i] for i in inverse.to_pylist()]
        kept = sorted(order)
        if len(kept) != len(rows):
            rows.keep(kept)
        if not bizon:
            return merged, None
        schema_json = pa.array(schemas, pa.string()) if len(groups) > 1 else (schemas[0] if schemas else "{}")
        return merged, schema_json

    def _avro_one_by_one(
        self, rows: _Messages, members: list[int], schema_text: str, datums: list[bytes], exc: Exception
    ) -> tuple[pa.Table, list[int]]:
        """A group failed to decode: find the bad datums, then fail on the first or skip them all."""
        good: list[int] = []
        bad: list[int] = []
        for i, datum in zip(members, datums, strict=True):
            try:
                decode.avro_table(schema_text, [datum])
                good.append(i)
            except Exception:  # noqa: BLE001 - any failure means this datum does not match its schema
                bad.append(i)
        if not bad or not self.config.skip_message_on_decode_error:
            first = bad[0] if bad else members[0]
            raise MessageDecodeError(
                f"cannot decode the Avro message at {rows.where(first)} with its writer schema: {exc} "
                "(set source.skip_message_on_decode_error: true to skip such messages)"
            )
        for i in bad:
            log.warning("skipping the undecodable Avro message at %s", rows.where(i))
        by_index = dict(zip(members, datums, strict=True))
        return (decode.avro_table(schema_text, [by_index[i] for i in good]) if good else pa.table({})), good
