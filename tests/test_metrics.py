"""Prometheus metrics during a run (``--metrics-port`` / ``engine.monitoring.prometheus``), through the CLI.

A synthetic -> slow parquet run is scraped while it writes: the counters grow between scrapes, the
families and labels documented in docs/operations.md are there, and the port is closed once the run
ends. A port already in use is refused with one line, exit 2, before any job exists. The config block's
validation and the command-line override are checked at the loader.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bizon_fast.connectors.pipeline import load_config
from bizon_fast.errors import ConfigError
from native_bench.services import workers_of
from tests.conftest import REPO

URL_IN_LOG = re.compile(r"serving Prometheus metrics at (http://\S+/metrics)")


@pytest.fixture(autouse=True)
def _slow_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A destination that takes its time, so the run is still writing when it is scraped."""
    monkeypatch.setenv("BIZON_FAST_DESTINATIONS", "slow_file=tests.fixtures.slow_file:SlowFileDestination")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def write_pipeline(
    workdir: Path, *, rows: int, delay: float, monitoring: str = "", runner: str = "{max_workers: 2}"
) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "pipeline.yml"
    path.write_text(
        f"""
name: metrics-{workdir.name}
source: {{name: synthetic, stream: events, rows: {rows}, splits: 4, batch_rows: 10000}}
destination:
  name: slow_file
  config: {{destination_id: out/events, format: parquet, buffer_size: 1, write_delay_s: {delay}}}
engine:
  backend: {{type: sqlite, config: {{database: {workdir / "ckpt" / "bizon"}}}}}
  queue: {{config: {{batch_size_mb: 1}}}}
  runner: {{config: {runner}}}
{monitoring}
"""
    )
    return path


