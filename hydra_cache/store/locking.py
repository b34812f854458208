"""The lock beside an entry, in one of three modes, and who holds it.

``flock`` locks are exact on local filesystems but silently do nothing on some shared ones,
and are missing on others; ``soft`` locks (an exclusively created marker file) work wherever
exclusive creation does, and filelock reclaims one left by a dead process on the same host.
``auto`` uses flock and falls back to soft where flock is unsupported. Either way the lock
only prevents duplicate work: correctness comes from the atomic publish.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from hydra_cache.errors import UnsafePathError
from hydra_cache.store.liveness import CLOCK_TOLERANCE, hostname, process_alive

log = logging.getLogger(__name__)

LockMode = Literal["auto", "flock", "soft"]
LOCK_MODES: tuple[LockMode, ...] = ("auto", "flock", "soft")
_announced_fallback: set[str] = set()  # folders where flock proved unsupported (auto mode)


def refuse_planted(path: Path, what: str) -> None:
    """Refuse a symlink, FIFO or other non-file where hydra-cache expects its own file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    kind = (
        "symlink"
        if stat.S_ISLNK(mode)
        else "FIFO"
        if stat.S_ISFIFO(mode)
        else "directory"
        if stat.S_ISDIR(mode)
        else "special file"
    )
    raise UnsafePathError(
        f"{path} is a {kind} where hydra-cache expects its {what}: refusing to use it (it may "
        f"have been planted); fix: remove it if you did not create it"
    )


def read_regular(
    path: str | os.PathLike[str], limit: int | None = 1 << 20
) -> tuple[bytes, os.stat_result] | None:
    """A regular file's bytes (at most ``limit``; ``None``: all of it) and status, never
    following a symlink or blocking on a FIFO; None for anything else or any error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return None
        if limit is not None:
            return os.read(fd, min(limit, status.st_size + 1)), status
        chunks = []
        while chunk := os.read(fd, max(status.st_size + 1, 1 << 16)):
            chunks.append(chunk)
        return b"".join(chunks), status
    except OSError:
        return None
    finally:
        os.close(fd)


def read_small_file(path: Path | str, limit: int = 1 << 20) -> bytes | None:
    """A regular file's bytes, never following a symlink or blocking on a FIFO."""
    found = read_regular(path, limit)
    return None if found is None else found[0]


def read_holder(lock_path: Path) -> dict[str, Any] | None:
    """Who holds (or last held) a lock: our JSON record, or a soft lock's pid/host marker."""
    data = read_small_file(lock_path, 65536)
    if not data:
        return None
    text = data.decode("utf-8", "replace")
    if text.startswith("{"):
        try:
            record: dict[str, Any] = json.loads(text)
        except ValueError:
            return None
        return record
    lines = text.splitlines()
    try:
        since = os.lstat(lock_path).st_mtime
        return {"pid": int(lines[0]), "host": lines[1] if len(lines) > 1 else "?", "since": since}
    except (ValueError, IndexError, OSError):
        return None


class EntryLock:
    """One entry's lock. ``acquire`` returns False on timeout instead of raising."""

    def __init__(self, lock_path: Path, mode: LockMode = "auto", entry: str = "") -> None:
        if mode not in LOCK_MODES:
            raise ValueError(f"lock mode must be one of {LOCK_MODES}, not {mode!r}")
        self.lock_path = lock_path
        self.mode = mode
        self.entry = entry
        self._impl: Any = None

    def _make(self) -> Any:
        from filelock import FileLock, SoftFileLock

        if self.mode == "soft":
            return SoftFileLock(str(self.lock_path))
        if self.mode == "flock":
            return FileLock(
                str(self.lock_path), on_acquired=self._write_holder, fallback_to_soft=False
            )
        # auto: filelock itself falls back to a soft lock where flock is unsupported (it does
        # not call on_acquired then, so the holder record is written after acquiring).
        return FileLock(str(self.lock_path), fallback_to_soft=True)

    def acquire(self, timeout: float) -> bool:
        from filelock import Timeout

        refuse_planted(self.lock_path, "lock file")
        if self._impl is None:
            self._impl = self._make()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self._impl.acquire(timeout=max(timeout, 0.0))
            except Timeout:
                return False
        if (
            any("falling back to SoftFileLock" in str(w.message) for w in caught)
            and str(self.lock_path.parent) not in _announced_fallback
        ):
            _announced_fallback.add(str(self.lock_path.parent))
            log.warning(
                "flock is not supported under %s; using soft (marker file) locks there",
                self.lock_path.parent,
            )
        if self.mode == "auto":
            self._record_holder()
        return True

    def _record_holder(self) -> None:
        """Write the holder record beside a flock (a soft lock's marker already names us)."""
        current = read_small_file(self.lock_path, 64) or b""
        if current[:1].isdigit():  # a soft marker: pid, host, start time
            return
        try:
            fd = os.open(self.lock_path, os.O_WRONLY | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            self._write_holder(fd)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._impl is not None:
            self._impl.release()

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (probes without waiting or writing)."""
        return probe(self.lock_path)

    def _write_holder(self, fd: int) -> None:
        """Called by filelock right after it acquires: record who builds, for waiters."""
        record = json.dumps(
            {"host": hostname(), "pid": os.getpid(), "since": time.time(), "path": self.entry}
        ).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        except OSError as error:  # the record only tells waiters whom they wait for
            log.debug("could not record the holder of %s: %s", self.lock_path, error)

    def holder_age(self) -> float | None:
        """Seconds since the holder took the lock (how long its build has run), if known."""
        holder = read_holder(self.lock_path)
        since = (holder or {}).get("since")
        return max(0.0, time.time() - float(since)) if isinstance(since, (int, float)) else None

    def describe_holder(self) -> str:
        holder = read_holder(self.lock_path)
        if not holder:
            return "another process"
        since = float(holder.get("since", time.time()))
        seconds = time.time() - since
        held = (
            f"holding the lock since {time.strftime('%H:%M:%S', time.localtime(since))}, "
            "by its clock, which is ahead of ours"
            if seconds < -CLOCK_TOLERANCE
            else f"holding the lock for {max(seconds, 0.0):.0f}s"
        )
        who = f"{holder.get('host')}:{holder.get('pid')} ({held})"
        if holder.get("host") != hostname():
            who += f"; if that process is gone, remove {self.lock_path}"
        return who


def probe(lock_path: Path) -> bool:
    """Whether someone holds the lock at ``lock_path`` right now; writes nothing.

    A flock is probed through a read-only descriptor (a flock held in another PID namespace
    or, on filesystems that forward it, on another host, still conflicts). A soft lock's
    marker counts as held unless its creator is known to be dead on this host. Anything that
    is not a regular file (a planted link or FIFO) is not a lock of ours: not held.
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            if error.errno not in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP):
                raise
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        head = os.pread(fd, 256, 0)
    finally:
        os.close(fd)
    if head[:1].isdigit():  # a soft lock's marker: pid, host
        lines = head.decode("utf-8", "replace").splitlines()
        try:
            pid, host = int(lines[0]), lines[1] if len(lines) > 1 else "?"
        except (ValueError, IndexError):
            return True
        return process_alive(host, pid) is not False
    return False
