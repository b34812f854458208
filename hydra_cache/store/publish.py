"""Build into a private staging folder, make it durable, and rename it into place.

The staging folder ``.<key>.staging.<host>.<pidns>.<pid>.<token>`` sits beside the entry (same
filesystem, so the publish is one ``rename``) and is owned by one build. While the build runs
a heartbeat thread refreshes the folder's modification time, so ``gc`` measures a builder's age
from its last sign of life, not from when it last created a top-level file.

Durability without one blocking ``fsync`` per file in sequence: files are hashed for the
integrity record on a thread pool, and where the kernel has ``syncfs`` one call flushes the
whole filesystem while the hashing runs (``syncfs`` waits for every dirty page of the
filesystem, which is what a per-file ``fsync`` loop achieves one file at a time). Elsewhere
each pool task fsyncs the files it hashed. Then the metadata file is written and flushed, and
the folder renamed into place and its parent flushed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hydra_cache.errors import NotAnEntryError
from hydra_cache.store import integrity, layout, metadata
from hydra_cache.store.atomic import fsync_path
from hydra_cache.store.liveness import every, hostname, iso_time
from hydra_cache.store.remove import remove_tree

log = logging.getLogger(__name__)

#: How often a running build refreshes its staging folder's modification time.
HEARTBEAT_INTERVAL = 30.0
#: Below this many files, fsyncing each (in the pool) costs less than flushing the filesystem.
SYNCFS_MIN_FILES = 64


def not_an_entry(path: Path, what: str) -> NotAnEntryError:
    return NotAnEntryError(
        f"{path} {what}, not a hydra-cache entry (it has no {layout.METADATA_NAME}): refusing "
        "to replace or remove it; fix: move it away, or give the cache entry another path"
    )


def clear_path(path: Path) -> bool:
    """Under the lock, before a build: the path must be free or an empty folder (removed).

    False when a published entry is there (another publisher won while the lock did nothing:
    the caller takes it as a hit). Anything else there was not made by hydra-cache as an
    entry (a user's folder, a file, a planted link), so it is refused by name and left
    exactly as it is.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True
    if os.path.isdir(path) and not os.path.islink(path):
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(layout.metadata_path(path)).st_mode):
                return False
        try:
            os.rmdir(path)  # only ever succeeds on an empty folder
            return True
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        raise not_an_entry(path, "is a folder that holds files")
    what = "is a symlink" if os.path.islink(path) else f"is a file (mode {mode:o})"
    raise not_an_entry(path, what)


@contextlib.contextmanager
def heartbeat(staging: Path, interval: float = HEARTBEAT_INTERVAL) -> Iterator[None]:
    """Refresh the staging folder's mtime every ``interval`` seconds until the block ends."""

    def beat() -> bool:
        try:
            os.utime(staging)
        except OSError:
            return False
        return True

    with every(interval, beat, "hydra-cache-heartbeat"):
        yield


def _syncfs_function() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return function


_SYNCFS = _syncfs_function()


def syncfs(folder: Path) -> None:
    """Flush every dirty page and inode of the filesystem holding ``folder``."""
    assert _SYNCFS is not None
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if _SYNCFS(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}", str(folder))
    finally:
        os.close(fd)


def count_files(folder: Path, limit: int) -> int:
    """How many names the tree holds, counting no further than ``limit``."""
    seen = 0
    for _top, dirs, files in os.walk(folder):
        seen += len(dirs) + len(files)
        if seen >= limit:
            break
    return seen


