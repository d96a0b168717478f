"""Paths stay inside, and a full disk is one line.

- In stream mode a record's ``destination_id`` comes from source data and names the file its row goes
  to: ``../../escape``, an absolute path or a NUL must not write outside the destination folder.
- A publish that runs out of room (ENOSPC on a real, tiny tmpfs; EFBIG under ``RLIMIT_FSIZE`` where
  mounting is not allowed) fails the job with one line naming the file and the errno, leaves no
  temporary file behind, and a rerun with room publishes exactly.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bizon_fast.connectors.destinations.file.file_stream import contained_id
from tests.faults import check_json_ids

ESCAPING_SOURCE = """
from bizon.source.config import SourceConfig
from bizon.source.models import SourceIteration, SourceRecord
from bizon.source.source import AbstractSource

#: where each record asks to go; every one but "kept" and "sub/kept" tries to leave the folder
TARGETS = ["../../escape", "/tmp/bf-absolute-escape", "kept", "sub/kept", "", "a/../../b", "nul\\x00name", "..", None]


class EscapingSource(AbstractSource):
    def __init__(self, config: SourceConfig):
        super().__init__(config)
        self.page = 0

    @staticmethod
    def streams() -> list[str]:
        return ["escapes"]

    @staticmethod
    def get_config_class() -> SourceConfig:
        return SourceConfig

    def get_authenticator(self):
        return None

    def check_connection(self):
        return True, None

    def get_total_records_count(self):
        return None

    def get(self, pagination: dict = None) -> SourceIteration:
        start = self.page * len(TARGETS)
        self.page += 1
        records = [
            SourceRecord(id=start + i, data={"n": start + i, "to": t}, destination_id=t) for i, t in enumerate(TARGETS)
        ]
        return SourceIteration(next_pagination={}, records=records)
"""


def test_contained_id() -> None:
    assert contained_id("kept") == "kept"
    assert contained_id("sub/kept") == "sub/kept"
    assert contained_id("../../escape") == "escape"
    assert contained_id("/etc/cron.d/x") == "etc/cron.d/x"
    assert contained_id("a/../../b") == "a/b"
    assert contained_id("nul\x00name") == "nulname"
    assert contained_id("..") == contained_id("") == contained_id("/") == contained_id("./.") == ""


def test_stream_destination_ids_from_data_stay_in_the_destination_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"  # "../../escape" from work/out would land in tmp_path
    work.mkdir()
    (work / "escaping.py").write_text(ESCAPING_SOURCE)
    (work / "p.yml").write_text(
        """
name: escapes
source: {name: escaping, stream: escapes, sync_mode: stream, max_iterations: 3}
destination: {name: file, config: {destination_id: out/main}}
engine: {runner: {type: stream}}
"""
    )
    res = subprocess.run(
        [sys.executable, "-m", "bizon_fast", "run", "p.yml", "--quiet", "--custom-source", "escaping.py"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BIZON_FAST_LOG_DIR": str(work / "logs")},
    )
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path)) == ["work"], "a record's file was written outside the working directory"
    assert not Path("/tmp/bf-absolute-escape.json").exists()
    outside = [
        p.relative_to(work).as_posix()
        for p in work.rglob("*")
        if p.is_file() and not p.is_relative_to(work / "out") and p.suffix == ".json"
    ]
    assert outside == [], "record files outside the destination folder"

    files = {p.relative_to(work / "out").as_posix(): p for p in (work / "out").rglob("*.json")}
    assert set(files) == {"main.json", "escape.json", "tmp/bf-absolute-escape.json", "kept.json", "sub/kept.json"} | {
        "a/b.json",
        "nulname.json",
    }
    rows = {name: [json.loads(json.loads(line)["source_data"])["to"] for line in p.open()] for name, p in files.items()}
    assert all(len(v) == 3 for k, v in rows.items() if k != "main.json"), rows  # one record a page, 3 pages
    assert sorted(rows["main.json"], key=str) == sorted(["", "..", None] * 3, key=str)  # nothing left: the default
    assert rows["escape.json"] == ["../../escape"] * 3

    log = "".join(p.read_text() for p in (work / "logs").rglob("*.log"))
    assert "destination_id '../../escape' from the source data leaves the destination folder" in log
    assert "18 records had a destination_id that leaves the destination folder" in log


# ---------------------------------------------------------------- a full disk at publish


def _can_mount() -> bool:
    """Whether this machine lets us mount a tmpfs (root, and a container that allows it): probed once."""
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as probe:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], capture_output=True).returncode:
            return False
        subprocess.run(["umount", probe], check=False)
    return True


#: both where the machine allows a mount; never a skip (CI turns skips into failures)
DISKS = ["rlimit", "tmpfs"] if _can_mount() else ["rlimit"]


@pytest.fixture(params=DISKS)
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, dict]]:
    """A 1 MiB tmpfs (a real ENOSPC, where mounting is allowed) and an RLIMIT_FSIZE of 700 KiB (a real EFBIG).

    Under the file-size limit the run uses the thread runner: the shared-memory ring is a file too.
    """
    mount = tmp_path / "disk"
    mount.mkdir()
    if request.param == "rlimit":
        limit = {"bytes": 700 * 1024}
        grow = lambda: limit.update(bytes=resource.RLIM_INFINITY)  # noqa: E731
        yield mount, {"errno": "EFBIG", "grow": grow, "limit": limit, "engine": "{runner: {type: thread}}"}
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount, {"errno": "ENOSPC", "grow": lambda: _remount(mount), "limit": None, "engine": "{}"}
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=8m", str(mount)], check=True)


def _run_limited(cwd: Path, limit: dict | None) -> subprocess.CompletedProcess:
    def preexec() -> None:
        if limit is not None:  # parts (~460 KiB each) fit; their ~930 KiB concatenation does not
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit["bytes"], limit["bytes"]))

    return subprocess.run(
        [sys.executable, "-m", "bizon_fast", "run", "p.yml", "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BIZON_FAST_LOG_DIR": str(cwd / "logs")},
        preexec_fn=preexec,
    )


def test_a_full_disk_at_publish_is_one_line_and_leaves_no_temporary_file(tmp_path: Path, small_disk) -> None:
    disk, how = small_disk
    (tmp_path / "p.yml").write_text(
        f"""
name: full-disk
source: {{name: synthetic, stream: events, rows: 2000, splits: 2, payload_bytes: 64}}
destination: {{name: file, config: {{destination_id: "{disk}/events", format: json}}}}
engine: {how["engine"]}
"""
    )
    res = _run_limited(tmp_path, how["limit"])
    assert res.returncode == 1, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("Error: file destination: publishing /")
    assert ".ready.tmp failed: " in lines[0] and f"({how['errno']}, errno " in lines[0], lines[0]
    assert "run the same command to publish it" in lines[0]
    assert not list(disk.rglob("*.tmp")), "a temporary publish file was left behind"
    assert not (disk / "events.json").exists()
    with sqlite3.connect(tmp_path / "bizon.sqlite3") as db:
        assert db.execute("SELECT status FROM bizon_fast_jobs").fetchall() == [("failed",)]

    how["grow"]()
    res = _run_limited(tmp_path, how["limit"])
    assert res.returncode == 0, res.stderr
    check_json_ids(disk / "events.json", 2000)
    assert [p.name for p in disk.iterdir()] == ["events.json"]
