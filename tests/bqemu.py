"""Start ``bqemulator`` (a BigQuery emulator: REST + gRPC Storage API on DuckDB) for the tests and the benchmark.

The emulator lives in a venv of its own (its pins clash with ours): ``$BIZON_FAST_BQEMULATOR`` names its
``bqemulator`` executable, else ``<repo>/.venv-bqemu/bin/bqemulator``, created on first use (once: later
runs and CI reuse it). duckdb's spatial extension comes from a wheel and is copied where duckdb looks,
because the emulator would otherwise try to download it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-bqemu"
PINS = ["bqemulator==1.4.0", "duckdb==1.5.5", "duckdb-extension-spatial==1.5.5", "numpy"]
PROJECT = "test-project"


class EmulatorUnavailable(Exception):
    """The emulator could not be installed or started; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable() -> Path:
    """The ``bqemulator`` executable, installing its venv once (under a file lock) when missing."""
    given = os.environ.get("BIZON_FAST_BQEMULATOR")
    if given:
        if not Path(given).is_file():
            raise EmulatorUnavailable(f"BIZON_FAST_BQEMULATOR={given} does not exist")
        return Path(given)
    exe = VENV / "bin" / "bqemulator"
    lock_path = REPO / ".venv-bqemu.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.is_file():
            try:
                subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=300)
                subprocess.run(
                    [str(VENV / "bin" / "pip"), "install", "-q", *PINS], check=True, capture_output=True, timeout=900
                )
            except (subprocess.SubprocessError, OSError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                shutil.rmtree(VENV, ignore_errors=True)
                raise EmulatorUnavailable(
                    f"cannot install bqemulator into {VENV}: {exc} {detail.decode(errors='replace')[-500:]}"
                ) from None
    _install_spatial(exe)
    return exe


def _install_spatial(exe: Path) -> None:
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
        exe = executable()
        self.rest_port, self.grpc_port = _free_port(), _free_port()
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
                PROJECT,
                "--log-level",
                "warning",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmulatorUnavailable(f"bqemulator exited with {self.proc.returncode}; see {log_path}")
            try:
                urllib.request.urlopen(f"{self.rest}/bigquery/v2/projects/{PROJECT}/datasets", timeout=1).read()
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise EmulatorUnavailable(f"bqemulator did not answer on {self.rest} within 60 s; see {log_path}")

    def env(self) -> dict[str, str]:
        return {"BIZON_FAST_BIGQUERY_ENDPOINT": self.rest, "BIZON_FAST_BIGQUERY_GRPC": self.grpc}

    def client(self):  # noqa: ANN201 - google.cloud.bigquery.Client, imported lazily
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=PROJECT, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=self.rest)
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