def seal(staging: Path) -> dict[str, dict[str, Any]]:
    """Record and flush every file of a finished build; refuse special files by name."""
    use_syncfs = _SYNCFS is not None and count_files(staging, SYNCFS_MIN_FILES) >= SYNCFS_MIN_FILES
    failure: list[BaseException] = []

    def flush_all() -> None:
        try:
            syncfs(staging)
        except BaseException as error:  # re-raised in the building thread
            failure.append(error)

    flusher = threading.Thread(target=flush_all, name="hydra-cache-syncfs", daemon=True)
    if use_syncfs:
        flusher.start()
    try:
        with ThreadPoolExecutor(integrity.WORKERS, thread_name_prefix="hydra-cache-seal") as pool:
            files = integrity.fingerprint(
                staging,
                skip=layout.METADATA_NAME,
                flush=not use_syncfs,
                strict=True,
                pool=pool,
            )
    finally:
        if use_syncfs:
            flusher.join()
    if failure:
        raise failure[0]
    if not use_syncfs:
        for name, record in files.items():
            if record.get("dir"):
                fsync_path(staging / name)
    return files


def write_metadata(
    staging: Path,
    path: Path,
    files: dict[str, dict[str, Any]],
    info: Any,
    *,
    started_at: float,
    seconds: float,
    uncovered: list[str] | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from hydra_cache import __version__

    record: dict[str, Any] = {
        "format": metadata.FORMAT,
        "hydra_cache_version": __version__,
        "path": str(path),
        "namespace": info.namespace if info else path.parent.name,
        "key": path.name,
        "digest": info.digest if info else None,
        "config_key": info.config_key if info else None,
        "payload": info.payload if info else None,
        "root": info.root if info else str(path.parent.parent),
        "root_source": info.root_source if info else None,
        "run_dir": info.run_dir if info else None,
        "host": hostname(),
        "pid": os.getpid(),
        "pidns": layout.pid_namespace(),
        "staging": staging.name,
        "created": iso_time(started_at),
        "published": iso_time(time.time()),
        "build_seconds": round(seconds, 6),
        "size_bytes": sum(int(f.get("size", 0)) for f in files.values()),
        "files": files,
        "inputs": info.inputs if info else None,
        "upstreams": list(info.upstreams) if info else [],
        "project": info.project if info else None,
        "audit": None if uncovered is None else {"uncovered": uncovered},
        **(extra or {}),
    }
    metadata.write(staging, record)
    return record


def rename_into_place(staging: Path, path: Path, ready: Callable[[], bool]) -> bool:
    """Publish with one rename; False when another publisher won (their copy is kept).

    A path taken by something that is not an entry is refused, never moved aside.
    """
    try:
        os.rename(staging, path)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            if ready():
                log.warning(
                    "%s was published by another process while this one built it "
                    "(is the lock working on this filesystem?); keeping that copy",
                    path,
                )
                remove_tree(staging)
                return False
            raise not_an_entry(path, "appeared while building: it is something") from None
        if error.errno == errno.ENOENT and not staging.exists():
            # The rename reported failure after it took effect (an NFS retry).
            meta = metadata.read(path)
            if meta is not None and meta.get("staging") == staging.name:
                return True
        raise
    fsync_path(path.parent)
    return True


def build_and_publish(
    path: Path,
    run_build: Callable[[Path], list[str] | None],
    info: Any,
    ready: Callable[[], bool],
    *,
    check: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[bool, dict[str, Any], float]:
    """Build into a fresh staging folder and publish it: (published by us, metadata, seconds).

    If anything fails (the build, a special file, a full disk) the staging folder is removed
    and the error propagates: the entry stays a miss. ``check`` sees the sealed file records
    before the metadata is written and may refuse them by raising (a pull compares them with
    the remote's manifest); ``extra`` fields join the metadata (where a pull came from).
    """
    staging = layout.staging_path(path, hostname(), os.getpid())
    os.mkdir(staging)
    try:
        with heartbeat(staging):
            started_at, started = time.time(), time.monotonic()
            uncovered = run_build(staging)
            seconds = time.monotonic() - started
            files = seal(staging)
            if check is not None:
                check(files)
            record = write_metadata(
                staging,
                path,
                files,
                info,
                started_at=started_at,
                seconds=seconds,
                uncovered=uncovered,
                extra=extra,
            )
            published = rename_into_place(staging, path, ready)
    except BaseException:
        remove_tree(staging)
        raise
    return published, record, seconds
