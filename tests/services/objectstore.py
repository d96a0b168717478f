"""Object stores for the tests: moto's S3 server and gcp-storage-emulator (``native_bench.services``), one of each
per session on loopback, and a fresh bucket per test, written through pyarrow's own S3 / GCS filesystems.

Why emulators that speak the protocol rather than in-process mocks: bizon-fast reads the bucket from another
process (``bizon-fast run``), through the AWS C++ SDK or google-cloud-cpp inside pyarrow, as it would read
the real clouds.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from native_bench.services import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, ServiceUnavailable, gcs_emulator, moto_s3
from tests.services import need_service


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server for the whole session: ``http://127.0.0.1:PORT`` (any key pair is accepted)."""
    with contextlib.ExitStack() as stack:
        try:
            endpoint = stack.enter_context(moto_s3(tmp_path_factory.mktemp("moto") / "moto.log"))
        except ServiceUnavailable as exc:
            need_service(str(exc))
        yield endpoint


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gcp-storage-emulator for the whole session: ``http://127.0.0.1:PORT`` (anonymous access)."""
    with contextlib.ExitStack() as stack:
        try:
            endpoint = stack.enter_context(gcs_emulator(tmp_path_factory.mktemp("gcs") / "gcs.log"))
        except ServiceUnavailable as exc:
            need_service(str(exc))
        yield endpoint


@dataclass
class Bucket:
    """A bucket of its own for one test: ``fs`` writes to it (paths ``bucket/key``), ``url(key)`` names it."""

    scheme: str  # s3 | gs
    endpoint: str
    name: str
    fs: pafs.FileSystem

    def url(self, key: str = "") -> str:
        return f"{self.scheme}://{self.name}/{key}"

    def path(self, key: str) -> str:
        return f"{self.name}/{key}"

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` as is (pyarrow would otherwise compress a ``.gz`` key's bytes once more)."""
        with self.fs.open_output_stream(self.path(key), compression=None) as out:
            out.write(data)

    def put_file(self, key: str, local: Path) -> None:
        self.put(key, Path(local).read_bytes())


def s3_filesystem(endpoint: str) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem on ``endpoint`` with the test key pair (and leave to create buckets)."""
    return pafs.S3FileSystem(
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
        region=S3_REGION,
        scheme="http",
        endpoint_override=endpoint.removeprefix("http://"),
        allow_bucket_creation=True,
    )


def gcs_filesystem(endpoint: str) -> pafs.GcsFileSystem:
    return pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override=endpoint.removeprefix("http://"))


def create_gcs_bucket(endpoint: str, name: str) -> None:
    """Buckets are created through the JSON API (pyarrow's GcsFileSystem needs a project for that)."""
    request = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=test-project",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Bucket:
    """A new S3 bucket on the emulator."""
    fs = s3_filesystem(s3_endpoint)
    name = _name("bf-test")
    fs.create_dir(name)
    return Bucket("s3", s3_endpoint, name, fs)


@pytest.fixture
def gcs_bucket(gcs_endpoint: str) -> Bucket:
    """A new GCS bucket on the emulator."""
    name = _name("bf-test")
    create_gcs_bucket(gcs_endpoint, name)
    return Bucket("gs", gcs_endpoint, name, gcs_filesystem(gcs_endpoint))
