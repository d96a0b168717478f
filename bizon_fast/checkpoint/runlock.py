"""The run lock of the embedded (sqlite) backends: an OS file lock per pipeline.

Why a file lock: sqlite has no session that dies with its process (a row saying "running" outlives
a SIGKILL), but ``flock`` does -- the kernel drops it when the last descriptor of the holder goes,
so a killed run never leaves a lock behind and the next run resumes at once. The lock file also
carries who holds it (pid, host, start time, command), written after the lock is taken, so that a
refused run can name the holder.

The descriptor is opened close-on-exec (Python's default), and workers are forked by a fork server
that started before the lock was taken, so no worker holds it: a dead supervisor's lock is free
even while its orphaned workers are still winding down.

Where: beside the sqlite file (``<database>.locks/``), since the runs that share that file are the
ones that must not overlap; for ``sqlite_in_memory`` (a database per run) in a per-user temp
directory, since two such runs still write the same destination. Directories are 0700, files 0600:
the holder's command line is nobody else's business.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from bizon_fast.checkpoint.base import RunHolder, run_refused, this_holder
from bizon_fast.errors import UserError

#: how long a refused run waits for the holder's details to appear (they are written just after the lock)
READ_WAIT_S = 0.5


def lock_file_name(name: str, source_name: str, stream_name: str) -> str:
    """``<readable name>-<hash of the key>.lock``: unique per (pipeline, source, stream), safe as a file name."""
    digest = hashlib.sha256("\x00".join((name, source_name, stream_name)).encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "pipeline"
    return f"{readable}-{digest}.lock"


def user_lock_dir() -> Path:
    """``<tmp>/bizon-fast-<uid>/locks``: shared by this user's runs, checked to be this user's own.

    The temp directory is world-writable, so another user could have made the path first (to read
    our command lines, or to plant a symlink): such a directory is refused, not used.
    """
    base = Path(tempfile.gettempdir()) / f"bizon-fast-{os.getuid()}"
    private_dir(base, check_owner=True)
    locks = base / "locks"
    private_dir(locks, check_owner=True)
    return locks


def private_dir(path: Path, *, check_owner: bool = False) -> None:
    """Create ``path`` (and its parents) with mode 0700 when missing; with ``check_owner``, refuse one
    that is a symlink, not ours, or open to others."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)  # the umask may have removed bits, never added: make it exact
        except FileExistsError:
            pass
        if check_owner:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
                raise UserError(
                    f"engine.backend: the run lock directory {path} is not a private directory of this user "
                    "(a symlink, another owner, or open to others); remove it and run again"
                )
    except OSError as exc:
        raise UserError(f"engine.backend: cannot create the run lock directory {path}: {exc}") from None


class FileRunLock:
    """One pipeline's run lock in ``directory``; ``acquire`` once, ``release`` at close (or die)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.fd: int | None = None
        self.shared = False

    def acquire(self, name: str, source_name: str, stream_name: str, *, shared: bool = False) -> None:
        """Take the lock without waiting, or raise the ``run_refused`` UserError naming its holder."""
        if self.fd is not None:
            return
        private_dir(self.directory)
        path = self.directory / lock_file_name(name, source_name, stream_name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UserError(f"engine.backend: cannot open the run lock file {path}: {exc}") from None
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)  # a file that was there before (made by hand, say) may be wider
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = time.monotonic() + READ_WAIT_S
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._read(fd)
                # the holder writes its details just after locking: give it a moment to, and ignore
                # the stale details of a dead holder that its successor has not overwritten yet
                if (holder is None or holder.surely_dead()) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                os.close(fd)
                holder = holder or RunHolder()
                holder.detail = f"lock file {path}"
                raise run_refused(name, source_name, stream_name, holder) from None
            except OSError as exc:
                os.close(fd)
                raise UserError(f"engine.backend: cannot lock the run lock file {path}: {exc}") from None
        self.fd, self.path, self.shared = fd, path, shared
        if not shared:  # shared holders (broker roles) would overwrite each other: they leave no details
            self._write(fd, msgspec.json.encode(this_holder()) + b"\n")

    @staticmethod
    def _read(fd: int) -> RunHolder | None:
        try:
            data = os.pread(fd, 4096, 0)
            return msgspec.json.decode(data.strip(), type=RunHolder) if data.strip() else None
        except (OSError, msgspec.DecodeError):
            return None  # being written right now

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        """Best effort: the lock is what excludes; the details only word the refusal."""
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            if not self.shared:
                os.ftruncate(fd, 0)  # no stale details for the next refused run to print
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def serialized(directory: Path, name: str = "open.lock") -> Iterator[None]:
    """Hold a blocking exclusive ``flock`` on ``directory/name`` for the body.

    Why: two runs started in the same instant both set up a new sqlite file (WAL switch, schema);
    sqlite answers one of them "database is locked" at once, without its busy wait, instead of
    letting it wait its turn. Taking turns here lets both get through to the run lock, which then
    refuses the second one by name -- the refusal an operator can act on.
    """
    private_dir(directory)
    path = directory / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UserError(f"engine.backend: cannot open the lock file {path}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the holder only sets up a schema: a short wait
        yield
    finally:
        os.close(fd)  # closing drops the lock
