"""What an entry held when it was published, and whether it still does.

At publish every file's size and content hash (SHA-256: with the SHA extensions most x86 and
ARM CPUs have, it runs about twice as fast as BLAKE2b, which entries published before kept and
are still checked with), every folder (empty ones included) and every symlink's target go
into the entry's metadata. ``hydra-cache verify``
and ``CacheEntry(..., verify_on_hit=True)`` compare against that record.

Files are opened ``O_NONBLOCK | O_NOFOLLOW`` and checked with ``fstat`` before a byte is read,
so a FIFO, socket or device inside an entry is named as such instead of hanging the reader
(a blocking ``open()`` on a FIFO waits forever for a writer). Large files are hashed on a
thread pool (hashing and reading them release the GIL); small ones are hashed by the calling
thread meanwhile, because their cost is Python overhead that threads only fight over. With a
flush per file (an fsync, which waits on the disk) all files go to the pool in batches.
"""

from __future__ import annotations

import contextlib
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


#: A file at least this large is hashed on the pool (hashing and reading it release the GIL);
#: a smaller one costs mostly Python and system-call overhead, which threads fighting over
#: the GIL only slow down, so it is hashed at once by the thread that found it.
_POOL_MIN_BYTES = 256 * 1024
#: Stands for "hash this one on the pool" in :func:`_hash_file`'s answer.
_LARGE: dict[str, Any] = {}


def _hash_file(
    path: str, flush: bool, buffer: bytearray, algorithm: str, *, defer_large: bool = False
) -> dict[str, Any]:
    """Size and hash of one regular file, read without following links or blocking
    (:data:`_LARGE` instead, with ``defer_large``, for a file worth a pool thread)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        return {"error": os.strerror(error.errno or 0) or str(error)}
    try:
        status = os.fstat(fd)
        kind = special_kind(status.st_mode)
        if kind is not None or not stat.S_ISREG(status.st_mode):
            return {"special": kind or "not a regular file"}
        if defer_large and status.st_size >= _POOL_MIN_BYTES:
            return _LARGE
        digest = _new_hash(algorithm)
        if status.st_size < len(buffer):  # the common small file: one read of its size
            # (asking for the whole buffer's size would allocate 1 MiB per file: on 1 KiB files
            # that allocation costs more than the open, read and hash together)
            want = status.st_size + 1
            data = os.read(fd, want)
            digest.update(data)
            size = len(data)
            if size == want:  # it grew meanwhile: read the rest
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


def _hash_found(
    found: list[tuple[str, str]], flush: bool, algorithm: str, pool: ThreadPoolExecutor | None
) -> list[dict[str, Any]]:
    """One record per file, in order.

    With ``flush`` (one fsync per file, which waits on the disk) files go to the pool in
    batches. Without, small files are hashed right here and only large ones go to the pool,
    where they overlap with the small ones.
    """
    if flush:
        batches = [found[i : i + _BATCH_FILES] for i in range(0, len(found), _BATCH_FILES)]
        if len(batches) <= 1:
            return [
                r for batch in batches for r in _hash_batch([f for _n, f in batch], True, algorithm)
            ]
        with _executor(pool) as executor:
            done = executor.map(lambda b: _hash_batch([f for _n, f in b], True, algorithm), batches)
            return [record for records in done for record in records]
    buffer = bytearray(_CHUNK)
    records: list[Any] = []
    large: list[int] = []
    with _executor(pool, lazy=True) as executor:
        for index, (_name, full) in enumerate(found):
            record = _hash_file(full, False, buffer, algorithm, defer_large=True)
            if record is _LARGE:
                large.append(index)
                record = executor().submit(_hash_batch, [full], False, algorithm)
            records.append(record)
        for index in large:
            records[index] = records[index].result()[0]
    return records


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
    found: list[tuple[str, str]] = []
    for name, full, item in _walk(str(folder)):
        if name == skip:
            continue
        if item.is_symlink():
            files[name] = {"size": 0, "symlink": os.readlink(full)}
        elif item.is_dir(follow_symlinks=False):
            files[name] = {"size": 0, "dir": True}
        elif item.is_file(follow_symlinks=False):
            found.append((name, full))
        else:
            mode = item.stat(follow_symlinks=False).st_mode
            _special(files, name, special_kind(mode) or "special file", folder, strict)
    for (name, _full), record in zip(found, _hash_found(found, flush, algorithm, pool)):
        if "special" in record:
            _special(files, name, record["special"], folder, strict)
        elif "error" in record and strict:
            raise OSError(f"cannot read {folder / name}: {record['error']}")
        else:
            files[name] = record
    return files


@contextlib.contextmanager
def _executor(pool: ThreadPoolExecutor | None, *, lazy: bool = False) -> Iterator[Any]:
    """The caller's pool, or one of our own shut down afterwards; ``lazy`` yields a function
    that makes it on first use (most verifies of small files never need it)."""
    made: list[ThreadPoolExecutor] = []

    def get() -> ThreadPoolExecutor:
        if pool is not None:
            return pool
        if not made:
            made.append(ThreadPoolExecutor(WORKERS, thread_name_prefix="hydra-cache-hash"))
        return made[0]

    try:
        yield get if lazy else get()
    finally:
        for executor in made:
            executor.shutdown()


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
