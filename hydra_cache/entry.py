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

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hydra_cache import integrity, journal, registry
from hydra_cache.errors import LockTimeout
from hydra_cache.liveness import hostname, iso_time, process_alive
from hydra_cache.locking import EntryLock, LockMode, read_holder, read_small_file
from hydra_cache.roots import ensure_root, is_network_filesystem

log = logging.getLogger(__name__)

METADATA_NAME = ".hydra-cache.json"
METADATA_FORMAT = 1
LOCK_SUFFIX = ".lock"
STAGING_INFIX = ".staging."
#: How often a waiter says whom it waits for.
WAIT_LOG_INTERVAL = 30.0
#: On a network filesystem, how long a process that holds the lock waits for an entry the
#: journal says was just published but that this host cannot see yet (NFS caches lookups for
#: up to 60 s by default). On a local filesystem nothing is late, so it does not wait: an
#: entry that is not there was deleted.
VISIBILITY_PATIENCE = 120.0
#: How often a waiter re-checks readiness while the lock is held elsewhere.
_WAIT_SLICE = 0.5
#: A hit refreshes the entry's "last used" mark (its metadata's mtime) at most this often.
LAST_USED_RESOLUTION = 60.0

Outcome = Literal["hit", "built", "waited"]
Status = Literal["hit", "building", "torn", "miss"]


@dataclass(frozen=True)
class Leftover:
    """A staging folder left beside an entry, and whether its builder still runs."""

    name: str
    host: str
    pid: int
    alive: bool | None
    age_seconds: float


@dataclass(frozen=True)
class EntryState:
    """What is on disk for one entry right now, with the evidence."""

    status: Status
    holder: dict[str, Any] | None = None
    leftovers: tuple[Leftover, ...] = ()


