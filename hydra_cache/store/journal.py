"""The journal of a cache root, and the list of roots this user has used.

``<root>/.hydra-cache/journal.jsonl`` records each publish and each deletion hydra-cache makes,
one JSON object a line, appended under a lock. It is what lets ``why`` tell "deleted outside
hydra-cache" from "evicted by gc" from "never built". Hits are not journaled (that would write
on every run); an entry's last use is the modification time of its metadata file instead.

The journal is a file others can reach, so it is opened ``O_NOFOLLOW | O_NONBLOCK`` and must be
a regular file: a planted symlink or FIFO is refused, never appended to or waited on. A line
cut short (a full disk, a SIGKILL mid-append) is cut off before the next append, so later
records are never glued to it. Lines are bounded (large fields are replaced by their digest;
the entry's metadata keeps the full text) and so is the file: past ``MAX_BYTES`` it is rotated
to ``journal.1.jsonl``, which readers still read.

``$XDG_STATE_HOME/hydra-cache/roots.json`` lists the roots this user has published into, so a
miss under one root can be found ready under another ("the root moved").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra_cache.errors import UnsafePathError
from hydra_cache.store import layout
from hydra_cache.store.atomic import atomic_write
from hydra_cache.store.liveness import hostname, iso_time

log = logging.getLogger(__name__)

STATE_DIR_NAME = layout.STATE_DIR_NAME
JOURNAL_NAME = layout.JOURNAL_NAME
#: Longest journal line; a record over it keeps its small fields and the digests of the others.
MAX_LINE = 16 << 10
#: Past this size the journal is rotated (one previous generation is kept).
MAX_BYTES = 64 << 20


def state_dir(root: Path) -> Path:
    """hydra-cache's own folder inside a root (never an entry namespace: it starts with a dot)."""
    return layout.state_dir(root)


def _bounded_line(record: dict[str, Any]) -> bytes:
    line = json.dumps(record, sort_keys=True, default=str)
    if len(line) < MAX_LINE:
        return (line + "\n").encode()
    for name in sorted(record, key=lambda k: -len(json.dumps(record[k], default=str))):
        text = json.dumps(record[name], sort_keys=True, default=str)
        if len(text) > 256:
            record[name] = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "see": "metadata"}
        line = json.dumps(record, sort_keys=True, default=str)
        if len(line) < MAX_LINE:
            break
    if len(line) >= MAX_LINE:  # still too long: keep only what identifies the record
        keep = ("time", "unix", "event", "host", "pid", "namespace", "key", "reason", "path")
        line = json.dumps({k: record[k] for k in keep if k in record}, default=str)[:MAX_LINE]
    return (line + "\n").encode()


def _open_journal(path: Path, flags: int) -> int:
    """Open the journal without following a link or blocking on a FIFO; regular files only."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as error:
        if os.path.islink(path):
            raise UnsafePathError(
                f"{path} is a symlink where hydra-cache expects its journal: refusing to use it "
                "(it may have been planted); fix: remove it if you did not create it"
            ) from error
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(
            f"{path} is not a regular file where hydra-cache expects its journal: refusing to "
            "use it; fix: remove it if you did not create it"
        )
    return fd


def _repair_tail(fd: int) -> None:
    """Cut a torn last line (no newline at the end) back to the last whole record."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    window = min(size, 2 * MAX_LINE)
    tail = os.pread(fd, window, size - window)
    cut = tail.rfind(b"\n")
    if cut >= 0:
        os.ftruncate(fd, size - window + cut + 1)
    elif window == size:
        os.ftruncate(fd, 0)
    else:  # longer than any line we write: terminate it so the next record stands alone
        os.write(fd, b"\n")
    log.warning("repaired a torn record at the end of the journal (a full disk or a kill)")


def append(root: Path, event: str, **fields: Any) -> None:
    """Append one record to the root's journal, under the journal's lock."""
    from filelock import FileLock

    now = time.time()
    record = {
        "time": iso_time(now),
        "unix": round(now, 6),
        "event": event,
        "host": hostname(),
        "pid": os.getpid(),
        **fields,
    }
    line = _bounded_line(record)
    folder = layout.state_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = layout.journal_path(root)
    with FileLock(str(layout.journal_lock_path(root))):
        fd = _open_journal(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            _repair_tail(fd)
            if os.fstat(fd).st_size + len(line) > MAX_BYTES:
                os.replace(path, layout.rotated_journal_path(root))
                os.close(fd)
                fd = _open_journal(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            view = memoryview(line)
            written = 0
            try:
                while written < len(line):
                    written += os.write(fd, view[written:])
            except OSError:
                if written:  # cut our own half line off now, while we hold the lock
                    _repair_tail(fd)
                raise
            os.fsync(fd)
        finally:
            os.close(fd)


def _lines(path: Path) -> Iterator[bytes]:
    try:
        fd = _open_journal(path, os.O_RDONLY)
    except (OSError, UnsafePathError):
        return
    with os.fdopen(fd, "rb") as handle:
        yield from handle


def records(root: Path) -> Iterator[dict[str, Any]]:
    """Every record of the root's journal, oldest first (a torn line is skipped)."""
    for path in (layout.rotated_journal_path(root), layout.journal_path(root)):
        for line in _lines(path):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def history(root: Path, namespace: str, key: str) -> list[dict[str, Any]]:
    """The journal records of one entry."""
    return [r for r in records(root) if r.get("namespace") == namespace and r.get("key") == key]


def _tail(root: Path, tail_bytes: int) -> list[dict[str, Any]]:
    """The records at the journal's end, newest first (unreadable lines skipped): what the
    questions about a build that just happened need, without reading the whole journal."""
    try:
        fd = _open_journal(layout.journal_path(root), os.O_RDONLY)
    except (OSError, UnsafePathError):
        return []
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - tail_bytes)
        lines = os.pread(fd, size - start, start).decode("utf-8", "replace").splitlines()
    finally:
        os.close(fd)
    records = []
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def recent_publish(
    root: Path, namespace: str, key: str, *, within: float, tail_bytes: int = 1 << 18
) -> dict[str, Any] | None:
    """The newest publish of an entry in the journal's tail, if recent and not deleted since.

    Reads only the end of the journal: a publish that matters here happened moments ago.
    """
    for record in _tail(root, tail_bytes):
        if record.get("namespace") != namespace or record.get("key") != key:
            continue
        if record.get("event") != "publish":
            return None
        return record if abs(time.time() - float(record.get("unix", 0))) <= within else None
    return None


def last_build_seconds(root: Path, namespace: str, *, tail_bytes: int = 1 << 18) -> float | None:
    """How long the newest journaled build of ``namespace`` took: the estimate a builder and
    its waiters show while a build runs. Reads only the journal's tail."""
    for record in _tail(root, tail_bytes):
        if record.get("event") == "publish" and record.get("namespace") == namespace:
            seconds = record.get("build_seconds")
            return float(seconds) if isinstance(seconds, (int, float)) else None
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
            atomic_write(target, json.dumps(roots, indent=1, sort_keys=True).encode())
    except OSError as error:  # the list is a convenience: never fail a build over it
        log.debug("could not record root %s in %s: %s", root, target, error)


def known_roots() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(roots_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
