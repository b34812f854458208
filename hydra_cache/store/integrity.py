"""What an entry held when it was published, and whether it still does.

At publish every file's size and a fast content hash (BLAKE2b, 128 bits), every folder (empty
ones included) and every symlink's target go into the entry's metadata. ``hydra-cache verify``
and ``CacheEntry(..., verify_on_hit=True)`` compare against that record.

Files are opened ``O_NONBLOCK | O_NOFOLLOW`` and checked with ``fstat`` before a byte is read,
so a FIFO, socket or device inside an entry is named as such instead of hanging the reader
(a blocking ``open()`` on a FIFO waits forever for a writer). Hashing runs on a thread pool in
batches: BLAKE2b releases the GIL on large buffers, and per-file work on small files is
dominated by system calls, which overlap too.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hydra_cache.errors import HydraCacheError

_CHUNK = 1 << 20
#: A hashing task holds at most this many files or bytes, so small files share a task.
_BATCH_FILES = 256
_BATCH_BYTES = 64 << 20
WORKERS = max(2, min(8, (os.cpu_count() or 1) + 2))


class SpecialFileError(HydraCacheError, OSError):
    """A build left a FIFO, socket or device file: it cannot be cached or verified safely."""


def special_kind(mode: int) -> str | None:
    """``FIFO``, ``socket`` or ``device file`` for a special file's mode, else None."""
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return None


def _hash_file(path: str, flush: bool, buffer: bytearray) -> dict[str, Any]:
    """Size and hash of one regular file, read without following links or blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        return {"error": os.strerror(error.errno or 0) or str(error)}
    try:
        status = os.fstat(fd)
        kind = special_kind(status.st_mode)
        if kind is not None or not stat.S_ISREG(status.st_mode):
            return {"special": kind or "not a regular file"}
        digest = hashlib.blake2b(digest_size=16)
        view = memoryview(buffer)
        size = 0
        while count := os.readv(fd, [buffer]):
            digest.update(view[:count])
            size += count
        if flush:
            os.fsync(fd)
        return {"size": size, "blake2b": digest.hexdigest()}
    finally:
        os.close(fd)


def _hash_batch(paths: list[str], flush: bool) -> list[dict[str, Any]]:
    buffer = bytearray(_CHUNK)
    return [_hash_file(path, flush, buffer) for path in paths]


def _walk(folder: str, relative: str = "") -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative name, full path, lstat) of everything under ``folder``, never following links."""
    with os.scandir(folder) as items:
        found = sorted(items, key=lambda item: item.name)
    for item in found:
        name = f"{relative}{item.name}"
        status = item.stat(follow_symlinks=False)
        yield name, item.path, status
        if stat.S_ISDIR(status.st_mode):
            yield from _walk(item.path, name + "/")


def fingerprint(
    folder: Path,
    *,
    skip: str = "",
    flush: bool = False,
    strict: bool = False,
    pool: ThreadPoolExecutor | None = None,
) -> dict[str, dict[str, Any]]:
    """Relative path -> record of everything under ``folder`` except the top-level ``skip``.

    Records: ``{"size", "blake2b"}`` for a file, ``{"size": 0, "dir": True}`` for a folder,
    ``{"size": 0, "symlink": target}`` for a link (to a file or a folder). ``flush`` also
    fsyncs each file (in the pool). A special file is recorded as ``{"special": kind}``, or
    with ``strict`` raises :class:`SpecialFileError` naming it (a build must not publish one).
    """
    files: dict[str, dict[str, Any]] = {}
    batches: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    current_bytes = 0
    for name, full, status in _walk(str(folder)):
        if name == skip:
            continue
        mode = status.st_mode
        if stat.S_ISLNK(mode):
            files[name] = {"size": 0, "symlink": os.readlink(full)}
        elif stat.S_ISDIR(mode):
            files[name] = {"size": 0, "dir": True}
        elif stat.S_ISREG(mode):
            current.append((name, full))
            current_bytes += status.st_size
            if len(current) >= _BATCH_FILES or current_bytes >= _BATCH_BYTES:
                batches.append(current)
                current, current_bytes = [], 0
        else:
            _special(files, name, special_kind(mode) or "special file", folder, strict)
    if current:
        batches.append(current)
    if len(batches) <= 1:
        results = [_hash_batch([full for _n, full in batch], flush) for batch in batches]
    else:
        own = pool is None
        executor = pool or ThreadPoolExecutor(WORKERS, thread_name_prefix="hydra-cache-hash")
        try:
            results = list(
                executor.map(
                    lambda batch: _hash_batch([full for _n, full in batch], flush), batches
                )
            )
        finally:
            if own:
                executor.shutdown()
    for batch, records in zip(batches, results):
        for (name, _full), record in zip(batch, records):
            if "special" in record:
                _special(files, name, record["special"], folder, strict)
            elif "error" in record and strict:
                raise OSError(f"cannot read {folder / name}: {record['error']}")
            else:
                files[name] = record
    return files


def _special(
    files: dict[str, dict[str, Any]], name: str, kind: str, folder: Path, strict: bool
) -> None:
    if strict:
        raise SpecialFileError(
            f"{folder / name} is a {kind}: a cache entry may hold only files, folders and "
            "symlinks; fix: have the build write a regular file there (or nothing)"
        )
    files[name] = {"size": 0, "special": kind}


def damage(
    folder: Path,
    recorded: dict[str, dict[str, Any]],
    *,
    skip: str = "",
    dirs_recorded: bool = True,
) -> list[str]:
    """How the files under ``folder`` differ from ``recorded``; empty when intact.

    ``dirs_recorded`` is False for entries published before folders were recorded.
    """
    found: list[str] = []
    now = fingerprint(folder, skip=skip) if folder.is_dir() else {}
    if not dirs_recorded:
        now = {name: record for name, record in now.items() if not record.get("dir")}
    for name, was in sorted(recorded.items()):
        current = now.get(name)
        if current is None:
            found.append(f"{name}: removed")
        elif "special" in current:
            found.append(f"{name}: a {current['special']} where the entry had a file")
        elif "error" in current:
            found.append(f"{name}: unreadable ({current['error']})")
        elif bool(was.get("dir")) != bool(current.get("dir")) or ("symlink" in was) != (
            "symlink" in current
        ):
            found.append(f"{name}: changed type")
        elif current["size"] != was.get("size"):
            how = "truncated" if current["size"] < was.get("size", 0) else "grown"
            found.append(f"{name}: {how} ({was.get('size')} -> {current['size']} bytes)")
        elif "blake2b" in was and current.get("blake2b") != was["blake2b"]:
            found.append(f"{name}: content changed")
        elif "symlink" in was and current.get("symlink") != was["symlink"]:
            found.append(f"{name}: symlink target changed")
    for name in sorted(now.keys() - recorded):
        special = now[name].get("special")
        found.append(
            f"{name}: a {special} planted in the entry"
            if special
            else f"{name}: not in the entry's record"
        )
    return found
