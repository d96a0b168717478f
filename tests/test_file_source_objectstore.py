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
    for path in (
        "in/*.csv",
        f"{tmp_path}/in/*.csv",
        f"file://{tmp_path}/in/*.csv",
        f"file://localhost{tmp_path}/in/*.csv",
    ):
        fs, inner = open_filesystem(path, None)
        assert isinstance(fs, pafs.LocalFileSystem) and inner == f"{tmp_path}/in/*.csv"
        found = expand(fs, inner)
        assert [f.path for f in found] == [f"{tmp_path}/in/a.csv", f"{tmp_path}/in/b.csv"]
        assert all(f.size == 5 and f.mtime is not None for f in found)
    fs, inner = open_filesystem("in", None)
    assert [f.path.removeprefix(f"{tmp_path}/") for f in expand(fs, inner)] == ["in/a.csv", "in/b.csv", "in/sub/c.csv"]
    with pytest.raises(UserError, match=r"^source\.path: no files match '.*/in/\*\.parquet'$"):
        expand(fs, f"{tmp_path}/in/*.parquet")
    fs, inner = open_filesystem(f"file://{tmp_path}/in/?.csv", None)  # a glob's ? is no URI query
    assert [f.path for f in expand(fs, inner)] == [f"{tmp_path}/in/a.csv", f"{tmp_path}/in/b.csv"]


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


def test_gcs_unreachable_endpoint_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from native_bench.services import free_port

    monkeypatch.setattr(filesystems, "GCS_RETRY_LIMIT", datetime.timedelta(seconds=1))  # not 15 s of retries here
    endpoint = f"http://127.0.0.1:{free_port()}"
    fs, inner = open_filesystem("gs://bucket/x/*.csv", options(endpoint_override=endpoint, anonymous=True))
    with pytest.raises(UserError) as err:
        expand(fs, inner)
    text = str(err.value)
    assert text.startswith(f"source.path: cannot reach gcs endpoint {endpoint}: ") and "\n" not in text
    assert "error_info" not in text  # google-cloud-cpp's appendix repeats the message


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


# ---------------------------------------------------------------- whole jobs through the command line


def events(lo: int, hi: int) -> pa.Table:
    """Rows ``[lo, hi)`` with a column of each kind the readers type (ints, floats, strings, timestamps, nulls)."""
    ids = list(range(lo, hi))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "amount": pa.array([i * 0.25 for i in ids], pa.float64()),
            "name": pa.array([f"name-{i}" if i % 7 else None for i in ids], pa.string()),
            "ts": pa.array([1_700_000_000_000_000 + i for i in ids], pa.timestamp("us", tz="UTC")),
        }
    )


def upload_parquet(bucket: Bucket, key: str, data: pa.Table, row_group_size: int = 1000) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink, row_group_size=row_group_size)
    bucket.put(key, sink.getvalue().to_pybytes())


def upload_csv(bucket: Bucket, key: str, data: pa.Table, gz: bool = False) -> None:
    import gzip

    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    pacsv.write_csv(data, sink)
    raw = sink.getvalue().to_pybytes()
    bucket.put(key, gzip.compress(raw) if gz else raw)


def upload_ndjson(bucket: Bucket, key: str, data: pa.Table) -> None:
    lines = [
        json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()})
        for row in data.to_pylist()
    ]
    bucket.put(key, ("\n".join(lines) + "\n").encode())


