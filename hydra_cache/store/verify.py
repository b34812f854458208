"""``hydra-cache verify``: find entries whose files changed since publish, and move them aside.

Verification races everything else that touches a root, so a problem found on a first pass is
only a suspicion: it is re-checked under the entry's build lock, and an entry that vanished
meanwhile was evicted (by ``gc``), not damaged. ``--repair`` moves a confirmed damaged entry
into ``<root>/.hydra-cache/damaged/`` (never deletes it), skips one a live process on this
host is reading, and carries on past any entry that moves under it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hydra_cache.store import inuse, journal, layout, metadata
from hydra_cache.store.eviction import Found, scan
from hydra_cache.store.integrity import damage
from hydra_cache.store.locking import EntryLock

log = logging.getLogger(__name__)

#: How long verify waits for an entry's build lock before it re-checks a suspicion.
RECHECK_LOCK_TIMEOUT = 10.0

Verdict = Literal["damaged", "evicted", "unconfirmed"]


@dataclass
class Finding:
    """One entry verify has something to say about."""

    path: Path
    verdict: Verdict
    problems: list[str] = field(default_factory=list)
    moved_to: Path | None = None
    note: str = ""


def quarantine(root: Path, path: Path, problems: list[str]) -> Path:
    """Move a damaged entry aside (never delete it) and journal why."""
    target = layout.damaged_path(root, path, time.strftime("%Y%m%dT%H%M%S"))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, target)
    try:
        journal.append(
            root,
            "delete",
            reason="verify",
            detail="; ".join(problems)[:2000],
            namespace=path.parent.name,
            key=path.name,
            path=str(path),
            moved_to=str(target),
        )
    except OSError as error:
        log.warning("moved %s to %s but could not journal it: %s", path, target, error)
    return target


def problems_of(path: Path) -> list[str] | None:
    """What is wrong with the entry at ``path`` now; None when it is no longer published."""
    meta = metadata.read(path)
    if meta is None:
        return None
    return damage(path, meta.files, skip=layout.METADATA_NAME, dirs_recorded=meta.format >= 2)


def check(root: Path, found: Found, *, repair: bool) -> Finding | None:
    """Verify one entry; re-check a suspicion under its lock; move it aside when asked."""
    first = problems_of(found.path)
    if not first:
        return None if first is not None else Finding(found.path, "evicted")
    lock = EntryLock(layout.lock_path(found.path), "auto", str(found.path))
    if not lock.acquire(RECHECK_LOCK_TIMEOUT):
        return Finding(found.path, "unconfirmed", first, note="its lock stayed held")
    try:
        problems = problems_of(found.path)
        if problems is None:
            return Finding(found.path, "evicted")
        if not problems:
            return None
        finding = Finding(found.path, "damaged", problems)
        if repair:
            held = inuse.exclusive(found.path)
            if held is None:
                finding.note = "in use by a process on this host: not moved"
                return finding
            try:
                finding.moved_to = quarantine(root, found.path, problems)
            except FileNotFoundError:
                return Finding(found.path, "evicted")
            finally:
                os.close(held)
        return finding
    finally:
        lock.release()


def verify(
    root: Path,
    namespace: str | None = None,
    *,
    repair: bool = False,
    progress: Callable[[], None] | None = None,
) -> list[Finding]:
    """Every finding under a root; never raises for one entry that moves or breaks.
    ``progress`` is called once per entry checked (for a progress bar)."""
    findings: list[Finding] = []
    for found in scan(root, namespace):
        if progress is not None:
            progress()
        try:
            finding = check(root, found, repair=repair)
        except OSError as error:
            if not os.path.lexists(found.path):
                finding = Finding(found.path, "evicted")
            else:
                finding = Finding(found.path, "unconfirmed", [f"cannot check: {error}"])
        if finding is not None:
            findings.append(finding)
    return findings