def start(workdir: Path, *args: str) -> subprocess.Popen:
    """``bizon-fast run pipeline.yml ARGS`` as a user starts it (progress lines on stderr), logging to ``logs``."""
    import os

    env = {**os.environ, "BIZON_FAST_LOG_DIR": str(workdir / "logs")}
    return subprocess.Popen(
        [sys.executable, "-m", "bizon_fast", "run", "pipeline.yml", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def url_from_log(workdir: Path, proc: subprocess.Popen, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in (workdir / "logs").glob("*.log") if (workdir / "logs").exists() else []:
            found = URL_IN_LOG.search(log.read_text())
            if found:
                return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no metrics URL in the log; run: {proc.communicate()}")


def scrape(url: str) -> dict[str, list]:
    """family name -> its samples."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict[str, list], sample: str, **labels: str) -> float:
    for family in families.values():
        for s in family:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(sample)


def assert_closed(url: str) -> None:
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_metrics_are_served_during_the_run_and_the_port_closes_after(tmp_path: Path) -> None:
    proc = start(write_pipeline(tmp_path / "run", rows=600_000, delay=0.3).parent, "--metrics-port", "0")
    try:
        url = url_from_log(tmp_path / "run", proc)
        scrapes = []
        split_labels: set[str] = set()
        while proc.poll() is None and len(scrapes) < 40:
            try:
                families = scrape(url)
            except OSError:  # URLError, a reset: the run ended between the poll and the scrape
                break
            scrapes.append(families)
            split_labels |= {s.labels["split"] for s in families.get("bizon_fast_split_lag_rows", [])}
            time.sleep(0.3)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"metrics: {url}" in err  # port 0: the URL picked is shown on the console too
    assert len(scrapes) >= 2, "the run ended before it was scraped twice"

    written = [value(f, "bizon_fast_rows_written_total") for f in scrapes]
    read = [value(f, "bizon_fast_rows_read_total") for f in scrapes]
    assert written == sorted(written) and read == sorted(read)  # counters never go back
    assert written[-1] > written[0] and read[-1] > 0, (read, written)  # rows moved while it was scraped
    assert all(r >= w for r, w in zip(read, written, strict=True))

    last = scrapes[-1]
    expected = {
        "bizon_fast_up",
        "bizon_fast_run_state",
        "bizon_fast_job_info",
        "bizon_fast_rows_read",
        "bizon_fast_bytes_read",
        "bizon_fast_batches_read",
        "bizon_fast_rows_written",
        "bizon_fast_bytes_written",
        "bizon_fast_batches_written",
        "bizon_fast_worker_restarts",
        "bizon_fast_worker_stalls",
        "bizon_fast_workers",
        "bizon_fast_commit_seconds",
        "bizon_fast_ring_slots_used",
        "bizon_fast_ring_slots",
        "bizon_fast_ring_occupancy",
        "bizon_fast_splits",
        "bizon_fast_splits_done",
        "bizon_fast_split_lag_rows",
        "bizon_fast_split_seconds_since_commit",
    }
    assert expected <= set(last), expected - set(last)
    assert value(last, "bizon_fast_up") == 1
    assert value(last, "bizon_fast_run_state", bizon_fast_run_state="running") == 1
    info = next(s for s in last["bizon_fast_job_info"] if s.name == "bizon_fast_job_info")
    assert info.labels["pipeline"] == "metrics-run"
    assert info.labels["source"] == "synthetic" and info.labels["stream"] == "events"
    assert info.labels["destination"] == "slow_file"
    assert re.fullmatch(r"[0-9a-f]{32}", info.labels["job_id"])
    assert value(last, "bizon_fast_splits") == 4
    assert value(last, "bizon_fast_ring_slots") > 0
    assert 0 <= value(last, "bizon_fast_ring_occupancy") <= 1
    assert value(last, "bizon_fast_workers", role="consumer") == 2
    assert value(last, "bizon_fast_worker_restarts_total") == 0
    assert value(last, "bizon_fast_worker_stalls_total") == 0
    assert value(last, "bizon_fast_commit_seconds_count") >= 1  # the slow destination commits while it runs
    assert split_labels and all(label.startswith("ids-") for label in split_labels)
    assert info.labels["job_id"] in out  # the summary names the same job

    assert_closed(url)


def test_engine_monitoring_prometheus_from_the_yaml(tmp_path: Path) -> None:
    port = free_port()
    workdir = tmp_path / "yaml"
    write_pipeline(
        workdir,
        rows=200_000,
        delay=0.3,
        monitoring=f"  monitoring: {{prometheus: {{port: {port}, host: 127.0.0.1}}}}",
    )
    proc = start(workdir, "--quiet")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert url_from_log(workdir, proc) == url
        families = scrape(url)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert value(families, "bizon_fast_up") == 1
    info = next(s for s in families["bizon_fast_job_info"] if s.name == "bizon_fast_job_info")
    assert info.labels["pipeline"] == "metrics-yaml"
    assert_closed(url)


def test_a_stalled_worker_is_counted_as_a_stall_and_a_restart(tmp_path: Path) -> None:
    """SIGSTOP the only consumer: the supervisor kills it after ``stall_timeout_s``; the counters say so."""
    workdir = tmp_path / "stall"
    write_pipeline(
        workdir, rows=400_000, delay=0.2, runner="{producers: 2, consumers: 1, stall_timeout_s: 2, max_restarts: 5}"
    )
    proc = start(workdir, "--quiet", "--metrics-port", "0")
    stopped: list[psutil.Process] = []
    try:
        url = url_from_log(workdir, proc)
        deadline = time.monotonic() + 60
        while not stopped and time.monotonic() < deadline and proc.poll() is None:
            if value(scrape(url), "bizon_fast_batches_written_total") >= 1:
                stopped = [w for w in workers_of(proc.pid) if w.name().startswith("bf-consumer")][:1]
                for w in stopped:
                    w.send_signal(signal.SIGSTOP)
            time.sleep(0.1)
        assert stopped, "the run ended before its consumer could be stopped"
        stalls = restarts = 0.0
        while proc.poll() is None and time.monotonic() < deadline and not (stalls and restarts):
            try:
                families = scrape(url)
            except OSError:
                break
            stalls = value(families, "bizon_fast_worker_stalls_total")
            restarts = value(families, "bizon_fast_worker_restarts_total")
            time.sleep(0.2)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        for w in stopped:
            with contextlib.suppress(psutil.Error):
                w.kill()
    assert (stalls, restarts) == (1, 1)
    assert proc.returncode == 0, err


def test_a_port_in_use_is_one_error_line_before_any_job(tmp_path: Path) -> None:
    workdir = tmp_path / "busy"
    write_pipeline(workdir, rows=10_000, delay=0)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = start(workdir, "--quiet", "--metrics-port", str(port))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"Error: engine.monitoring.prometheus: cannot serve metrics at http://127.0.0.1:{port}/")
    assert "--metrics-port" in lines[0]
    db = workdir / "ckpt" / "bizon.sqlite3"
    if db.exists():  # the backend may not even be opened; if it is, it holds no job
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "bizon_fast_jobs" in tables:
                assert conn.execute("SELECT count(*) FROM bizon_fast_jobs").fetchone()[0] == 0
    assert not (workdir / "out").exists() or not any((workdir / "out").rglob("*.parquet"))


def test_the_config_block_is_validated_and_the_option_overrides_its_port(tmp_path: Path) -> None:
    good = write_pipeline(
        tmp_path / "good", rows=10, delay=0, monitoring="  monitoring: {prometheus: {port: 9464, host: 0.0.0.0}}"
    )
    cfg = load_config(good)
    assert cfg.engine.monitoring.prometheus is not None
    assert (cfg.engine.monitoring.prometheus.host, cfg.engine.monitoring.prometheus.port) == ("0.0.0.0", 9464)
    cfg = load_config(good, metrics_port=0)  # the option replaces the port, the YAML's host stands
    assert (cfg.engine.monitoring.prometheus.host, cfg.engine.monitoring.prometheus.port) == ("0.0.0.0", 0)

    plain = write_pipeline(tmp_path / "plain", rows=10, delay=0)
    assert load_config(plain).engine.monitoring.prometheus is None  # nothing served unless asked for
    assert load_config(plain, metrics_port=9100).engine.monitoring.prometheus.host == "127.0.0.1"

    bad = write_pipeline(tmp_path / "bad", rows=10, delay=0, monitoring="  monitoring: {prometheus: {port: 70000}}")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "engine.monitoring.prometheus.port" in str(info.value) and "65535" in str(info.value)

    empty = write_pipeline(tmp_path / "empty", rows=10, delay=0, monitoring="  monitoring: {prometheus: }")
    with pytest.raises(ConfigError) as info:
        load_config(empty)
    assert "engine.monitoring.prometheus.port" in str(info.value)

    typo = write_pipeline(tmp_path / "typo", rows=10, delay=0, monitoring="  monitoring: {prometheus: {prot: 1}}")
    with pytest.raises(ConfigError) as info:
        load_config(typo)
    assert "prot" in str(info.value)

    with pytest.raises(ConfigError, match="--metrics-port"):
        load_config(plain, metrics_port=-1)
