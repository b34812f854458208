"""``hydra-cache gc``: evict entries, least recently used first, and never one in use.

Only names of hydra-cache's own layout are ever touched (see :mod:`hydra_cache.store.layout`),
only under a folder that holds the root marker, and never through a symlink. An entry is
removed only while gc holds its build lock (no build of it runs) and an exclusive lock on the
entry folder (no process on this host uses it: see :mod:`hydra_cache.store.inuse`), and only
when it was not used within ``min_idle`` (the protection for readers on other hosts). It is
first renamed out of place (readers then see a plain miss, never half an entry), then deleted,
then journaled: on a full disk the space comes back before the journal needs any.

Leftovers are collected too: staging folders of builds that are over (never one whose entry
lock is held: that build is live, on any host or in any PID namespace; one started on another
host or in another PID namespace is *unknown* and waits ``FOREIGN_GRACE`` since its last
heartbeat, lock free), ``.evicting``/``.aside`` folders, locks of entries that are gone, and
``damaged/`` copies.

A dry run opens nothing for writing and takes no lock that writes a record: it probes locks
read-only, so the tree is byte-for-byte the same after it.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra_cache.store import inuse, journal, layout, metadata
from hydra_cache.store.liveness import age, process_alive
from hydra_cache.store.locking import EntryLock, probe
from hydra_cache.store.metadata import Metadata
from hydra_cache.store.remove import remove_tree

log = logging.getLogger(__name__)

#: Staging folders of builders on other hosts or in other PID namespaces (whose liveness
#: cannot be known from here) are collected only this long after their last heartbeat, and
#: only when their entry's lock is free.
FOREIGN_GRACE = 24 * 3600.0
#: Default for ``min_idle``: an entry used more recently may be in use on another host.
MIN_IDLE = 3600.0


@dataclass(frozen=True)
class Found:
    """A published entry under a root."""

    path: Path
    namespace: str
    key: str
    size_bytes: int
    last_used: float
    metadata: Metadata = field(compare=False, repr=False)


def namespaces(root: Path, only: str | None = None) -> list[os.DirEntry[str]]:
    """The namespace folders of a root (never hydra-cache's own, never a symlink)."""
    try:
        with os.scandir(root) as items:
            return [
                d
                for d in items
                if layout.is_namespace(d.name)
                and d.is_dir(follow_symlinks=False)
                and only in (None, d.name)
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def scan(root: Path, namespace: str | None = None) -> list[Found]:
    """Every published entry of a root (symlinked namespaces or entries are skipped)."""
    found: list[Found] = []
    for space in namespaces(root, namespace):
        try:
            with os.scandir(space.path) as items:
                names = [i for i in items if layout.is_key(i.name)]
        except OSError:
            continue
        for item in names:
            if not item.is_dir(follow_symlinks=False):
                continue
            meta = metadata.read(Path(item.path))
            if meta is None:
                continue
            found.append(
                Found(Path(item.path), space.name, item.name, meta.size_bytes, meta.last_used, meta)
            )
    return found


def plan(
    entries: list[Found],
    *,
    max_size: int | None = None,
    older_than: float | None = None,
    now: float | None = None,
) -> list[tuple[Found, str]]:
    """Candidates in the order to try: stale ones first, then least recently used first.

    Ages are distances from now (a future-dated entry is as old as it is far ahead). With
    ``max_size`` every other entry is a candidate too, in LRU order: :func:`collect` stops as
    soon as the root fits, so an entry in use costs the next one its place, not the target.
    """
    now = time.time() if now is None else now
    chosen: list[tuple[Found, str]] = []
    keep = sorted(entries, key=lambda e: -age(e.last_used, now))
    if older_than is not None:
        stale = [e for e in keep if age(e.last_used, now) > older_than]
        chosen += [(e, f"unused for more than {older_than:.0f}s") for e in stale]
        keep = [e for e in keep if e not in stale]
    if max_size is not None:
        chosen += [(e, f"least recently used (max size {max_size})") for e in keep]
    return chosen


@dataclass
class Row:
    """One thing gc removed, would remove, skipped or failed to remove."""

    path: str
    kind: str  # entry | leftover
    size_bytes: int
    reason: str
    outcome: str  # removed | would remove | skipped | failed
    detail: str = ""

    def as_dict(self, dry_run: bool) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "reason": self.reason,
            "outcome": self.outcome,
            "detail": self.detail,
            "removed": self.outcome in ("removed", "would remove"),
            "dry_run": dry_run,
        }


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    #: Bytes still under the root after gc, and the target it aimed at.
    remaining_bytes: int = 0
    max_size: int | None = None
    journal_errors: list[str] = field(default_factory=list)

    @property
    def target_missed(self) -> bool:
        return self.max_size is not None and self.remaining_bytes > self.max_size


def _skip_reason(found: Found, min_idle: float, now: float) -> str | None:
    """Why an entry must stay, judged without writing anything."""
    if probe(layout.lock_path(found.path)):
        return "its build lock is held"
    if inuse.in_use_here(found.path):
        return "in use by a process on this host"
    idle = age(found.last_used, now)
    if idle < min_idle:
        return (
            f"used {idle:.0f}s ago (< --min-idle {min_idle:.0f}s; it may be in use on another host)"
        )
    return None


def evict(
    found: Found,
    reason: str,
    root: Path,
    *,
    min_idle: float = 0.0,
    pending: list[Any] | None = None,
    by: str = "gc",
) -> tuple[bool, str]:
    """Remove one entry if nobody builds or uses it: (removed, why not / what failed).
    ``by`` (gc or rm) is the journal record's reason.

    The journal record is written after the space is freed; when that write fails it goes
    to ``pending`` (when given) for the caller to retry, else the error is logged.
    """
    lock = EntryLock(layout.lock_path(found.path), "auto", str(found.path))
    if not lock.acquire(0):
        return False, "its build lock is held"
    try:
        meta = metadata.read(found.path)
        if meta is None:
            return False, "gone already"
        idle = age(meta.last_used)
        if idle < min_idle:
            return False, f"used {idle:.0f}s ago (< --min-idle {min_idle:.0f}s)"
        held = inuse.exclusive(found.path)
        if held is None:
            return False, "in use by a process on this host"
        try:
            aside = layout.evicting_path(found.path)
            os.rename(found.path, aside)
        finally:
            os.close(held)
    finally:
        lock.release()
    problems = remove_tree(aside)
    record = {
        "reason": by,
        "detail": reason,
        "namespace": found.namespace,
        "key": found.key,
        "path": str(found.path),
        "size_bytes": found.size_bytes,
    }
    _journal(root, "delete", record, pending)
    if problems:
        return False, f"moved out of place to {aside.name} but not freed: {problems[0]}"
    return True, ""


def _journal(root: Path, event: str, record: dict[str, Any], pending: list[Any] | None) -> None:
    try:
        journal.append(root, event, **record)
    except OSError as error:
        if pending is None:
            log.warning("could not journal the removal of %s: %s", record.get("path"), error)
        else:
            pending.append((event, record, error))


@dataclass(frozen=True)
class Orphan:
    """A leftover gc may remove: a dead build's staging folder, a stale lock, a moved-aside
    copy, a damaged copy."""

    path: Path
    kind: str
    age_seconds: float


def orphans(
    root: Path,
    grace: float,
    namespace: str | None = None,
    *,
    foreign_grace: float = FOREIGN_GRACE,
    now: float | None = None,
) -> list[Orphan]:
    """Leftovers older than their grace whose owner is gone (never a live build's)."""
    now = time.time() if now is None else now
    found: list[Orphan] = []
    for space in namespaces(root, namespace):
        try:
            with os.scandir(space.path) as items:
                names = {item.name for item in items}
        except OSError:
            continue
        # Locks last: a lock goes only when nothing else of its key stays beside it.
        parsed_names = [(n, layout.parse(n)) for n in sorted(names)]
        ordered = [(n, p) for n, p in parsed_names if p is not None and p.kind != "entry"]
        ordered.sort(key=lambda item: item[1].kind == "lock")
        staying = set(names)
        for name, parsed in ordered:
            full = Path(space.path) / name
            try:
                seconds = age(os.lstat(full).st_mtime, now)
            except OSError:
                continue
            kind = _orphan_kind(
                parsed, staying, full, seconds=seconds, grace=grace, foreign_grace=foreign_grace
            )
            if kind:
                found.append(Orphan(full, kind, seconds))
                staying.discard(name)
    damaged = layout.damaged_dir(root)
    try:
        with os.scandir(damaged) as items:
            copies = [i.name for i in items if layout.is_damaged_copy(i.name)]
    except OSError:
        copies = []
    for name in sorted(copies):
        stamp = name.rsplit(".", 2)[-2]
        try:
            moved = time.mktime(time.strptime(stamp, "%Y%m%dT%H%M%S"))
        except ValueError:
            continue
        if age(moved, now) > grace:
            found.append(
                Orphan(damaged / name, "damaged copy moved aside by verify", age(moved, now))
            )
    return found


def _orphan_kind(
    name: layout.Name,
    siblings: set[str],
    full: Path,
    *,
    seconds: float,
    grace: float,
    foreign_grace: float,
) -> str | None:
    lock = layout.lock_path(full.with_name(name.key))
    if name.kind == "staging":
        if probe(lock):
            return None  # its build holds the lock: live, wherever it runs
        alive = process_alive(name.host, name.pid, name.pidns)
        if alive:
            return None
        if alive is None:
            if seconds <= foreign_grace:
                return None
            return "staging folder of a build on another host or PID namespace, silent for long"
        return "staging folder of a dead build" if seconds > grace else None
    if seconds <= grace:
        return None
    if name.kind in ("evicting", "aside"):
        return "moved-aside copy"
    if name.kind == "lock":
        others = any(
            (p := layout.parse(s)) is not None and p.key == name.key and p.kind != "lock"
            for s in siblings
        )
        if others or probe(full):
            return None
        try:
            regular = stat.S_ISREG(os.lstat(full).st_mode)
        except OSError:
            return None
        return "lock of an entry that is gone" if regular else None
    return None


def remove_orphan(root: Path, orphan: Orphan, pending: list[Any] | None = None) -> list[str] | None:
    """Remove a leftover without following links, journal it; return what failed (None: a
    lock that a builder took meanwhile, left alone)."""
    if orphan.path.name.endswith(layout.LOCK_SUFFIX):
        lock = EntryLock(orphan.path)
        if not lock.acquire(0):
            return None
        try:
            problems = remove_tree(orphan.path)
        finally:
            lock.release()
    else:
        problems = remove_tree(orphan.path)
    _journal(
        root,
        "cleanup",
        {"detail": orphan.kind, "path": str(orphan.path), "namespace": orphan.path.parent.name},
        pending,
    )
    return problems


def collect(
    root: Path,
    *,
    max_size: int | None = None,
    older_than: float | None = None,
    min_idle: float = MIN_IDLE,
    grace: float = 3600.0,
    foreign_grace: float = FOREIGN_GRACE,
    namespace: str | None = None,
    dry_run: bool = False,
    entries: list[Found] | None = None,
    progress: Callable[[], None] | None = None,
) -> Report:
    """Everything gc does, in order: free space (entries, then leftovers), then journal.

    A dry run writes nothing at all: it probes locks read-only and reports what would go.
    ``entries`` is a :func:`scan` the caller already made (to size a progress bar), and
    ``progress`` is called once per entry considered.
    """
    now = time.time()
    entries = scan(root, namespace) if entries is None else entries
    report = Report(max_size=max_size)
    total = sum(e.size_bytes for e in entries)
    pending: list[Any] = []
    for found, reason in plan(entries, max_size=max_size, older_than=older_than, now=now):
        if progress is not None:
            progress()
        stale = older_than is not None and age(found.last_used, now) > older_than
        if not stale and (max_size is None or total <= max_size):
            continue
        row = Row(str(found.path), "entry", found.size_bytes, reason, "would remove")
        if dry_run:
            why_not = _skip_reason(found, min_idle, now)
            if why_not:
                row.outcome, row.detail = "skipped", why_not
        else:
            removed, detail = evict(found, reason, root, min_idle=min_idle, pending=pending)
            row.outcome = "removed" if removed else "skipped"
            if detail.startswith("moved out of place"):
                row.outcome = "failed"
            row.detail = detail
        if row.outcome in ("removed", "would remove", "failed"):
            total -= found.size_bytes if row.outcome != "failed" else 0
        report.rows.append(row)
    report.remaining_bytes = total
    for orphan in orphans(root, grace, namespace, foreign_grace=foreign_grace, now=now):
        row = Row(
            str(orphan.path),
            "leftover",
            0,
            f"{orphan.kind}, {orphan.age_seconds:.0f}s old",
            "would remove",
        )
        if not dry_run:
            problems = remove_orphan(root, orphan, pending)
            if problems is None:
                row.outcome, row.detail = "skipped", "a build took its lock meanwhile"
            else:
                row.outcome = "failed" if problems else "removed"
                row.detail = problems[0] if problems else ""
        report.rows.append(row)
    for event, record, _error in pending:  # space is free now: try the journal again
        try:
            journal.append(root, event, **record)
        except OSError as error:
            report.journal_errors.append(f"{record.get('path')}: {error.strerror or error}")
    return report
