"""An example custom source, written as a bizon user would (bizon-fast provides ``bizon.*``).

``squares`` returns ``rows`` records ``{n, square}`` in pages of ``page_size``; the pagination is an
offset, so a resumed run continues after the last committed page. Used by ``custom_source.yml``.
"""

from __future__ import annotations

from bizon.source.config import SourceConfig
from bizon.source.models import SourceIteration, SourceRecord
from bizon.source.source import AbstractSource
from pydantic import Field


class NumbersConfig(SourceConfig):
    rows: int = Field(1000, ge=0, description="records in the stream")
    page_size: int = Field(250, ge=1, description="records per page")


class NumbersSource(AbstractSource):
    def __init__(self, config: NumbersConfig):
        super().__init__(config)
        self.config: NumbersConfig = config

    @staticmethod
    def streams() -> list[str]:
        return ["squares"]

    @staticmethod
    def get_config_class() -> SourceConfig:
        return NumbersConfig

    def get_authenticator(self):
        return None

    def check_connection(self) -> tuple[bool, str | None]:
        return True, None

    def get_total_records_count(self) -> int | None:
        return self.config.rows

    def get(self, pagination: dict | None = None) -> SourceIteration:
        start = int((pagination or {}).get("offset", 0))
        stop = min(start + self.config.page_size, self.config.rows)
        records = [SourceRecord(id=str(n), data={"n": n, "square": n * n}) for n in range(start, stop)]
        return SourceIteration(next_pagination={"offset": stop} if stop < self.config.rows else {}, records=records)
