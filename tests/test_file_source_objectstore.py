"""The file source on object stores: ``s3://`` against moto's S3 server and ``gs://`` against gcp-storage-emulator,
both on loopback, read through pyarrow's real S3 / GCS clients.

``filesystems.py`` first (opening a store with each option, glob expansion, the one-line errors), then whole
``bizon-fast run`` jobs from a bucket through the command line, compared row for row with what was uploaded.
"""

from __future__ import annotations

import datetime
import http.server
import json
import threading
import types
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from bizon_fast.connectors.sources.file import filesystems
from bizon_fast.connectors.sources.file.filesystems import expand, open_filesystem
from bizon_fast.errors import UserError
from native_bench.services import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY
from tests.services.objectstore import Bucket


def options(**kw: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**kw)


def s3_options(bucket: Bucket, **kw: Any) -> types.SimpleNamespace:
    base = {
        "endpoint_override": bucket.endpoint,
        "access_key_id": S3_ACCESS_KEY,
        "secret_access_key": S3_SECRET_KEY,
        "region": S3_REGION,
    }
    return options(**{**base, **kw})


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def fill(bucket: Bucket) -> None:
    data = parquet_bytes(pa.table({"id": [1, 2, 3]}))
    for key in ("exports/b.parquet", "exports/a.parquet", "exports/day=2/c.parquet", "exports/notes.csv"):
        bucket.put(key, data)
    bucket.put("exports/_SUCCESS", b"")
    bucket.put("exports/.staging/d.parquet", data)


def paths(found: list[pafs.FileInfo], bucket: Bucket) -> list[str]:
    return [f.path.removeprefix(bucket.name + "/") for f in found]


# ---------------------------------------------------------------- S3: opening and listing


def test_s3_glob_lists_matching_files_sorted_with_size_and_mtime(s3_bucket: Bucket) -> None:
    fill(s3_bucket)
    fs, inner = open_filesystem(s3_bucket.url("exports/*.parquet"), s3_options(s3_bucket))
    assert fs.type_name == "s3" and inner == s3_bucket.path("exports/*.parquet")
    found = expand(fs, inner)
    assert paths(found, s3_bucket) == ["exports/a.parquet", "exports/b.parquet"]  # one level, sorted
    size = len(parquet_bytes(pa.table({"id": [1, 2, 3]})))
    now = datetime.datetime.now(datetime.UTC)
    for f in found:
        assert f.size == size
        assert abs((now - f.mtime).total_seconds()) < 120


def test_s3_recursive_glob_folder_and_single_file(s3_bucket: Bucket) -> None:
    fill(s3_bucket)
    fs, _ = open_filesystem(s3_bucket.url(), s3_options(s3_bucket))
    assert paths(expand(fs, s3_bucket.path("exports/**/*.parquet")), s3_bucket) == [
        "exports/a.parquet",
        "exports/b.parquet",
        "exports/day=2/c.parquet",
    ]
    # a folder: every file below it, hidden (.staging) and bookkeeping (_SUCCESS) files skipped
    assert paths(expand(fs, s3_bucket.path("exports")), s3_bucket) == [
        "exports/a.parquet",
        "exports/b.parquet",
        "exports/day=2/c.parquet",
        "exports/notes.csv",
    ]
    assert paths(expand(fs, s3_bucket.path("exports/day=?/*")), s3_bucket) == ["exports/day=2/c.parquet"]
    assert paths(expand(fs, s3_bucket.path("exports/a.parquet")), s3_bucket) == ["exports/a.parquet"]
    # a pattern that names a hidden folder reaches into it
    assert paths(expand(fs, s3_bucket.path("exports/.staging/*.parquet")), s3_bucket) == ["exports/.staging/d.parquet"]


def test_s3_options_reach_the_client(s3_bucket: Bucket) -> None:
    fill(s3_bucket)
    opts = s3_options(s3_bucket, region="eu-west-3", session_token="a-session-token")
    fs, inner = open_filesystem(s3_bucket.url("exports/*.parquet"), opts)
    settings = fs.__reduce__()[1][0]
    assert settings["region"] == "eu-west-3"
    assert settings["access_key"] == S3_ACCESS_KEY and settings["secret_key"] == S3_SECRET_KEY
    assert settings["session_token"] == "a-session-token"
    assert settings["scheme"] == "http" and settings["endpoint_override"] == s3_bucket.endpoint.removeprefix("http://")
    assert len(expand(fs, inner)) == 2