def write_pipeline(folder, name: str, source: dict) -> str:
    import yaml

    config = {
        "name": name,
        "source": {"name": "file", "stream": "events", **source},
        "destination": {"name": "file", "config": {"destination_id": f"out/{name}", "format": "parquet"}},
    }
    (folder / "pipeline.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return "pipeline.yml"


def s3_source(bucket: Bucket, path: str, **extra: Any) -> dict:
    """The object store keys of ``source:``, the secret (and the key id) as env:// references."""
    return {
        "path": bucket.url(path),
        "endpoint_override": bucket.endpoint,
        "region": S3_REGION,
        "access_key_id": "env://BF_TEST_S3_KEY_ID",
        "secret_access_key": "env://BF_TEST_S3_SECRET",
        **extra,
    }


S3_ENV = {"BF_TEST_S3_KEY_ID": S3_ACCESS_KEY, "BF_TEST_S3_SECRET": S3_SECRET_KEY}


def output(folder, name: str) -> pa.Table:
    import pyarrow.dataset as ds

    files = sorted(str(p) for p in (folder / "out" / name).rglob("*.parquet") if not p.name.startswith((".", "_")))
    assert files, f"no Parquet output under out/{name}"
    return ds.dataset(files, format="parquet").to_table().sort_by("id")


def committed_splits(folder) -> list[str]:
    """The splits the run committed (sqlite checkpoint in the run folder): one per file part it read."""
    import sqlite3

    with sqlite3.connect(folder / "bizon.sqlite3") as conn:
        return sorted(r[0] for r in conn.execute("SELECT split_id FROM bizon_fast_cursors WHERE done = 1"))


def assert_exact(got: pa.Table, expected: pa.Table, columns: list[str] | None = None) -> None:
    columns = columns or expected.column_names
    assert got.num_rows == expected.num_rows
    for name in columns:
        assert got.column(name).to_pylist() == expected.column(name).to_pylist(), name


def test_cli_s3_parquet_glob_with_two_workers_is_exact(s3_bucket: Bucket, cli, tmp_path) -> None:
    parts = [events(0, 2500), events(2500, 6000), events(6000, 6001)]
    for i, part in enumerate(parts):
        upload_parquet(s3_bucket, f"exports/2024/part-{i}.parquet", part)
    upload_parquet(s3_bucket, "exports/2024/_tmp/ignored.parquet", events(10_000, 10_010))
    upload_parquet(s3_bucket, "elsewhere/ignored.parquet", events(20_000, 20_010))
    # split_size_mb tiny: the 4-row-group files are read by row-group runs, across both workers
    config = write_pipeline(tmp_path, "s3_parquet", s3_source(s3_bucket, "exports/*/*.parquet", split_size_mb=0.01))
    result = cli("run", config, "--workers", "2", "--quiet", env=S3_ENV)
    assert result.returncode == 0, result.stderr
    assert_exact(output(tmp_path, "s3_parquet"), pa.concat_tables(parts))
    assert len(committed_splits(tmp_path)) == 3 + 4 + 1  # one split per row group (1000 rows each)


def test_cli_s3_csv_plain_and_gz_are_exact(s3_bucket: Bucket, cli, tmp_path) -> None:
    csv_parts = [events(0, 3000), events(3000, 5000)]
    upload_csv(s3_bucket, "csv/a.csv", csv_parts[0])
    upload_csv(s3_bucket, "csv/b.csv.gz", csv_parts[1], gz=True)
    config = write_pipeline(
        tmp_path, "s3_csv", s3_source(s3_bucket, "csv/*", format="csv", split_size_mb=0.02, csv={"null_values": [""]})
    )
    result = cli("run", config, "--workers", "2", "--quiet", env=S3_ENV)
    assert result.returncode == 0, result.stderr
    assert_exact(output(tmp_path, "s3_csv"), pa.concat_tables(csv_parts))  # nulls, floats and timestamps included
    splits = committed_splits(tmp_path)
    assert sum("/csv/a.csv" in s for s in splits) > 1  # the plain file read in byte ranges
    assert sum("/csv/b.csv.gz" in s for s in splits) == 1  # the compressed one as one stream


def test_cli_s3_ndjson_is_exact(s3_bucket: Bucket, cli, tmp_path) -> None:
    nd = events(0, 4000).drop_columns(["ts"])
    upload_ndjson(s3_bucket, "nd/events.ndjson", nd)
    config = write_pipeline(tmp_path, "s3_ndjson", s3_source(s3_bucket, "nd/*.ndjson", split_size_mb=0.02))
    result = cli("run", config, "--workers", "2", "--quiet", env=S3_ENV)
    assert result.returncode == 0, result.stderr
    assert_exact(output(tmp_path, "s3_ndjson"), nd)
    assert len(committed_splits(tmp_path)) > 1  # byte ranges of the one file


def test_cli_s3_incremental_loads_only_new_files(s3_bucket: Bucket, cli, tmp_path) -> None:
    upload_parquet(s3_bucket, "inc/day-1.parquet", events(0, 1000))
    config = write_pipeline(tmp_path, "s3_inc", s3_source(s3_bucket, "inc/*.parquet", sync_mode="incremental"))
    first = cli("run", config, "--quiet", env=S3_ENV)
    assert first.returncode == 0, first.stderr
    assert_exact(output(tmp_path, "s3_inc"), events(0, 1000))
    upload_parquet(s3_bucket, "inc/day-2.parquet", events(1000, 1500))
    second = cli("run", config, "--quiet", env=S3_ENV)
    assert second.returncode == 0, second.stderr
    assert_exact(output(tmp_path, "s3_inc"), events(0, 1500))  # day-1 not read again: each id once


def test_cli_s3_errors_are_one_line(s3_bucket: Bucket, cli, tmp_path) -> None:
    from native_bench.services import free_port

    upload_parquet(s3_bucket, "exports/a.parquet", events(0, 10))
    config = write_pipeline(tmp_path, "s3_nomatch", s3_source(s3_bucket, "exports/*.csv"))
    result = cli("run", config, "--quiet", env=S3_ENV)
    assert result.returncode == 2
    assert f"source.path: no files match 's3://{s3_bucket.name}/exports/*.csv'" in result.stderr
    assert "Traceback" not in result.stderr

    source = {**s3_source(s3_bucket, "exports/*.parquet"), "endpoint_override": f"http://127.0.0.1:{free_port()}"}
    config = write_pipeline(tmp_path, "s3_down", source)
    result = cli("run", config, "--quiet", env=S3_ENV)
    assert result.returncode == 2
    assert "source.path: cannot reach s3 endpoint http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr

    result = cli("run", write_pipeline(tmp_path, "s3_nosecret", s3_source(s3_bucket, "exports/*.parquet")), "--quiet")
    assert result.returncode == 2 and "BF_TEST_S3_KEY_ID" in result.stderr  # the env:// reference is resolved


def test_cli_gcs_parquet_glob_is_exact(gcs_bucket: Bucket, cli, tmp_path) -> None:
    parts = [events(0, 3000), events(3000, 4000)]
    for i, part in enumerate(parts):
        upload_parquet(gcs_bucket, f"exports/part-{i}.parquet", part)
    source = {
        "path": gcs_bucket.url("exports/*.parquet"),
        "endpoint_override": gcs_bucket.endpoint,
        "anonymous": True,
        "split_size_mb": 0.01,
    }
    config = write_pipeline(tmp_path, "gcs_parquet", source)
    result = cli("run", config, "--workers", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert_exact(output(tmp_path, "gcs_parquet"), pa.concat_tables(parts))
