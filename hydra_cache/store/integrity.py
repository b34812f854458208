"""What an entry held when it was published, and whether it still does.

At publish every file's size and content hash (SHA-256: with the SHA extensions most x86 and
ARM CPUs have, it runs about twice as fast as BLAKE2b, which entries published before kept and
are still checked with), every folder (empty ones included) and every symlink's target go
into the entry's metadata. ``hydra-cache verify``
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
#: Files per hashing task: small files share a task, large ones spread over the pool.
_BATCH_FILES = 32
#: The hash of new records; ``blake2b`` (128 bits) is still read from older ones.
ALGORITHM = "sha256"
_ALGORITHMS = ("sha256", "blake2b")
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


def _new_hash(algorithm: str) -> Any:
    return hashlib.blake2b(digest_size=16) if algorithm == "blake2b" else hashlib.sha256()


def _hash_file(path: str, flush: bool, buffer: bytearray, algorithm: str) -> dict[str, Any]:
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
        digest = _new_hash(algorithm)
        if status.st_size < len(buffer):  # the common small file: one read
            data = os.read(fd, len(buffer))
            digest.update(data)
            size = len(data)
            if size == len(buffer):  # it grew meanwhile: read the rest
                while more := os.read(fd, len(buffer)):
                    digest.update(more)
                    size += len(more)
        else:
            view = memoryview(buffer)
            size = 0
            while count := os.readv(fd, [buffer]):
                digest.update(view[:count])
                size += count
        if flush:
            os.fsync(fd)
        return {"size": size, algorithm: digest.hexdigest()}
    finally:
        os.close(fd)


def _hash_batch(paths: list[str], flush: bool, algorithm: str) -> list[dict[str, Any]]:
    buffer = bytearray(_CHUNK)
    return [_hash_file(path, flush, buffer, algorithm) for path in paths]


def _walk(folder: str, relative: str = "") -> Iterator[tuple[str, str, os.DirEntry[str]]]:
    """(relative name, full path, entry) of everything under ``folder``, never following links.

    Types come from the directory listing (no ``stat`` per file).
    """
    with os.scandir(folder) as items:
        found = sorted(items, key=lambda item: item.name)
    for item in found:
        name = f"{relative}{item.name}"
        yield name, item.path, item
        if item.is_dir(follow_symlinks=False):
            yield from _walk(item.path, name + "/")


def fingerprint(
    folder: Path,
    *,
    skip: str = "",
    flush: bool = False,
    strict: bool = False,
    pool: ThreadPoolExecutor | None = None,
    algorithm: str = ALGORITHM,
) -> dict[str, dict[str, Any]]:
    """Relative path -> record of everything under ``folder`` except the top-level ``skip``.

    Records: ``{"size", "sha256"}`` for a file, ``{"size": 0, "dir": True}`` for a folder,
    ``{"size": 0, "symlink": target}`` for a link (to a file or a folder). ``flush`` also
    fsyncs each file (in the pool). A special file is recorded as ``{"special": kind}``, or
    with ``strict`` raises :class:`SpecialFileError` naming it (a build must not publish one).
    """
    files: dict[str, dict[str, Any]] = {}
    batches: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for name, full, item in _walk(str(folder)):
        if name == skip:
            continue
        if item.is_symlink():
            files[name] = {"size": 0, "symlink": os.readlink(full)}
        elif item.is_dir(follow_symlinks=False):
            files[name] = {"size": 0, "dir": True}
        elif item.is_file(follow_symlinks=False):
            current.append((name, full))
            if len(current) >= _BATCH_FILES:
                batches.append(current)
                current = []
        else:
            mode = item.stat(follow_symlinks=False).st_mode
            _special(files, name, special_kind(mode) or "special file", folder, strict)
    if current:
        batches.append(current)

    def run(batch: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return _hash_batch([full for _name, full in batch], flush, algorithm)

    if len(batches) <= 1:
        results = [run(batch) for batch in batches]
    else:
        own = pool is None
        executor = pool or ThreadPoolExecutor(WORKERS, thread_name_prefix="hydra-cache-hash")
        try:
            results = list(executor.map(run, batches))
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
    algorithm = next(
        (a for record in recorded.values() for a in _ALGORITHMS if a in record), ALGORITHM
    )
    now = fingerprint(folder, skip=skip, algorithm=algorithm) if folder.is_dir() else {}
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
        elif algorithm in was and current.get(algorithm) != was[algorithm]:
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
