"""What every benchmark is given: the mode, where to write, scratch space, cores and rounds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FULL_ROUNDS = 3
QUICK_ROUNDS = 1


@dataclass
class Context:
    """``quick`` scales every size down (CI smoke test); ``rounds`` is how many interleaved runs each contender gets."""

    quick: bool
    out_dir: Path
    scratch: Path
    cores: int = os.cpu_count() or 1
    rounds: int = FULL_ROUNDS

    @classmethod
    def make(cls, quick: bool, out_dir: Path, scratch: Path) -> Context:
        return cls(quick=quick, out_dir=out_dir, scratch=scratch, rounds=QUICK_ROUNDS if quick else FULL_ROUNDS)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def worker_counts(self) -> list[int]:
        """1..cores: the scaling axis (every count, so the curve shows where it flattens)."""
        return list(range(1, self.cores + 1))
