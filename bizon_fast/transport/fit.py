"""Size Arrow IPC streams before writing them, and cut batches into groups that fit one slot.

Slots are fixed-size, so a producer must know, before it asks for a slot, how many bytes its
batches will take once serialized. ``ipc_size`` answers exactly (for schemas without dictionaries,
``schema message + sum(record batch messages) + end-of-stream marker`` is what the IPC writer
emits, byte for byte; measured, not assumed, in tests/test_ring.py). ``fit_to_slots`` then groups
consecutive batches under that budget and slices the ones larger than a slot: batches larger than a
slot are split, never rejected.
"""

from __future__ import annotations

import pyarrow as pa

from bizon_fast.errors import UserError

# The IPC stream ends with a continuation marker (0xFFFFFFFF) and a zero length: 8 bytes.
EOS_BYTES = 8

# One-entry cache of the last schema's serialized size. Producers write thousands of batches with
# the same schema object; serializing the schema each time costs ~3 us. The cache holds a strong
# reference so that the identity check cannot be fooled by a recycled id().
_schema_cache: tuple[pa.Schema | None, int, bool] = (None, 0, False)


def _type_has_dictionary(typ: pa.DataType) -> bool:
    if pa.types.is_dictionary(typ):
        return True
    return any(_type_has_dictionary(typ.field(i).type) for i in range(typ.num_fields))


def _schema_info(schema: pa.Schema) -> tuple[int, bool]:
    """Serialized schema message size, and whether any field (nested included) is dictionary-encoded."""
    global _schema_cache
    cached_schema, size, has_dict = _schema_cache
    if cached_schema is schema:
        return size, has_dict
    size = schema.serialize().size
    has_dict = any(_type_has_dictionary(field.type) for field in schema)
    _schema_cache = (schema, size, has_dict)
    return size, has_dict


def _mock_stream_size(batches: list[pa.RecordBatch]) -> int:
    """Exact stream size by running the real IPC writer over a byte-counting sink (no copy)."""
    sink = pa.MockOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.size()


def _batch_cost(batch: pa.RecordBatch, schema_bytes: int, has_dict: bool) -> int:
    """Bytes ``batch`` adds to a stream. With dictionaries this includes its dictionary messages, which
    the writer emits at most once per batch, so summing costs is a safe upper bound."""
    if not has_dict:
        return pa.ipc.get_record_batch_size(batch)
    return _mock_stream_size([batch]) - schema_bytes - EOS_BYTES


def ipc_size(batches: list[pa.RecordBatch]) -> int:
    """Exact size in bytes of the IPC stream (schema, batches, end-of-stream) that ``batches`` serialize to.

    Exact rather than estimated so that a slot sized for it never overflows and never wastes space.
    Zero-copy slices are measured as the writer serializes them (truncated buffers), not as their parent.
    """
    if not batches:
        raise ValueError("ipc_size needs at least one batch (the schema comes from the batches)")
    schema_bytes, has_dict = _schema_info(batches[0].schema)
    if has_dict:
        return _mock_stream_size(batches)
    return schema_bytes + sum(pa.ipc.get_record_batch_size(b) for b in batches) + EOS_BYTES


def _split_to_budget(batch: pa.RecordBatch, budget: int, schema_bytes: int, has_dict: bool, slot_size: int):
    """Yield (piece, cost) with every cost <= budget, halving by rows (zero-copy slices) until each fits."""
    cost = _batch_cost(batch, schema_bytes, has_dict)
    if cost <= budget:
        yield batch, cost
        return
    if batch.num_rows <= 1:
        raise UserError(
            f"one row serializes to {cost + schema_bytes + EOS_BYTES} bytes, more than a ring slot of "
            f"{slot_size} bytes: raise engine.queue.config.batch_size_mb (a slot is 2x the batch size)"
        )
    half = batch.num_rows // 2
    yield from _split_to_budget(batch.slice(0, half), budget, schema_bytes, has_dict, slot_size)
    yield from _split_to_budget(batch.slice(half), budget, schema_bytes, has_dict, slot_size)


def fit_to_slots(batches: list[pa.RecordBatch], slot_size: int) -> list[list[pa.RecordBatch]]:
    """Group consecutive batches so that each group's IPC stream fits in ``slot_size`` bytes.

    Order of rows is preserved; a batch larger than a slot is sliced by rows (zero-copy) until the
    pieces fit, so the caller never has to reject data. Raises UserError when a single row is larger
    than a slot, because only a bigger slot (``engine.queue.config.batch_size_mb``) can carry it.
    """
    if not batches:
        return []
    schema_bytes, has_dict = _schema_info(batches[0].schema)
    budget = slot_size - schema_bytes - EOS_BYTES
    if budget <= 0:
        raise UserError(
            f"a ring slot of {slot_size} bytes cannot even hold the {schema_bytes}-byte schema: "
            "raise engine.queue.config.batch_size_mb (a slot is 2x the batch size)"
        )
    groups: list[list[pa.RecordBatch]] = []
    current: list[pa.RecordBatch] = []
    used = 0
    for batch in batches:
        for piece, cost in _split_to_budget(batch, budget, schema_bytes, has_dict, slot_size):
            if current and used + cost > budget:
                groups.append(current)
                current, used = [], 0
            current.append(piece)
            used += cost
    if current:
        groups.append(current)
    return groups
