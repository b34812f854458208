"""The journal of a cache root, and the list of roots this user has used.

``<root>/.hydra-cache/journal.jsonl`` records each publish and each deletion hydra-cache makes,
one JSON object a line, appended under a lock. It is what lets ``why`` tell "deleted outside
hydra-cache" from "evicted by gc" from "never built". Hits are not journaled (that would write
on every run); an entry's last use is the modification time of its metadata file instead.

``$XDG_STATE_HOME/hydra-cache/roots.json`` lists the roots this user has published into, so a
miss under one root can be found ready under another ("the root moved").
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra_cache.liveness import hostname, iso_time

log = logging.getLogger(__name__)

STATE_DIR_NAME = ".hydra-cache"
JOURNAL_NAME = "journal.jsonl"


def state_dir(root: Path) -> Path:
    """hydra-cache's own folder inside a root (never an entry namespace: it starts with a dot)."""
    return root / STATE_DIR_NAME


def append(root: Path, event: str, **fields: Any) -> None:
    """Append one record to the root's journal, under the journal's lock."""
    from filelock import FileLock

    record = {
        "time": iso_time(time.time()),
        "unix": round(time.time(), 6),
        "event": event,
        "host": hostname(),
        "pid": os.getpid(),
        **fields,
    }
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    folder = state_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    with (
        FileLock(str(folder / (JOURNAL_NAME + ".lock"))),
        open(folder / JOURNAL_NAME, "a", encoding="utf-8") as handle,
    ):
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def records(root: Path) -> Iterator[dict[str, Any]]:
    """Every record of the root's journal, oldest first (a torn last line is skipped)."""
    path = state_dir(root) / JOURNAL_NAME
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def history(root: Path, namespace: str, key: str) -> list[dict[str, Any]]:
    """The journal records of one entry."""
    return [r for r in records(root) if r.get("namespace") == namespace and r.get("key") == key]


def recent_publish(
    root: Path, namespace: str, key: str, *, within: float, tail_bytes: int = 1 << 18
) -> dict[str, Any] | None:
    """The newest publish of an entry in the journal's tail, if recent and not deleted since.

    Reads only the end of the journal: a publish that matters here happened moments ago.
    """
    path = state_dir(root) / JOURNAL_NAME
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - tail_bytes))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("namespace") != namespace or record.get("key") != key:
            continue
        if record.get("event") != "publish":
            return None
        return record if time.time() - float(record.get("unix", 0)) <= within else None
    return None


def roots_file() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "hydra-cache" / "roots.json"


_remembered: set[str] = set()


def remember_root(root: Path, source: str) -> None:
    """Add a root to the user's list once per process (it is read by ``why``)."""
    if str(root) in _remembered:
        return
    _remembered.add(str(root))
    from filelock import FileLock

    target = roots_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            roots = known_roots()
            entry = roots.setdefault(str(root), {"first_used": iso_time(time.time())})
            entry.update(last_used=iso_time(time.time()), source=source)
            temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(roots, indent=1, sort_keys=True))
            os.replace(temporary, target)
    except OSError as error:  # the list is a convenience: never fail a build over it
        log.debug("could not record root %s in %s: %s", root, target, error)


def known_roots() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(roots_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