def test_s3_anonymous_reads_without_credentials(s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(s3_bucket)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    fs, inner = open_filesystem(
        s3_bucket.url("exports/*.parquet"), options(endpoint_override=s3_bucket.endpoint, anonymous=True)
    )
    assert fs.__reduce__()[1][0]["anonymous"] is True
    assert len(expand(fs, inner)) == 2
    with fs.open_input_file(expand(fs, inner)[0].path) as f:
        assert pq.read_table(f).column("id").to_pylist() == [1, 2, 3]


def test_s3_default_chain_takes_keys_from_the_environment(s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(s3_bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
    monkeypatch.setenv("AWS_REGION", S3_REGION)
    fs, inner = open_filesystem(s3_bucket.url("exports/*.parquet"), options(endpoint_override=s3_bucket.endpoint))
    assert fs.__reduce__()[1][0]["access_key"] is None  # nothing explicit: the AWS SDK's chain
    assert len(expand(fs, inner)) == 2


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"access_key_id": "k"}, "source.secret_access_key: access_key_id and secret_access_key go together"),
        ({"secret_access_key": "s"}, "source.access_key_id: access_key_id and secret_access_key go together"),
        (
            {"access_key_id": "k", "secret_access_key": "s", "anonymous": True},
            "source.anonymous: anonymous access takes no access_key_id / secret_access_key",
        ),
        ({"session_token": "t"}, "source.session_token: a session token goes with access_key_id and secret_access_key"),
        ({"endpoint_override": "ftp://x:1"}, "source.endpoint_override: expected http(s)://host:port"),
    ],
)
def test_s3_inconsistent_options_are_one_line(opts: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        open_filesystem("s3://some-bucket/x/*.parquet", options(**opts))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_s3_no_match_and_missing_bucket_name_the_path(s3_bucket: Bucket) -> None:
    fill(s3_bucket)
    fs, inner = open_filesystem(s3_bucket.url("exports/*.ndjson"), s3_options(s3_bucket))
    with pytest.raises(UserError, match=r"^source\.path: no files match 's3://bf-test-\w+/exports/\*\.ndjson'$"):
        expand(fs, inner)
    with pytest.raises(UserError, match=r"^source\.path: no files match 's3://bf-test-\w+/nothing' \(no such"):
        expand(fs, s3_bucket.path("nothing"))
    with pytest.raises(UserError, match=r"no files match 's3://no-such-bucket/x/\*' \(no bucket 'no-such-bucket' at "):
        expand(fs, "no-such-bucket/x/*")


def test_s3_unreachable_endpoint_is_one_line() -> None:
    from native_bench.services import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    fs, inner = open_filesystem("s3://bucket/exports/*.parquet", options(endpoint_override=endpoint, anonymous=True))
    with pytest.raises(UserError) as err:
        expand(fs, inner)
    text = str(err.value)
    assert text.startswith(f"source.path: cannot reach s3 endpoint {endpoint}: ") and "\n" not in text


def test_filesystems_are_cached_per_settings(s3_bucket: Bucket) -> None:
    a, _ = open_filesystem(s3_bucket.url("x"), s3_options(s3_bucket))
    b, _ = open_filesystem(s3_bucket.url("y/*.csv"), s3_options(s3_bucket))
    c, _ = open_filesystem(s3_bucket.url("x"), s3_options(s3_bucket, region="eu-west-1"))
    assert a is b and a is not c


# ---------------------------------------------------------------- local paths


def test_local_paths_file_uris_and_relative_paths(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/b.csv", "in/a.csv", "in/sub/c.csv", "in/_SUCCESS"):
        (tmp_path / name).write_text("id\n1\n")
    monkeypatch.chdir(tmp_path)
    for path in ("in/*.csv", f"{tmp_path}/in/*.csv", f"file://{tmp_path}/in/*.csv"):
        fs, inner = open_filesystem(path, None)
        assert isinstance(fs, pafs.LocalFileSystem) and inner == f"{tmp_path}/in/*.csv"
        found = expand(fs, inner)
        assert [f.path for f in found] == [f"{tmp_path}/in/a.csv", f"{tmp_path}/in/b.csv"]
        assert all(f.size == 5 and f.mtime is not None for f in found)
    fs, inner = open_filesystem("in", None)
    assert [f.path.removeprefix(f"{tmp_path}/") for f in expand(fs, inner)] == ["in/a.csv", "in/b.csv", "in/sub/c.csv"]
    with pytest.raises(UserError, match=r"^source\.path: no files match '.*/in/\*\.parquet'$"):
        expand(fs, f"{tmp_path}/in/*.parquet")


def test_unsupported_scheme_and_missing_bucket_are_refused() -> None:
    with pytest.raises(UserError, match=r"^source\.path: unsupported scheme ftp://"):
        open_filesystem("ftp://host/x.csv", None)
    with pytest.raises(UserError, match=r"^source\.path: 's3:///x\.csv' names no bucket"):
        open_filesystem("s3:///x.csv", None)
    with pytest.raises(UserError, match=r"^source\.path: file:// URIs name no host"):
        open_filesystem("file://host/x.csv", None)


# ---------------------------------------------------------------- GCS


def test_gcs_glob_and_read_through_the_emulator(gcs_bucket: Bucket) -> None:
    fill(gcs_bucket)
    opts = options(endpoint_override=gcs_bucket.endpoint, anonymous=True, project="my-project")
    fs, inner = open_filesystem(gcs_bucket.url("exports/**/*.parquet"), opts)
    settings = fs.__reduce__()[1][0]
    assert fs.type_name == "gcs" and settings["project_id"] == "my-project" and settings["anonymous"] is True
    found = expand(fs, inner)
    assert paths(found, gcs_bucket) == ["exports/a.parquet", "exports/b.parquet", "exports/day=2/c.parquet"]
    assert all(f.size and f.mtime for f in found)
    with fs.open_input_file(found[0].path) as f:
        assert pq.read_table(f).column("id").to_pylist() == [1, 2, 3]
    with pytest.raises(UserError, match=r"^source\.path: no files match 'gs://bf-test-\w+/exports/\*\.ndjson'$"):
        expand(fs, gcs_bucket.path("exports/*.ndjson"))


@pytest.fixture
def token_server() -> Iterator[tuple[str, list[dict]]]:
    """An OAuth token endpoint on loopback standing in for Google's: it hands out a token for any signed JWT."""
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            seen.append({"path": self.path, "body": body})
            reply = json.dumps({"access_token": "token-from-key", "expires_in": 3600, "token_type": "Bearer"})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token", seen
    finally:
        server.shutdown()


def service_account_key(token_uri: str) -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    return {
        "type": "service_account",
        "project_id": "key-project",
        "private_key_id": "1",
        "private_key": pem,
        "client_email": "loader@key-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


@pytest.mark.parametrize("as_file", [True, False])
def test_gcs_credentials_key_becomes_a_token(gcs_bucket: Bucket, token_server, tmp_path, as_file: bool) -> None:
    token_uri, seen = token_server
    key = service_account_key(token_uri)
    if as_file:
        (tmp_path / "key.json").write_text(json.dumps(key))
        credentials = str(tmp_path / "key.json")
    else:
        credentials = json.dumps(key)
    fill(gcs_bucket)
    fs, inner = open_filesystem(
        gcs_bucket.url("exports/*.parquet"), options(endpoint_override=gcs_bucket.endpoint, credentials=credentials)
    )
    assert len(seen) == 1 and "jwt-bearer" in seen[0]["body"]  # google-auth signed the key and asked for a token
    settings = fs.__reduce__()[1][0]
    assert settings["access_token"] == "token-from-key" and settings["anonymous"] is False
    expires = settings["credential_token_expiration"]
    assert datetime.timedelta(minutes=50) < expires - datetime.datetime.now(datetime.UTC) <= datetime.timedelta(hours=1)
    assert paths(expand(fs, inner), gcs_bucket) == ["exports/a.parquet", "exports/b.parquet"]


def test_gcs_token_is_renewed_before_it_expires(
    gcs_bucket: Bucket, token_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_uri, seen = token_server
    opts = options(endpoint_override=gcs_bucket.endpoint, credentials=json.dumps(service_account_key(token_uri)))
    first, _ = open_filesystem(gcs_bucket.url("x"), opts)
    assert open_filesystem(gcs_bucket.url("y"), opts)[0] is first and len(seen) == 1
    monkeypatch.setattr(filesystems, "TOKEN_MARGIN", datetime.timedelta(hours=2))  # the token now counts as expiring
    second, _ = open_filesystem(gcs_bucket.url("x"), opts)
    assert second is not first and len(seen) == 2


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ("/no/such/key.json", "source.credentials: no such service account key file: /no/such/key.json"),
        ('{"type": "service_account"}', "source.credentials: not a valid service account key: "),
    ],
)
def test_gcs_bad_credentials_are_one_line(credentials: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        open_filesystem("gs://bucket/x/*.csv", options(credentials=credentials))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_gcs_anonymous_with_credentials_is_refused() -> None:
    with pytest.raises(UserError, match=r"^source\.anonymous: anonymous access takes no credentials$"):
        open_filesystem("gs://bucket/x/*.csv", options(credentials="{}", anonymous=True))
