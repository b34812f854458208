"""One cache entry on disk: the small public facade over layout, locks, publish and wait.

An entry is a folder ``<root>/<namespace>/<key>``. It is *ready* when its metadata file exists:
the file is written into a private staging folder after the build, and the whole folder is
then renamed into place, so a reader sees either nothing or a complete entry.

The lock beside the entry (``<key>.lock``) only prevents duplicate work. Correctness never
depends on it, because on some shared filesystems ``flock`` silently does nothing: two
publishers racing without a working lock both build into their own staging folders, one
rename wins, and the loser discards its copy. A process that got the entry holds a shared
lock on the entry folder (see :mod:`hydra_cache.store.inuse`), so ``gc`` leaves it alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hydra_cache import registry
from hydra_cache.errors import DamagedEntryError
from hydra_cache.store import inuse, journal, layout, metadata, publish, wait
from hydra_cache.store.integrity import damage
from hydra_cache.store.liveness import age, process_alive
from hydra_cache.store.locking import EntryLock, LockMode, read_holder
from hydra_cache.store.remove import remove_tree
from hydra_cache.store.roots import ensure_root, is_network_filesystem

log = logging.getLogger(__name__)

METADATA_NAME = layout.METADATA_NAME
METADATA_FORMAT = metadata.FORMAT
LOCK_SUFFIX = layout.LOCK_SUFFIX
STAGING_INFIX = layout.STAGING_INFIX
#: How often a waiter says whom it waits for, and a builder that it is still building.
WAIT_LOG_INTERVAL = 30.0
#: On a network filesystem, how long a process that holds the lock waits for an entry the
#: journal says was just published but that this host cannot see yet (NFS caches lookups for
#: up to 60 s by default). On a local filesystem nothing is late, so it does not wait: an
#: entry that is not there was deleted.
VISIBILITY_PATIENCE = 120.0
#: A hit refreshes the entry's "last used" mark (its metadata's mtime) at most this often.
LAST_USED_RESOLUTION = 60.0

Outcome = Literal["hit", "built", "waited", "pulled"]
Status = Literal["hit", "building", "torn", "miss"]

#: Entries this process rebuilt because verify_on_hit found them damaged.
_rebuilt_after_damage: set[str] = set()


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
    every hit and rebuilds a damaged entry once (moving the damaged one aside); damaged again
    right after, it raises :class:`~hydra_cache.errors.DamagedEntryError` instead of looping.
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
        self.lock_path = layout.lock_path(self.path)
        #: How the resolver derived this path (None for a path made by hand).
        self.info = registry.lookup(str(self.path))
        self.lock_mode: LockMode = lock or (self.info.lock_mode if self.info else "auto")
        self.verify_on_hit = verify_on_hit
        self.wait_log_interval = wait_log_interval
        self._visibility_patience = visibility_patience
        self._key = str(self.path)
        self._damaged_now = False
        #: What the last :meth:`get_or_build` did: found it, built it, waited for another, or
        #: pulled the team's copy from the remote.
        self.last_outcome: Outcome | None = None
        #: A remote for a path no config derived here (``hydra-cache pull KEY`` sets it).
        self._remote: Any = None

    def __repr__(self) -> str:
        return f"CacheEntry({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def metadata_path(self) -> Path:
        return layout.metadata_path(self.path)

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
        found = metadata.read(self.path)
        return None if found is None else found.raw

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
        the others wait (logging whom they wait for) and reuse the result. ``timeout=0``
        tries the lock once.

        A path that holds something other than an entry (a folder of files, a file, a link)
        raises :class:`~hydra_cache.errors.NotAnEntryError` naming it; nothing is moved.

        ``audit=True`` (default: ``hydra_cache.audit``) records which config values the build
        reads and warns about each one outside the entry's key (see :mod:`hydra_cache.audit`).
        """
        self._damaged_now = False
        if self._hit():
            return self.path
        ensure_root(self.root, shared=bool(self.info and self.info.shared))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = EntryLock(self.lock_path, self.lock_mode, str(self.path))
        taken = wait.take_lock_or_see_ready(
            lock,
            lambda: self.ready,
            path=self.path,
            timeout=timeout,
            log_interval=self.wait_log_interval,
            last_build=self._last_build,
        )
        if not taken and self._hit(after_wait=True):
            return self.path
        if not taken:  # published and gone again at once: build it under the lock
            return self.get_or_build(build, timeout=timeout, audit=audit)
        try:
            if self._hit(after_wait=True) or wait.appears_soon(
                self.root,
                self.path,
                self.visibility_patience,
                lambda: self._hit(after_wait=True),
            ):
                return self.path
            self._remove_dead_staging()
            while not publish.clear_path(self.path):  # published meanwhile (a no-op lock)
                if self._hit(after_wait=True):
                    return self.path
            published, record, seconds, action = self._obtain(build, audit, timeout)
            inuse.hold(self.path)  # before the lock goes, so gc cannot take it in between
        finally:
            lock.release()
        if action == "built":
            log.info("built %s in %.2fs", self.path, seconds)
        if published:
            self._journal_publish(record)
        if not self._damaged_now:
            _rebuilt_after_damage.discard(self._key)
        elif self.verify_on_hit:
            self._intact()  # damaged again at once: raises instead of rebuilding in a loop
        self._note(action, seconds, record["size_bytes"])
        return self.path

    def _obtain(
        self, build: Callable[[Path], object], audit: bool | None, timeout: float | None
    ) -> tuple[bool, dict[str, Any], float, Outcome]:
        """Under the lock, still missing: build it here or, with a remote, pull the team's copy
        (see :mod:`hydra_cache.store.remote.tier`)."""

        def build_here() -> tuple[bool, dict[str, Any], float]:
            return publish.build_and_publish(
                self.path,
                lambda staging: self._run_build(build, staging, audit),
                self.info,
                lambda: self.ready,
            )

        tier = self._remote_tier()
        if tier is None:
            published, record, seconds = build_here()
            return published, record, seconds, "built" if published else "waited"

        def publish_pulled(
            fill: Callable[[Path], None], **options: Any
        ) -> tuple[bool, dict[str, Any], float]:
            def run(staging: Path) -> None:
                fill(staging)

            return publish.build_and_publish(
                self.path, run, self.info, lambda: self.ready, **options
            )

        result = tier.get_or_build(build_here, publish_pulled, timeout)
        return result.published, result.record, result.seconds, result.outcome

    def _remote_tier(self) -> Any:
        """The remote tier of a path the resolver derived with ``hydra_cache.remote`` set."""
        spec = self._remote or (self.info.remote if self.info else None)
        if spec is None:
            return None
        from hydra_cache.store.remote.tier import RemoteTier

        try:
            expected = (
                {"digest": self.info.digest, "payload": self.info.payload} if self.info else None
            )
            return RemoteTier(
                spec,
                self.path,
                self.root,
                wait_log_interval=self.wait_log_interval,
                expected=expected,
            )
        except ValueError as error:  # not a <namespace>/<key> name: stays local
            log.debug("no remote for %s: %s", self.path, error)
            return None

    @property
    def visibility_patience(self) -> float:
        """How long to wait for a journaled publish to become visible (see VISIBILITY_PATIENCE)."""
        if self._visibility_patience is None:
            network = is_network_filesystem(self.path.parent)
            self._visibility_patience = VISIBILITY_PATIENCE if network else 0.0
        return self._visibility_patience

    def _run_build(
        self, build: Callable[[Path], object], staging: Path, audit: bool | None
    ) -> list[str] | None:
        """Run the build, recording its config reads when the audit is on."""
        info = self.info
        with wait.progress_log(self.path, self.wait_log_interval, self._last_build()):
            if not (audit if audit is not None else bool(info and info.audit)):
                build(staging)
                return None
            return registry.audited_build(str(self.path), build, staging)

    def _last_build(self) -> float | None:
        """How long the namespace's newest journaled build took (the estimate shown)."""
        return journal.last_build_seconds(self.root, self.path.parent.name)

    def _hit(self, *, after_wait: bool = False) -> bool:
        """The hit path: one ``lstat``; mark the entry in use (once per process); refresh the
        last-used mark at most once a minute."""
        try:
            status = os.lstat(self.metadata_path)
        except OSError:
            return False
        if not stat.S_ISREG(status.st_mode):
            return False
        if self.verify_on_hit and not self._intact():
            return False
        if not inuse.holds(self._key, status.st_ino) and not inuse.hold(self.path):
            return False  # moved away (gc) between the lstat and the lock: a miss
        now = time.time()
        if now - status.st_mtime > LAST_USED_RESOLUTION:
            # On a read-only shared cache this fails: the mark is only a hint for gc.
            with contextlib.suppress(OSError):
                os.utime(self.metadata_path, (now, now))
        self._note("waited" if after_wait else "hit")
        if after_wait:  # a job that waited for another's build reuses it: say what it missed
            warn_if_under_keyed(self.path, self.info.config_key if self.info else None)
        return True

    def _intact(self) -> bool:
        """The opt-in check on hit: files as recorded at publish, or the entry is moved aside."""
        from hydra_cache.store.verify import quarantine

        meta = metadata.read(self.path)
        if meta is None:
            return False
        problems = damage(self.path, meta.files, skip=METADATA_NAME, dirs_recorded=meta.format >= 2)
        if not problems:
            _rebuilt_after_damage.discard(self._key)
            return True
        if self._key in _rebuilt_after_damage:
            raise DamagedEntryError(
                f"{self.path} is damaged again right after it was rebuilt "
                f"({'; '.join(problems[:3])}): something keeps changing it; fix: find what "
                "writes into the entry (a build that keeps writing after it returns?), then "
                "run 'hydra-cache verify --repair'"
            )
        log.warning(
            "%s is damaged (%s); moving it aside and rebuilding", self.path, "; ".join(problems[:5])
        )
        inuse.release(self.path)  # our own shared lock would block the move
        with contextlib.suppress(FileNotFoundError):
            quarantine(self.root, self.path, problems)
        _rebuilt_after_damage.add(self._key)
        self._damaged_now = True
        return False

    def _note(self, action: Outcome, seconds: float | None = None, size: int | None = None) -> None:
        self.last_outcome = action
        registry.note_outcome(str(self.path), registry.Outcome(action, seconds, size))

    def _journal_publish(self, record: dict[str, Any]) -> None:
        root = Path(record["root"])
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
            journal.append(root, "publish", **{k: record[k] for k in keep})
            journal.remember_root(root, record.get("root_source") or "unknown")
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
        prefix = layout.staging_prefix(self.path)
        found: list[Leftover] = []
        try:
            scan = list(os.scandir(self.path.parent))
        except (FileNotFoundError, NotADirectoryError):
            return found
        now = time.time()
        for item in scan:
            if not item.name.startswith(prefix):
                continue
            name = layout.parse_staging(item.name)
            if name is None or name.key != self.path.name:
                continue
            try:
                seconds = age(item.stat(follow_symlinks=False).st_mtime, now)
            except OSError:
                continue
            alive = process_alive(name.host, name.pid, name.pidns)
            found.append(Leftover(item.name, name.host, name.pid, alive, seconds))
        return found

    def _remove_dead_staging(self) -> None:
        """Under the lock: staging folders of killed builders of this key on this host."""
        for item in self.leftovers():
            if item.alive is False:
                log.info("removing %s, left by a killed build (pid %d)", item.name, item.pid)
                remove_tree(self.path.parent / item.name)


