"""native_bench's supervisor benchmark: the supervisor's own CPU per batch, its ceiling and the 16+16 projection."""

from __future__ import annotations

from pathlib import Path

import pytest

from native_bench.benchmarks import BY_NAME, supervisor
from native_bench.context import Context


def test_a_default_batch_is_one_synthetic_source_batch() -> None:
    """65,536 synthetic rows are ~5 MB of Arrow, over the 4 MiB default: the producer sends each one alone."""
    assert supervisor.default_batch_rows() == 65_536


@pytest.mark.timeout(120)
def test_quick_run_at_one_worker_measures_the_supervisor_alone(tmp_path: Path) -> None:
    assert BY_NAME["supervisor"] is supervisor
    ctx = Context(quick=True, out_dir=tmp_path / "out", scratch=tmp_path, cores=1, rounds=1)
    result = supervisor.run(ctx)
    assert result.notes == []  # every run exited 0 and its committed rows were read back
    (row,) = result.rows
    assert row["workers"] == 1
    # the supervisor is one process of the tree: its own CPU is part of the tree's, never all of it
    assert 0 < row["supervisor_cpu_s"] < row["tree_cpu_s"]
    m = result.metrics
    assert m["supervisor_us_per_batch"] is not None and m["supervisor_us_per_batch"] > 0
    assert m["supervisor_ceiling_batches_per_s"] == pytest.approx(1e6 / m["supervisor_us_per_batch"])
    assert m["projected_supervisor_rows_per_s"] == pytest.approx(m["supervisor_ceiling_batches_per_s"] * 65_536)
    for dest in ("noop", "parquet", "json"):
        per_worker = m[f"{dest}_per_worker_rows_per_s"]
        assert per_worker is not None and per_worker > 0
        assert m[f"{dest}_projected_16x16_rows_per_s"] == pytest.approx(16 * per_worker)
        load = m[f"{dest}_projected_16x16_supervisor_load"]
        assert load == pytest.approx(16 * per_worker / 65_536 / m["supervisor_ceiling_batches_per_s"])
        assert f"| synthetic -> {dest} |" in result.markdown
    assert "binds first |" in result.markdown
