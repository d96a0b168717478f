"""The ``synthetic`` source: a generated ``events`` table, fast enough to saturate the engine.

bizon has no load generator that runs offline (its dummy source has 5 records), so benchmarks and
crash tests need one. Every value is a pure function of ``(seed, id)`` -- a vectorized splitmix64
hash of the id -- so a split resumed from any position regenerates identical batches, and memory
stays flat however many rows are asked for (nothing is sized by ``rows``).

Columns: ``id`` int64 (unique in ``[0, rows)``), ``ts`` timestamp (1 ms per id from 2024-01-01 UTC),
``user_id`` int64, ``amount`` float64 (whole cents below 10 000), ``quantity`` int32 (1..100),
``category`` string (8 values), ``payload`` string of exactly ``payload_bytes`` printable chars.

The payload is cut from a pre-generated random pool: ids come in blocks of up to 64 whose payloads
are consecutive windows of the pool at a hashed offset, so a batch costs one memcpy per block
instead of one per row, and neighbouring blocks still look unrelated. ``category`` works the same
way with zero-copy slices of a pre-drawn column, 4096 ids a block. Generation runs at ~40M rows/s
per core at 32 payload bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from bizon_fast.config.source import SourceConfig
from bizon_fast.connectors.sources.synthetic.config import SyntheticSourceConfig
from bizon_fast.errors import ConfigError
from bizon_fast.source.base import Source, SourceBatch, Split

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB

#: 2024-01-01T00:00:00Z in microseconds; ``ts`` = this + id milliseconds
TS_BASE_US = 1_704_067_200_000_000
TS_STEP_US = 1_000
USERS = 1_000_000
CATEGORIES = ["electronics", "books", "clothing", "home", "garden", "toys", "sports", "grocery"]
ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
POOL_BYTES = 1 << 22  # distinct payload start offsets; the pool is this plus one block window
CATEGORY_POOL_ROWS = 1 << 18  # distinct category-block start rows
CATEGORY_BLOCK_ROWS = 4_096  # ids per contiguous category slice

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("amount", pa.float64(), nullable=False),
        pa.field("quantity", pa.int32(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),
    ]
)


def mix64(x: int) -> int:
    """splitmix64's finalizer on a Python int (used for per-stream keys; the arrays use the numpy twin)."""
    x &= _M64
    x = ((x ^ (x >> 30)) * _C1) & _M64
    x = ((x ^ (x >> 27)) * _C2) & _M64
    return x ^ (x >> 31)


def stream_key(seed: int, stream: int) -> int:
    """An independent hash key per (seed, column stream)."""
    return mix64(mix64(seed) ^ ((stream + 1) * _C2 & _M64))


class _Hasher:
    """Vectorized splitmix64 of ``ids * golden + key`` into caller buffers, with one reusable scratch."""

    def __init__(self) -> None:
        self._tmp = np.empty(0, np.uint64)

    def __call__(self, ids: np.ndarray, key: int, out: np.ndarray | None) -> np.ndarray:
        n = ids.shape[0]
        if out is None:
            out = np.empty(n, np.uint64)
        if self._tmp.shape[0] < n:
            self._tmp = np.empty(n, np.uint64)
        tmp = self._tmp[:n]
        np.multiply(ids, np.uint64(_GOLDEN), out=out)
        np.add(out, np.uint64(key), out=out)
        for shift, mult in ((30, _C1), (27, _C2)):
            np.right_shift(out, np.uint64(shift), out=tmp)
            np.bitwise_xor(out, tmp, out=out)
            np.multiply(out, np.uint64(mult), out=out)
        np.right_shift(out, np.uint64(31), out=tmp)
        np.bitwise_xor(out, tmp, out=out)
        return out


def _buffer(n: int, dtype: type[np.generic]) -> tuple[pa.Buffer, np.ndarray]:
    """A fresh Arrow-owned buffer and a writable numpy view of it.

    Allocating from Arrow's pool (mimalloc) instead of numpy's (glibc) matters: glibc hands fresh
    multi-MiB blocks back to the kernel on free, and re-faulting them cost ~40% of generation time.
    """
    buf = pa.allocate_buffer(n * np.dtype(dtype).itemsize)
    return buf, np.frombuffer(buf, dtype)