class CacheEntry:
    """A cache entry at ``path``; usually ``CacheEntry(cfg.data.cache_dir)``.

    ``lock`` is ``auto``, ``flock`` or ``soft`` (default: ``hydra_cache.lock`` of the config
    that derived the path, else ``auto``). ``verify_on_hit`` re-hashes the entry's files on
    every hit and rebuilds a damaged entry (moving the damaged one aside).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock: LockMode | None = None,
        verify_on_hit: bool = False,
        wait_log_interval: float = WAIT_LOG_INTERVAL,
        visibility_patience: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + LOCK_SUFFIX)
        #: How the resolver derived this path (None for a path made by hand).
        self.info = registry.lookup(str(self.path))
        self.lock_mode: LockMode = lock or (self.info.lock_mode if self.info else "auto")
        self.verify_on_hit = verify_on_hit
        self.wait_log_interval = wait_log_interval
        self._visibility_patience = visibility_patience
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
    def root(self) -> Path:
        return Path(self.info.root) if self.info else self.path.parent.parent

    @property
    def ready(self) -> bool:
        """Published: one ``lstat``, no lock, so a hit costs next to nothing."""
        try:
            return stat.S_ISREG(os.lstat(self.metadata_path).st_mode)
        except OSError:
            return False

    def metadata(self) -> dict[str, Any] | None:
        """The entry's metadata, or ``None`` when it is not published (or not readable)."""
        data = read_small_file(self.metadata_path, 1 << 26)
        if data is None:
            return None
        try:
            loaded = json.loads(data)
        except ValueError:
            return None
        return loaded if isinstance(loaded, dict) else None

    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held) the lock: host, pid, since. ``None`` if never locked."""
        return read_holder(self.lock_path)

    def get_or_build(
        self,
        build: Callable[[Path], object],
        *,
        timeout: float | None = None,
        audit: bool | None = None,
    ) -> Path:
        """Return the entry's path, building it first if nobody has.

        ``build(staging)`` writes into a private, empty staging folder on the same filesystem;
        after it returns the folder is published atomically. If ``build`` raises, the staging
        folder is removed and the error propagates. Only one process builds a key at a time;
        the others wait (logging whom they wait for) and reuse the result.

        ``audit=True`` (default: ``hydra_cache.audit``) records which config values the build
        reads and warns about each one outside the entry's key (see :mod:`hydra_cache.audit`).
        """
        if self._hit():
            return self.path
        ensure_root(self.root, shared=bool(self.info and self.info.shared))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = EntryLock(self.lock_path, self.lock_mode, str(self.path))
        if not self._wait_for_lock(lock, timeout):
            self._note("waited")
            return self.path
        try:
            if self._hit(after_wait=True) or self._appears_soon():
                return self.path
            self._remove_dead_staging()
            self._build_and_publish(build, audit)
            return self.path
        finally:
            lock.release()

    def _wait_for_lock(self, lock: EntryLock, timeout: float | None) -> bool:
        """Take the lock (True), or see the entry published meanwhile (False)."""
        started = time.monotonic()
        last_log = started
        while True:
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise LockTimeout(
                    f"gave up after {waited:.0f}s waiting for {self.path} to be built by "
                    f"{lock.describe_holder()}; fix: wait longer (timeout=...) or, if that "
                    f"process is gone, remove {self.lock_path}"
                )
            slice_ = _WAIT_SLICE if timeout is None else min(_WAIT_SLICE, timeout - waited)
            if lock.acquire(slice_):
                return True
            if self.ready:
                return False
            now = time.monotonic()
            if now - last_log >= self.wait_log_interval:
                last_log = now
                log.info(
                    "waiting for %s: being built by %s (waited %.0fs)",
                    self.path,
                    lock.describe_holder(),
                    now - started,
                )

    @property
    def visibility_patience(self) -> float:
        """How long to wait for a journaled publish to become visible (see VISIBILITY_PATIENCE)."""
        if self._visibility_patience is None:
            network = is_network_filesystem(self.path.parent)
            self._visibility_patience = VISIBILITY_PATIENCE if network else 0.0
        return self._visibility_patience

    def _appears_soon(self) -> bool:
        """Under the lock, not visible: wait if the journal says it was just published.

        On NFS another node's publish can stay invisible here for up to a minute. Rebuilding
        would be correct (the rename would lose to the published entry) but wasteful.
        """
        if self.visibility_patience <= 0:
            return False
        published = journal.recent_publish(
            self.root, self.path.parent.name, self.path.name, within=self.visibility_patience
        )
        if published is None:
            return False
        started = time.monotonic()
        delay = 0.05
        log.info(
            "waiting for %s to become visible here: %s:%s published it at %s",
            self.path,
            published.get("host"),
            published.get("pid"),
            published.get("time"),
        )
        while time.monotonic() - started < self.visibility_patience:
            time.sleep(delay)
            if self._hit(after_wait=True):
                return True
            delay = min(delay * 2, 5.0)
        log.warning(
            "%s was journaled as published but stayed invisible for %.0fs; rebuilding",
            self.path,
            self.visibility_patience,
        )
        return False

    def _build_and_publish(self, build: Callable[[Path], object], audit: bool | None) -> None:
        staging = self.path.with_name(
            f".{self.path.name}{STAGING_INFIX}{hostname()}.{os.getpid()}.{os.urandom(4).hex()}"
        )
        os.mkdir(staging)
        try:
            started_at = time.time()
            started = time.monotonic()
            uncovered = self._run_build(build, staging, audit)
            seconds = time.monotonic() - started
            metadata = self._write_metadata(staging, started_at, seconds, uncovered)
            published = self._publish(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("built %s in %.2fs", self.path, seconds)
        self._note("built" if published else "waited", seconds, metadata["size_bytes"])
        if published:
            self._journal_publish(metadata)

    def _run_build(
        self, build: Callable[[Path], object], staging: Path, audit: bool | None
    ) -> list[str] | None:
        """Run the build, recording its config reads when the audit is on."""
        info = self.info
        if not (audit if audit is not None else bool(info and info.audit)):
            build(staging)
            return None
        config = registry.config_of(str(self.path))
        if info is None or config is None:
            log.warning(
                "cannot audit the build of %s: its path was not resolved from a config "
                "in this process",
                self.path,
            )
            build(staging)
            return None
        from hydra_cache.audit import recording

        with recording(config, info.covered, info.excluded) as recorder:
            build(staging)
        uncovered = recorder.uncovered()
        for key in uncovered:
            log.warning(
                "build of %s read %s, which is not part of its key: runs that differ "
                "only in %s will share this entry",
                info.config_key,
                key,
                key,
            )
        return uncovered

    def _publish(self, staging: Path) -> bool:
        """Rename the staging folder into place; a lost race discards our copy (False)."""
        for _attempt in range(3):
            try:
                os.rename(staging, self.path)
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise
                if error.errno == errno.ENOENT and not staging.exists():
                    # The rename reported failure after it took effect (an NFS retry).
                    if self._published_by(staging.name):
                        return True
                    raise
            else:
                _fsync(self.path.parent)
                return True
            if self.ready:  # another publisher won (the lock did not hold); keep theirs
                log.warning(
                    "%s was published by another process while this one built it "
                    "(is the lock working on this filesystem?); keeping that copy",
                    self.path,
                )
                shutil.rmtree(staging, ignore_errors=True)
                return False
            # Something that is not an entry sits at the path (a half-deleted entry, a
            # hand-made folder, a planted link): move it aside rather than build into it.
            aside = self.path.with_name(f".{self.path.name}.aside.{os.urandom(4).hex()}")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            if os.path.islink(aside):
                os.unlink(aside)
            else:
                shutil.rmtree(aside, ignore_errors=True)
        raise FileExistsError(errno.EEXIST, "could not publish cache entry", str(self.path))

    def _published_by(self, staging_name: str) -> bool:
        meta = self.metadata()
        return bool(meta and meta.get("staging") == staging_name)

    def _write_metadata(
        self, staging: Path, started_at: float, seconds: float, uncovered: list[str] | None = None
    ) -> dict[str, Any]:
        files = integrity.fingerprint(staging)
        for name, record in files.items():
            if "symlink" not in record:
                _fsync(staging / name)
        info = self.info
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
            "run_dir": info.run_dir if info else None,
            "host": hostname(),
            "pid": os.getpid(),
            "staging": staging.name,
            "created": iso_time(started_at),
            "published": iso_time(time.time()),
            "build_seconds": round(seconds, 6),
            "size_bytes": sum(f["size"] for f in files.values()),
            "files": files,
            "inputs": info.inputs if info else None,
            "upstreams": list(info.upstreams) if info else [],
            "audit": None if uncovered is None else {"uncovered": uncovered},
        }
        temporary = staging / (METADATA_NAME + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, staging / METADATA_NAME)
        _fsync(staging)
        return metadata

    def _hit(self, *, after_wait: bool = False) -> bool:
        """The hit path: one ``lstat``; refresh the last-used mark at most once a minute."""
        try:
            status = os.lstat(self.metadata_path)
        except OSError:
            return False
        if not stat.S_ISREG(status.st_mode):
            return False
        if self.verify_on_hit and not self._intact():
            return False
        now = time.time()
        if now - status.st_mtime > LAST_USED_RESOLUTION:
            # On a read-only shared cache this fails: the mark is only a hint for gc.
            with contextlib.suppress(OSError):
                os.utime(self.metadata_path, (now, now))
        self._note("waited" if after_wait else "hit")
        return True

    def _intact(self) -> bool:
        """The opt-in check on hit: files as recorded at publish, or the entry is moved aside."""
        meta = self.metadata() or {}
        problems = integrity.damage(self.path, meta.get("files") or {}, skip=METADATA_NAME)
        if not problems:
            return True
        log.warning(
            "%s is damaged (%s); moving it aside and rebuilding", self.path, "; ".join(problems[:5])
        )
        with contextlib.suppress(FileNotFoundError):
            integrity.quarantine(self.root, self.path, problems)
        return False

    def _note(self, action: Outcome, seconds: float | None = None, size: int | None = None) -> None:
        self.last_outcome = action
        registry.note_outcome(str(self.path), registry.Outcome(action, seconds, size))

    def _journal_publish(self, metadata: dict[str, Any]) -> None:
        root = Path(metadata["root"])
        keep = (
            "namespace",
            "key",
            "digest",
            "config_key",
            "payload",
            "run_dir",
            "size_bytes",
            "build_seconds",
            "path",
        )
        try:
            journal.append(root, "publish", **{k: metadata[k] for k in keep})
            journal.remember_root(root, metadata.get("root_source") or "unknown")
        except OSError as error:  # the entry is published and valid; the record is a hint
            log.warning("published %s but could not journal it: %s", self.path, error)

    def state(self) -> EntryState:
        """hit, building (a live process holds the lock), torn (a killed build's leftovers)
        or miss, with the evidence."""
        if self.ready:
            return EntryState("hit")
        leftovers = tuple(self.leftovers())
        holder = self.holder()
        lock = EntryLock(self.lock_path, self.lock_mode, str(self.path))
        if holder is not None and lock.held_elsewhere():
            return EntryState("building", holder, leftovers)
        if any(item.alive is not True for item in leftovers):
            return EntryState("torn", holder, leftovers)
        return EntryState("miss", holder, leftovers)

    def leftovers(self) -> list[Leftover]:
        """Staging folders of this key (a build in progress, or a killed one)."""
        prefix = f".{self.path.name}{STAGING_INFIX}"
        found: list[Leftover] = []
        try:
            scan = list(os.scandir(self.path.parent))
        except (FileNotFoundError, NotADirectoryError):
            return found
        now = time.time()
        for item in scan:
            if not item.name.startswith(prefix):
                continue
            creator = staging_creator(item.name)
            if creator is None:
                continue
            try:
                age = now - item.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            host, pid = creator
            found.append(Leftover(item.name, host, pid, process_alive(host, pid), age))
        return found

    def _remove_dead_staging(self) -> None:
        """Under the lock: staging folders of killed builders of this key on this host."""
        for item in self.leftovers():
            if item.alive is False:
                log.info("removing %s, left by a killed build (pid %d)", item.name, item.pid)
                shutil.rmtree(self.path.parent / item.name, ignore_errors=True)


def staging_creator(name: str) -> tuple[str, int] | None:
    """Host and pid of the builder of a staging folder ``.<key>.staging.<host>.<pid>.<x>``."""
    if not name.startswith(".") or STAGING_INFIX not in name:
        return None
    try:
        host, pid, _token = name.split(STAGING_INFIX, 1)[1].rsplit(".", 2)
        return host, int(pid)
    except ValueError:
        return None


def _fsync(path: str | Path) -> None:
    """Flush a file or folder to disk, so a published entry survives a power cut too."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
