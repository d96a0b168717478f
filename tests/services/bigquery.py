"""BigQuery for the tests: one emulator (``native_bench.services.Emulator``) per session and a dataset per test.

The real client libraries are pointed at it by ``BIZON_FAST_BIGQUERY_ENDPOINT`` / ``BIZON_FAST_BIGQUERY_GRPC``,
set in this process for the session (CLI subprocesses inherit them); nothing is mocked.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from native_bench.services import BQEMU_PROJECT, Emulator, ServiceUnavailable
from tests.services import need_service


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    try:
        emu = Emulator(tmp_path_factory.mktemp("bqemu") / "bqemulator.log")
    except ServiceUnavailable as exc:
        need_service(f"BigQuery emulator unavailable: {exc}")
    old = {k: os.environ.get(k) for k in emu.env()}
    os.environ.update(emu.env())  # the CLI subprocesses and in-process destinations both read these
    yield emu
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    emu.stop()


@pytest.fixture
def bq_dataset(bq_emulator: Emulator) -> Iterator[str]:
    """A dataset of its own per test, deleted with its tables afterwards."""
    from google.cloud import bigquery

    name = f"bf_{secrets.token_hex(4)}"
    client = bq_emulator.client()
    client.create_dataset(bigquery.Dataset(f"{BQEMU_PROJECT}.{name}"))
    yield name
    client.delete_dataset(f"{BQEMU_PROJECT}.{name}", delete_contents=True, not_found_ok=True)
    client.close()