def block_rows_for(payload_bytes: int) -> int:
    """Ids per payload block: up to 64, fewer for wide payloads so a block stays within 64 KiB."""
    return max(1, min(64, 65_536 // max(payload_bytes, 1)))


@functools.lru_cache(maxsize=8)
def _pools(seed: int, payload_bytes: int) -> tuple[np.ndarray, pa.Array]:
    """The printable payload pool (as block windows) and the category pool; immutable, shared per process.

    Each 64-bit hash yields 8 pool characters (one per byte, scaled onto the alphabet), so building
    the 4 MiB pool costs half a million hashes, not four million.
    """
    hasher = _Hasher()
    window = block_rows_for(payload_bytes) * payload_bytes
    words = (POOL_BYTES + window + 7) // 8
    pool_hash = hasher(np.arange(words, dtype=np.uint64), stream_key(seed, 4), None)
    scaled = (pool_hash.view(np.uint8).astype(np.uint16) * len(ALPHABET)) >> 8
    pool = np.frombuffer(ALPHABET, np.uint8)[scaled]
    windows = np.lib.stride_tricks.sliding_window_view(pool, max(window, 1))
    windows.flags.writeable = False
    cat_hash = hasher(np.arange(CATEGORY_POOL_ROWS + CATEGORY_BLOCK_ROWS, dtype=np.uint64), stream_key(seed, 5), None)
    cat_index = (cat_hash >> np.uint64(61)).astype(np.uint8)
    return windows, pa.array(CATEGORIES, pa.string()).take(pa.array(cat_index))


class SyntheticGenerator:
    """Builds the batch of ids ``[lo, hi)``. Scratch buffers are reused; every output buffer is fresh.

    Output buffers are never recycled because a consumer (or a test) may still hold an earlier batch;
    the pools they are cut from are immutable, so sharing those is safe. One generator per thread.
    """

    def __init__(self, seed: int, payload_bytes: int) -> None:
        self.width = payload_bytes
        self._k_row, self._k_block, self._k_cat_block = (stream_key(seed, s) for s in (0, 2, 3))
        self._hash = _Hasher()
        self._h = self._t = np.empty(0, np.uint64)
        self._iota = np.empty(0, np.int64)
        self._offsets = np.empty(0, np.int32)
        self.block_rows = block_rows_for(payload_bytes)
        self._windows, self._category_pool = _pools(seed, payload_bytes)

    def _scratch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._h.shape[0] < n:
            self._h, self._t = np.empty(n, np.uint64), np.empty(n, np.uint64)
            self._iota = np.arange(n, dtype=np.int64)
        return self._h[:n], self._t[:n], self._iota[:n]

    def _block_starts(self, lo: int, hi: int, block: int, key: int, span: int) -> np.ndarray:
        """For each block of ``block`` ids overlapping ``[lo, hi)``: a hashed start in ``[0, span)``."""
        starts = np.arange(lo // block, (hi - 1) // block + 1, dtype=np.uint64)
        self._hash(starts, key, starts)
        np.right_shift(starts, np.uint64(32), out=starts)
        np.multiply(starts, np.uint64(span), out=starts)
        np.right_shift(starts, np.uint64(32), out=starts)
        return starts.astype(np.intp)

    def _payload(self, lo: int, hi: int) -> pa.Array:
        n, w, b = hi - lo, self.width, self.block_rows
        if self._offsets.shape[0] < n + 1:
            self._offsets = np.arange(n + 1, dtype=np.int32)
            np.multiply(self._offsets, w, out=self._offsets)
        offsets = pa.py_buffer(self._offsets[: n + 1])  # shared across batches: never written after creation
        if w == 0:
            return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(b"")])
        starts = self._block_starts(lo, hi, b, self._k_block, POOL_BYTES)
        chars = self._windows[starts].reshape(-1)  # one window copy per block of ids
        skip = (lo - lo // b * b) * w
        return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(chars[skip : skip + n * w])])

    def _category(self, lo: int, hi: int) -> pa.Array:
        """Zero-copy slices of a pre-taken category pool, one per block of ids, concatenated.

        A per-row ``take`` of 8 strings costs ~14 ns a row; cutting blocks from a pool taken once keeps
        every value a pure function of (seed, id) at ~1 ns a row.
        """
        b = CATEGORY_BLOCK_ROWS
        starts = self._block_starts(lo, hi, b, self._k_cat_block, CATEGORY_POOL_ROWS)
        pieces = []
        pos = lo
        for block, start in zip(range(lo // b, (hi - 1) // b + 1), starts.tolist(), strict=True):
            end = min(hi, (block + 1) * b)
            pieces.append(self._category_pool.slice(start + pos - block * b, end - pos))
            pos = end
        return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)

    def batch(self, lo: int, hi: int) -> pa.RecordBatch:
        """Rows with ids ``lo..hi-1``: identical for identical ``(seed, payload_bytes, lo, hi)``.

        One 64-bit hash per row feeds three columns through disjoint bit fields:
        quantity bits 0-15, amount bits 16-39, user_id bits 40-63.
        """
        n = hi - lo
        h, t, iota = self._scratch(n)
        id_buf, ids = _buffer(n, np.int64)
        np.add(iota, lo, out=ids)
        self._hash(ids.view(np.uint64), self._k_row, h)

        ts_buf, ts = _buffer(n, np.int64)
        np.multiply(ids, TS_STEP_US, out=ts)
        np.add(ts, TS_BASE_US, out=ts)

        user_buf, user_id = _buffer(n, np.uint64)
        np.right_shift(h, np.uint64(40), out=user_id)
        np.multiply(user_id, np.uint64(USERS), out=user_id)
        np.right_shift(user_id, np.uint64(24), out=user_id)

        quantity_buf, quantity = _buffer(n, np.int32)
        np.bitwise_and(h, np.uint64(0xFFFF), out=t)
        np.multiply(t, np.uint64(100), out=t)
        np.right_shift(t, np.uint64(16), out=t)
        np.add(t, np.uint64(1), out=quantity, casting="unsafe")

        amount_buf, amount = _buffer(n, np.float64)
        np.right_shift(h, np.uint64(16), out=t)
        np.bitwise_and(t, np.uint64(0xFFFFFF), out=t)
        np.multiply(t, np.uint64(1_000_000), out=t)
        np.right_shift(t, np.uint64(24), out=t)
        np.divide(t, 100.0, out=amount)

        columns = [
            pa.Array.from_buffers(pa.int64(), n, [None, id_buf]),
            pa.Array.from_buffers(SCHEMA.field("ts").type, n, [None, ts_buf]),
            pa.Array.from_buffers(pa.int64(), n, [None, user_buf]),
            pa.Array.from_buffers(pa.float64(), n, [None, amount_buf]),
            pa.Array.from_buffers(pa.int32(), n, [None, quantity_buf]),
            self._category(lo, hi),
            self._payload(lo, hi),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def _coerce(config: SourceConfig) -> SyntheticSourceConfig:
    if isinstance(config, SyntheticSourceConfig):
        return config
    try:
        return SyntheticSourceConfig.model_validate(config.model_dump())
    except ValidationError as exc:
        details = "; ".join(f"source.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid synthetic source config: {details}") from None


class SyntheticSource(Source):
    """Splits are contiguous id ranges; a position is the next id to generate (an int)."""

    name = "synthetic"

    def __init__(self, config: SourceConfig) -> None:
        config = _coerce(config)
        super().__init__(config)
        self.config: SyntheticSourceConfig = config
        self._generator: SyntheticGenerator | None = None

    @staticmethod
    def streams() -> list[str]:
        return ["events"]

    @staticmethod
    def get_config_class() -> type[SourceConfig]:
        return SyntheticSourceConfig

    def splits(self) -> list[Split]:
        rows = self.config.rows
        count = min(self.config.splits, max(rows, 1))
        width = len(str(rows))  # zero-padded ids sort as strings in id order
        bounds = [rows * i // count for i in range(count + 1)]
        return [
            Split(id=f"ids-{lo:0{width}d}-{hi:0{width}d}", params={"start": lo, "stop": hi}, total_rows=hi - lo)
            for lo, hi in zip(bounds, bounds[1:], strict=False)
        ]

    def generator(self) -> SyntheticGenerator:
        """The (lazily built, per-process) generator; building the pool costs a few milliseconds."""
        if self._generator is None:
            self._generator = SyntheticGenerator(self.config.seed, self.config.payload_bytes)
        return self._generator

    def read(self, split: Split, position: Any | None) -> Iterator[SourceBatch]:
        start, stop = int(split.params["start"]), int(split.params["stop"])
        pos = start if position is None else int(position)
        if not start <= pos <= stop:
            raise ValueError(f"position {pos} outside split {split.id} [{start}, {stop}]")
        step = self.config.batch_rows
        generator = self.generator()
        while pos < stop:
            end = min(stop, start + ((pos - start) // step + 1) * step)
            yield SourceBatch(generator.batch(pos, end), end)
            pos = end

    def total_rows(self) -> int | None:
        return self.config.rows

    def columns(self) -> list[str] | None:
        return SCHEMA.names