def warn_if_under_keyed(path: Path, config_key: str | None = None) -> None:
    """Never a silent under-keyed reuse: an entry whose build read config values outside its
    key (its audit says which) is being reused by a run that may differ exactly there."""
    found = metadata.read(path)
    uncovered = [
        str(key) for key in ((found.raw.get("audit") or {}) if found else {}).get("uncovered") or []
    ]
    if not uncovered:
        return
    them = "them" if len(uncovered) > 1 else "it"
    holder = config_key or "the cache dir"
    # ${cache_dir:...} takes dotted keys: a list item is spelt a.1, not a[1].
    dotted = ",".join(re.sub(r"\[(\d+)\]", r".\1", key) for key in uncovered)
    log.warning(
        "%s reuses %s, whose build read %s outside its key: runs that differ only there share "
        "this entry; fix: hash %s too, e.g. %s: ${cache_dir:.,%s} (and take %s out of "
        "hydra_cache.exclude if listed there), or stop the build from reading %s",
        holder,
        path,
        ", ".join(uncovered),
        them,
        holder,
        dotted,
        them,
        them,
    )


def staging_creator(name: str) -> tuple[str, int] | None:
    """Host and pid of the builder of a staging folder (see :func:`layout.parse_staging`)."""
    parsed = layout.parse_staging(name)
    return None if parsed is None else (parsed.host, parsed.pid)
