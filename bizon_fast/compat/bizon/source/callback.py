"""Source callbacks. bizon never invokes them (its ``on_iterations_written`` is dead code); kept for imports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class AbstractSourceCallback(ABC):
    @abstractmethod
    def __init__(self, config: Any) -> None: ...

    @abstractmethod
    def on_iterations_written(self, iterations: list[Any]) -> None: ...


class NoOpSourceCallback(AbstractSourceCallback):
    def __init__(self, config: Any) -> None:
        self.config = config

    def on_iterations_written(self, iterations: list[Any]) -> None:
        return None
