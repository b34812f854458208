"""One cache entry on disk: lock, staging folder, atomic publish, metadata, readiness.

An entry is a folder ``<root>/<namespace>/<key>``. It is *ready* when its metadata file exists:
the file is written into a private staging folder after the build, and the whole folder is
then renamed into place, so a reader sees either nothing or a complete entry.

The lock beside the entry (``<key>.lock``) only prevents duplicate work. Correctness never
depends on it, because on some shared filesystems ``flock`` silently does nothing: two
publishers racing without a working lock both build into their own staging folders, one
rename wins, and the loser discards its copy. Readers never take the lock.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from hydra_cache import registry
from hydra_cache.errors import LockTimeout
from hydra_cache.liveness import hostname, process_alive

log = logging.getLogger(__name__)

METADATA_NAME = ".hydra-cache.json"
METADATA_FORMAT = 1
LOCK_SUFFIX = ".lock"
STAGING_INFIX = ".staging."
#: How often a waiter says whom it waits for.
WAIT_LOG_INTERVAL = 30.0
#: How often a waiter re-checks readiness while the lock is held elsewhere.
_WAIT_SLICE = 0.5

Outcome = Literal["hit", "built", "waited"]


class CacheEntry:
    """A cache entry at ``path``; usually ``CacheEntry(cfg.data.cache_dir)``."""

    def __init__(
        self, path: str | os.PathLike[str], *, wait_log_interval: float = WAIT_LOG_INTERVAL
    ) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + LOCK_SUFFIX)
        self.wait_log_interval = wait_log_interval
        #: What the last :meth:`get_or_build` did: found it, built it, or waited for another.
        self.last_outcome: Outcome | None = None

    def __repr__(self) -> str:
        return f"CacheEntry({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def metadata_path(self) -> Path:
        return self.path / METADATA_NAME

    @property
    def ready(self) -> bool:
        """Published: one ``stat``, no lock, so a hit costs next to nothing."""
        return os.path.isfile(self.metadata_path)

    def metadata(self) -> dict[str, Any] | None:
        """The entry's metadata, or ``None`` when it is not published."""
        try:
            with open(self.metadata_path, encoding="utf-8") as handle:
                data: dict[str, Any] = json.load(handle)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return data

    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held) the lock: host, pid, since. ``None`` if never locked."""
        try:
            with open(self.lock_path, encoding="utf-8") as handle:
                text = handle.read()
            data: dict[str, Any] = json.loads(text)
        except (OSError, ValueError):
            return None
        return data

    def get_or_build(
        self, build: Callable[[Path], object], *, timeout: float | None = None
    ) -> Path:
        """Return the entry's path, building it first if nobody has.

        ``build(staging)`` writes into a private, empty staging folder on the same filesystem;
        after it returns the folder is published atomically. If ``build`` raises, the staging
        folder is removed and the error propagates. Only one process builds a key at a time;
        the others wait (logging whom they wait for) and reuse the result.
        """
        if self.ready:
            self.last_outcome = "hit"
            return self.path
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path), on_acquired=self._write_holder)
        started = time.monotonic()
        last_log = started
        while True:
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise LockTimeout(
                    f"gave up after {waited:.0f}s waiting for {self.path} to be built by "
                    f"{self._describe_holder()}; fix: wait longer (timeout=...) or, if that "
                    f"process is gone, remove {self.lock_path}"
                )
            slice_ = _WAIT_SLICE if timeout is None else min(_WAIT_SLICE, timeout - waited)
            try:
                lock.acquire(timeout=max(slice_, 0.0))
                break
            except Timeout:
                if self.ready:
                    self.last_outcome = "waited"
                    return self.path
                now = time.monotonic()
                if now - last_log >= self.wait_log_interval:
                    last_log = now
                    log.info(
                        "waiting for %s: being built by %s (waited %.0fs)",
                        self.path,
                        self._describe_holder(),
                        now - started,
                    )
        try:
            if self.ready:
                self.last_outcome = "waited"
                return self.path
            self._remove_dead_staging()
            self._build_and_publish(build)
            self.last_outcome = "built"
            return self.path
        finally:
            lock.release()

    def _build_and_publish(self, build: Callable[[Path], object]) -> None:
        staging = self.path.with_name(
            f".{self.path.name}{STAGING_INFIX}{hostname()}.{os.getpid()}.{secrets.token_hex(4)}"
        )
        os.mkdir(staging)
        try:
            started_at = time.time()
            started = time.monotonic()
            build(staging)
            seconds = time.monotonic() - started
            self._write_metadata(staging, started_at, seconds)
            self._publish(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("built %s in %.2fs", self.path, seconds)

    def _publish(self, staging: Path) -> None:
        """Rename the staging folder into place; a lost race discards our copy."""
        for _attempt in range(2):
            try:
                os.rename(staging, self.path)
                _fsync(self.path.parent)
                return
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            if self.ready:  # another publisher won (the lock did not hold); keep theirs
                log.warning(
                    "%s was published by another process while this one built it "
                    "(is flock working on this filesystem?); keeping that copy",
                    self.path,
                )
                shutil.rmtree(staging, ignore_errors=True)
                return
            # Something that is not an entry sits at the path (a half-deleted entry, a
            # hand-made folder): move it aside rather than build into or over it.
            aside = self.path.with_name(f".{self.path.name}.aside.{secrets.token_hex(4)}")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
        raise FileExistsError(errno.EEXIST, "could not publish cache entry", str(self.path))

    def _write_metadata(self, staging: Path, started_at: float, seconds: float) -> None:
        files: dict[str, dict[str, int]] = {}
        for directory, _dirs, names in os.walk(staging):
            for name in names:
                full = os.path.join(directory, name)
                _fsync(full)
                files[os.path.relpath(full, staging)] = {"size": os.lstat(full).st_size}
        info = registry.lookup(str(self.path))
        from hydra_cache import __version__

        metadata: dict[str, Any] = {
            "format": METADATA_FORMAT,
            "hydra_cache_version": __version__,
            "path": str(self.path),
            "namespace": info.namespace if info else self.path.parent.name,
            "key": self.path.name,
            "digest": info.digest if info else None,
            "config_key": info.config_key if info else None,
            "payload": info.payload if info else None,
            "root": info.root if info else str(self.path.parent.parent),
            "root_source": info.root_source if info else None,
            "host": hostname(),
            "pid": os.getpid(),
            "created": _iso(started_at),
            "published": _iso(time.time()),
            "build_seconds": round(seconds, 6),
            "size_bytes": sum(f["size"] for f in files.values()),
            "files": files,
        }
        temporary = staging / (METADATA_NAME + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, staging / METADATA_NAME)
        _fsync(staging)

    def _write_holder(self, fd: int) -> None:
        """Called by filelock right after it acquires: record who builds, for waiters."""
        record = json.dumps(
            {"host": hostname(), "pid": os.getpid(), "since": time.time(), "path": str(self.path)}
        ).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)

    def _describe_holder(self) -> str:
        holder = self.holder()
        if not holder:
            return "another process"
        age = time.time() - float(holder.get("since", time.time()))
        return f"{holder.get('host')}:{holder.get('pid')} (holding the lock for {age:.0f}s)"

    def _remove_dead_staging(self) -> None:
        """Under the lock: staging folders of killed builders of this key on this host."""
        prefix = f".{self.path.name}{STAGING_INFIX}"
        try:
            names = os.listdir(self.path.parent)
        except FileNotFoundError:
            return
        for name in names:
            if not name.startswith(prefix):
                continue
            try:
                host, pid_text, _token = name[len(prefix) :].rsplit(".", 2)
                pid = int(pid_text)
            except ValueError:
                continue
            if process_alive(host, pid) is False:
                log.info("removing %s, left by a killed build (pid %d)", name, pid)
                shutil.rmtree(self.path.parent / name, ignore_errors=True)


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))


def _fsync(path: str | Path) -> None:
    """Flush a file or folder to disk, so a published entry survives a power cut too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
