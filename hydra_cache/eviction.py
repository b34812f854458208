"""``hydra-cache gc``: evict entries, least recently used first, and never one in use.

An entry is removed only while this process holds its lock (so no build of it is running), by
first renaming it out of place (readers then see a plain miss, never half an entry) and then
deleting it; each removal is journaled with its reason, so ``why`` can say "evicted by gc".
Symlinks are never followed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra_cache import journal
from hydra_cache.entry import (
    LOCK_SUFFIX,
    METADATA_NAME,
    STAGING_INFIX,
    CacheEntry,
    staging_creator,
)
from hydra_cache.liveness import process_alive
from hydra_cache.locking import EntryLock, read_regular

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """A published entry under a root."""

    path: Path
    namespace: str
    key: str
    size_bytes: int
    last_used: float
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def namespaces(root: Path, only: str | None = None) -> list[os.DirEntry[str]]:
    """The namespace folders of a root (never hydra-cache's own, never a symlink)."""
    try:
        return [
            d
            for d in os.scandir(root)
            if not d.name.startswith(".")
            and d.is_dir(follow_symlinks=False)
            and only in (None, d.name)
        ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def scan(root: Path, namespace: str | None = None) -> list[Found]:
    """Every published entry of a root (symlinked namespaces or entries are skipped)."""
    found: list[Found] = []
    for space in namespaces(root, namespace):
        for item in os.scandir(space.path):
            if item.name.startswith(".") or not item.is_dir(follow_symlinks=False):
                continue
            read = read_regular(os.path.join(item.path, METADATA_NAME), 1 << 26)
            if read is None:
                continue
            try:
                meta = json.loads(read[0])
            except ValueError:
                continue
            if not isinstance(meta, dict):
                continue
            found.append(
                Found(
                    Path(item.path),
                    space.name,
                    item.name,
                    int(meta.get("size_bytes") or 0),
                    read[1].st_mtime,
                    meta,
                )
            )
    return found


def plan(
    entries: list[Found],
    *,
    max_size: int | None = None,
    older_than: float | None = None,
    now: float | None = None,
) -> list[tuple[Found, str]]:
    """Which entries to evict and why: stale ones first, then LRU until under ``max_size``."""
    now = time.time() if now is None else now
    chosen: list[tuple[Found, str]] = []
    keep = sorted(entries, key=lambda e: e.last_used)
    if older_than is not None:
        stale = [e for e in keep if now - e.last_used > older_than]
        chosen += [(e, f"unused for more than {older_than:.0f}s") for e in stale]
        keep = [e for e in keep if e not in stale]
    if max_size is not None:
        total = sum(e.size_bytes for e in keep)
        for entry in keep:
            if total <= max_size:
                break
            chosen.append(
                (
                    entry,
                    f"least recently used while the root held {total} bytes > max size {max_size}",
                )
            )
            total -= entry.size_bytes
    return chosen


def evict(entry: Found, reason: str, root: Path) -> bool:
    """Remove one entry if nobody is building it; journal the removal. False if skipped."""
    cache_entry = CacheEntry(entry.path)
    lock = EntryLock(cache_entry.lock_path, cache_entry.lock_mode, str(entry.path))
    if not lock.acquire(0):
        log.info("gc: skipping %s: its lock is held", entry.path)
        return False
    try:
        if not cache_entry.ready or any(item.alive for item in cache_entry.leftovers()):
            return False
        aside = entry.path.with_name(f".{entry.key}.evicting.{os.urandom(4).hex()}")
        os.rename(entry.path, aside)
        journal.append(
            root,
            "delete",
            reason="gc",
            detail=reason,
            namespace=entry.namespace,
            key=entry.key,
            path=str(entry.path),
            size_bytes=entry.size_bytes,
        )
        shutil.rmtree(aside, ignore_errors=True)
        return True
    finally:
        lock.release()


@dataclass(frozen=True)
class Orphan:
    """A leftover gc may remove: a dead build's staging folder, a stale lock, a moved-aside copy."""

    path: Path
    kind: str
    age_seconds: float


def orphans(root: Path, grace: float, namespace: str | None = None) -> list[Orphan]:
    """Leftovers older than ``grace`` whose owner is gone (never a live build's)."""
    now = time.time()
    found: list[Orphan] = []
    for space in namespaces(root, namespace):
        names = {item.name for item in os.scandir(space.path)}
        for name in sorted(names):
            if not name.startswith(".") and not (
                name.endswith(LOCK_SUFFIX) and name[: -len(LOCK_SUFFIX)] not in names
            ):
                continue  # an entry, or the lock of one: never a leftover
            full = os.path.join(space.path, name)
            try:
                age = now - os.lstat(full).st_mtime
            except OSError:
                continue
            if age <= grace:
                continue
            kind = _orphan_kind(name, names, Path(full))
            if kind:
                found.append(Orphan(Path(full), kind, age))
    return found


def _orphan_kind(name: str, siblings: set[str], full: Path) -> str | None:
    if STAGING_INFIX in name and name.startswith("."):
        creator = staging_creator(name)
        alive = process_alive(*creator) if creator else None
        return None if alive else "staging folder of a dead build"
    if name.startswith(".") and (".aside." in name or ".evicting." in name):
        return "moved-aside copy"
    if name.endswith(LOCK_SUFFIX) and name[: -len(LOCK_SUFFIX)] not in siblings:
        return None if EntryLock(full).held_elsewhere() else "lock of an entry that is gone"
    return None


def remove_orphan(root: Path, orphan: Orphan) -> None:
    """Remove a leftover without following links, and journal it."""
    if orphan.path.is_symlink() or not orphan.path.is_dir():
        orphan.path.unlink(missing_ok=True)
    else:
        shutil.rmtree(orphan.path, ignore_errors=True)
    journal.append(
        root,
        "cleanup",
        detail=orphan.kind,
        path=str(orphan.path),
        namespace=orphan.path.parent.name,
    )
