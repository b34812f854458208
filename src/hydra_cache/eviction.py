"""``hydra-cache gc``: evict entries, least recently used first, and never one in use.

An entry is removed only while this process holds its lock (so no build of it is running), by
first renaming it out of place (readers then see a plain miss, never half an entry) and then
deleting it; each removal is journaled with its reason, so ``why`` can say "evicted by gc".
Symlinks are never followed.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hydra_cache import journal
from hydra_cache.entry import METADATA_NAME, CacheEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """A published entry under a root."""

    path: Path
    namespace: str
    key: str
    size_bytes: int
    last_used: float


def scan(root: Path, namespace: str | None = None) -> list[Found]:
    """Every published entry of a root (symlinked namespaces or entries are skipped)."""
    found: list[Found] = []
    try:
        spaces = [
            d
            for d in os.scandir(root)
            if not d.name.startswith(".") and d.is_dir(follow_symlinks=False)
        ]
    except (FileNotFoundError, NotADirectoryError):
        return found
    for space in spaces:
        if namespace is not None and space.name != namespace:
            continue
        for item in os.scandir(space.path):
            if item.name.startswith(".") or not item.is_dir(follow_symlinks=False):
                continue
            meta = CacheEntry(item.path).metadata()
            if meta is None:
                continue
            try:
                used = os.stat(os.path.join(item.path, METADATA_NAME)).st_mtime
            except OSError:
                continue
            found.append(
                Found(
                    Path(item.path), space.name, item.name, int(meta.get("size_bytes") or 0), used
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
    from filelock import FileLock, Timeout

    cache_entry = CacheEntry(entry.path)
    lock = FileLock(str(cache_entry.lock_path))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.info("gc: skipping %s: its lock is held", entry.path)
        return False
    try:
        if not cache_entry.ready:
            return False
        aside = entry.path.with_name(f".{entry.key}.evicting.{secrets.token_hex(4)}")
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
