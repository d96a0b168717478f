"""Transport benchmark: how fast Arrow batches cross from a producer process to a consumer process.

Why: the shared-memory ring is the default transport because it should move batches at close to
memory bandwidth; this measures that claim against the physical limit (one in-process memcpy of the
same bytes) and against what a plain Python implementation would use (``multiprocessing.Queue`` or a
``Pipe`` carrying IPC bytes).

Every transport moves the same batch (8 int64 columns of ``batch_bytes``), serializes it with Arrow
IPC per batch, and the consumer opens it and touches it identically (sums one column). The ring uses
a two-pipe control plane (filled slot ids one way, free slot ids back) like the supervisor's, with
``N_SLOTS`` slots of twice the batch size. The memcpy baseline copies the batch's own buffers into a
pre-faulted buffer as large as the ring, rotating through slot-sized chunks, so both see the same
memory footprint; it runs on one core where the ring has a producer and a consumer. The Queue carries
``bytes`` (a ``pa.Buffer`` would be pickled through a slow path and flatter the ring); the Pipe sends
the IPC buffer with ``send_bytes``, which needs no extra copy.

Wall-clock throughput depends on how many of the cores other jobs leave free; the CPU time per batch
(all processes and threads of a transport) does not, so both are reported.

Transports are run round-robin, ``ROUNDS`` times each, with their process pairs started once per
batch size, so that noise on a shared machine hits all of them alike; the reported figure is the
median round.

    .venv/bin/python -m native_bench.transport [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import struct
import time
from collections import deque
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bizon_fast.transport import ShmRing, StoreSpec, open_store

BATCH_SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
TOTAL_BYTES = 2 << 30
QUICK_TOTAL_BYTES = 256 << 20
N_SLOTS = 8
ROUNDS = 3
COLUMNS = 8
TIMEOUT_S = 300.0
TRANSPORTS = ["shm_ring", "mp_queue", "mp_pipe"]

_FILLED = struct.Struct("<iq")  # slot, nbytes
_FREE = struct.Struct("<i")  # slot


def _make_batch(batch_bytes: int) -> pa.RecordBatch:
    """``COLUMNS`` int64 columns laid out in one allocation, as a reader decoding into one buffer would.

    One allocation rather than one per column matters: copies from many small 4 KiB-paged buffers pay
    TLB misses that a single large (transparent-huge-page) allocation does not, and every transport,
    the memcpy baseline included, copies from exactly these buffers.
    """
    rows = batch_bytes // (8 * COLUMNS)
    data = np.random.default_rng(0).integers(0, 1 << 30, (COLUMNS, rows))
    return pa.record_batch({f"c{i}": pa.array(data[i]) for i in range(COLUMNS)})


def _touch(batches: list[pa.RecordBatch]) -> int:
    """Read one column of every batch: proves the consumer sees the data; the same work for every transport."""
    return sum(pc.sum(batch.column(0)).as_py() for batch in batches)


def _ipc_bytes(batch: pa.RecordBatch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def _recv(conn: Any, what: str) -> Any:
    if not conn.poll(TIMEOUT_S):
        raise TimeoutError(f"no {what} within {TIMEOUT_S:.0f} s")
    return conn.recv()


# -- children ---------------------------------------------------------------------------------------


def _producer(transport: str, batch_bytes: int, n_batches: int, rounds: int, ctrl: Any, chan: tuple) -> None:
    batch = _make_batch(batch_bytes)
    if transport == "shm_ring":
        spec, free_r, filled_w = chan
        ring = open_store(spec)
        free = deque(range(spec.n_slots))
    for _ in range(rounds):
        ctrl.send("ready")
        _recv(ctrl, "go")
        cpu = time.process_time()
        if transport == "shm_ring":
            for _ in range(n_batches):
                if not free:
                    free.append(_FREE.unpack(free_r.recv_bytes())[0])
                slot = free.popleft()
                filled_w.send_bytes(_FILLED.pack(slot, ring.write(slot, [batch])))
            while len(free) < spec.n_slots:  # every slot back before the next round
                free.append(_FREE.unpack(free_r.recv_bytes())[0])
        elif transport == "mp_queue":
            (queue,) = chan
            for _ in range(n_batches):
                # bytes, not the pa.Buffer: pickling a pa.Buffer takes a slow path (7 ms per 4 MiB here),
                # which would flatter the ring.
                queue.put(_ipc_bytes(batch).to_pybytes())
        elif transport == "mp_pipe":
            (pipe_w,) = chan
            for _ in range(n_batches):
                pipe_w.send_bytes(_ipc_bytes(batch))
        ctrl.send(("done", time.process_time() - cpu))
    if transport == "shm_ring":
        ring.close()


def _consumer(transport: str, n_batches: int, rounds: int, ctrl: Any, chan: tuple) -> None:
    if transport == "shm_ring":
        spec, free_w, filled_r = chan
        ring = open_store(spec)
    for _ in range(rounds):
        ctrl.send("ready")
        _recv(ctrl, "go")
        cpu = time.process_time()
        total = 0
        if transport == "shm_ring":
            for _ in range(n_batches):
                slot, nbytes = _FILLED.unpack(filled_r.recv_bytes())
                total += _touch(ring.read(slot, nbytes))
                free_w.send_bytes(_FREE.pack(slot))
        elif transport == "mp_queue":
            (queue,) = chan
            for _ in range(n_batches):
                total += _touch(list(pa.ipc.open_stream(queue.get())))
        elif transport == "mp_pipe":
            (pipe_r,) = chan
            for _ in range(n_batches):
                total += _touch(list(pa.ipc.open_stream(pipe_r.recv_bytes())))
        ctrl.send(("done", time.process_time() - cpu, total))
    if transport == "shm_ring":
        ring.close()


# -- parent -----------------------------------------------------------------------------------------


class _Pair:
    """A producer and a consumer process for one transport, driven round by round from the parent."""

    def __init__(self, ctx: Any, transport: str, batch_bytes: int, n_batches: int, rounds: int) -> None:
        self.transport = transport
        self.ring: ShmRing | None = None
        self.procs: list[Any] = []
        try:
            self._start(ctx, batch_bytes, n_batches, rounds)
        except BaseException:
            self.close()
            raise

    def _start(self, ctx: Any, batch_bytes: int, n_batches: int, rounds: int) -> None:
        transport = self.transport
        if transport == "shm_ring":
            self.ring = ShmRing.create(slot_size=2 * batch_bytes, n_slots=N_SLOTS, prefix="bizon_fast_bench")
            free_r, free_w = ctx.Pipe(duplex=False)
            filled_r, filled_w = ctx.Pipe(duplex=False)
            spec: StoreSpec = self.ring.spec
            prod_chan, cons_chan = (spec, free_r, filled_w), (spec, free_w, filled_r)
        elif transport == "mp_queue":
            queue = ctx.Queue(maxsize=N_SLOTS)
            prod_chan = cons_chan = (queue,)
        else:
            pipe_r, pipe_w = ctx.Pipe(duplex=False)
            prod_chan, cons_chan = (pipe_w,), (pipe_r,)
        # Process.start() drops its args in the parent; the queue's semaphores must outlive the
        # children's unpickling, so the pair keeps every endpoint alive.
        self._keep = (prod_chan, cons_chan)
        self.prod_ctrl, prod_end = ctx.Pipe()
        self.cons_ctrl, cons_end = ctx.Pipe()
        self.procs = [
            ctx.Process(target=_producer, args=(transport, batch_bytes, n_batches, rounds, prod_end, prod_chan)),
            ctx.Process(target=_consumer, args=(transport, n_batches, rounds, cons_end, cons_chan)),
        ]
        for proc in self.procs:
            proc.start()

    def _wait(self, conn: Any, what: str) -> Any:
        """Receive from a child, failing fast if either child died instead of waiting out the timeout."""
        deadline = time.monotonic() + TIMEOUT_S
        while not conn.poll(0.2):
            dead = [p for p in self.procs if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                codes = ", ".join(f"{p.name} exit {p.exitcode}" for p in dead) or "timeout"
                raise RuntimeError(f"{self.transport}: no {what} ({codes})")
        return conn.recv()

    def round(self) -> tuple[float, float]:
        """Run one round; return its wall time, from 'go' to the consumer's last touch, and the CPU
        seconds both processes spent (all threads: the Queue's feeder thread counts)."""
        self._wait(self.prod_ctrl, "producer ready")
        self._wait(self.cons_ctrl, "consumer ready")
        start = time.perf_counter()
        self.prod_ctrl.send("go")
        self.cons_ctrl.send("go")
        consumer = self._wait(self.cons_ctrl, "consumer done")
        elapsed = time.perf_counter() - start
        producer = self._wait(self.prod_ctrl, "producer done")
        return elapsed, consumer[1] + producer[1]

    def close(self) -> None:
        for proc in self.procs:
            if proc.pid is None:  # never started
                continue
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if self.ring is not None:
            self.ring.destroy()


class _Memcpy:
    """The physical limit: the batch's own buffers copied once, in one process, into pre-faulted memory."""

    transport = "memcpy"

    def __init__(self, batch: pa.RecordBatch, n_batches: int) -> None:
        self.sources = [np.frombuffer(column.buffers()[1], dtype=np.uint8) for column in batch.columns]
        self.stride = 2 * batch.nbytes
        self.dest = np.zeros(N_SLOTS * self.stride, dtype=np.uint8)  # zeroing writes every page: pre-faulted
        self.n_batches = n_batches

    def round(self) -> tuple[float, float]:
        cpu, start = time.process_time(), time.perf_counter()
        dest, stride = self.dest, self.stride
        for i in range(self.n_batches):
            offset = (i % N_SLOTS) * stride
            for src in self.sources:
                dest[offset : offset + src.size] = src
                offset += src.size
        return time.perf_counter() - start, time.process_time() - cpu

    def close(self) -> None:
        del self.dest


def run(quick: bool = False) -> list[dict]:
    """Measure every transport at every batch size; one dict per (transport, batch size).

    Keys: transport, batch_bytes, gbps (payload GB/s, 1e9 bytes), batches_per_s (medians of ROUNDS
    rounds), and cpu_us_per_batch (median CPU time of all the transport's processes per batch: unlike
    wall time, it does not depend on how many cores other jobs leave free).
    """
    total = QUICK_TOTAL_BYTES if quick else TOTAL_BYTES
    ctx = mp.get_context("spawn")
    results = []
    for batch_bytes in BATCH_SIZES:
        n_batches = max(total // batch_bytes, 16)
        batch = _make_batch(batch_bytes)
        runners: list[Any] = [_Memcpy(batch, n_batches)]
        try:
            runners += [_Pair(ctx, transport, batch_bytes, n_batches, ROUNDS) for transport in TRANSPORTS]
            samples: dict[str, list[tuple[float, float]]] = {r.transport: [] for r in runners}
            for _ in range(ROUNDS):  # round-robin: noise lands on every transport alike
                for runner in runners:
                    samples[runner.transport].append(runner.round())
        finally:
            for runner in runners:
                runner.close()
        for transport, rounds in samples.items():
            elapsed = statistics.median(wall for wall, _ in rounds)
            cpu = statistics.median(cpu for _, cpu in rounds)
            results.append(
                {
                    "transport": transport,
                    "batch_bytes": batch_bytes,
                    "gbps": batch.nbytes * n_batches / elapsed / 1e9,
                    "batches_per_s": n_batches / elapsed,
                    "cpu_us_per_batch": cpu / n_batches * 1e6,
                    "bytes_moved": batch.nbytes * n_batches,
                    "gbps_rounds": [batch.nbytes * n_batches / wall / 1e9 for wall, _ in rounds],  # the plot's whiskers
                }
            )
    return results


def _size(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def markdown(results: list[dict]) -> str:
    """Throughput by batch size, CPU cost per batch, then the ring's ratios at 4 MiB.

    The targets: ring >= 0.5x memcpy and >= 8x multiprocessing.Queue at 4 MiB.
    """
    by = {(r["transport"], r["batch_bytes"]): r for r in results}
    names = ["memcpy", *TRANSPORTS]
    sizes = sorted({r["batch_bytes"] for r in results})
    lines = [
        "| batch | "
        + " | ".join(f"{n} GB/s" for n in names)
        + " | shm_ring batches/s | mp_queue batches/s | "
        + " | ".join(f"{n} CPU us/batch" for n in names)
        + " |",
        "|---" * (2 * len(names) + 3) + "|",
    ]
    for size in sizes:
        gbps = [f"{by[(n, size)]['gbps']:.2f}" for n in names]
        cpu = [f"{by[(n, size)]['cpu_us_per_batch']:,.0f}" for n in names]
        rates = [f"{by[(n, size)]['batches_per_s']:,.0f}" for n in ("shm_ring", "mp_queue")]
        lines.append(f"| {_size(size)} | " + " | ".join(gbps + rates + cpu) + " |")
    at = 4 << 20
    if ("shm_ring", at) in by:
        ring = by[("shm_ring", at)]
        lines.append("")
        lines.append(
            f"At 4 MiB: ring/memcpy = {ring['gbps'] / by[('memcpy', at)]['gbps']:.2f}x, "
            f"ring/Queue = {ring['gbps'] / by[('mp_queue', at)]['gbps']:.1f}x, "
            f"ring/Pipe = {ring['gbps'] / by[('mp_pipe', at)]['gbps']:.1f}x (wall clock); "
            f"CPU per batch memcpy/ring = {by[('memcpy', at)]['cpu_us_per_batch'] / ring['cpu_us_per_batch']:.2f}x, "
            f"Queue/ring = {by[('mp_queue', at)]['cpu_us_per_batch'] / ring['cpu_us_per_batch']:.1f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"move {QUICK_TOTAL_BYTES >> 20} MiB per case")
    args = parser.parse_args()
    print(markdown(run(quick=args.quick)))


if __name__ == "__main__":
    main()
