"""Which entries a process on this host is using, told by a shared lock on the entry folder.

A process that gets an entry through ``get_or_build`` (a hit, a build or a wait) keeps a shared
``flock`` on the entry's folder until it exits; ``gc`` and ``verify --repair`` take an exclusive
one without waiting before they move an entry, so they skip any entry a live process on this
host is reading, in any PID namespace. The lock is on the folder itself, not on a file beside
it, so it adds no name on disk, leaves with the folder when it is moved, and never delays a
builder of the next entry at the same path.

The lock is taken once per entry and process: a later hit checks a dict and compares the
metadata file's inode from the one ``lstat`` the hit makes anyway, so a hit stays about one
``stat``. A process holds at most ``MAX_HELD`` such locks (each is an open descriptor); past
that, entries are protected on this host only by ``gc --min-idle``, like on other hosts.

What cannot be known: a process on another host holds no lock this host can see (``flock`` on
a network filesystem is not shared by every client), so there ``gc`` relies on the entry's
last-used mark, which hits refresh at most once a minute, and on ``--min-idle``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import threading
from pathlib import Path

from hydra_cache.store import layout

log = logging.getLogger(__name__)

MAX_HELD = 512

_lock = threading.Lock()
#: entry path -> (descriptor of the folder, inode of its metadata file when taken)
_held: dict[str, tuple[int, int]] = {}
_warned: set[str] = set()


def holds(entry: str, metadata_inode: int) -> bool:
    """This process already holds the entry it sees now (the hit path's check)."""
    held = _held.get(entry)
    return held is not None and held[1] == metadata_inode


def hold(entry: Path) -> bool:
    """Take (or keep) the shared lock on the published entry at ``entry``.

    False when there is no published entry there any more (``gc`` moved it while we waited
    for the lock): the caller then treats it as a miss.
    """
    key = str(entry)
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # gc holds its exclusive lock only while renaming
        folder = os.fstat(fd)
        now = os.lstat(entry)
        meta = os.lstat(layout.metadata_path(entry))
    except OSError as error:
        os.close(fd)
        # No flock here (True): only --min-idle protects this entry. Else it moved: a miss.
        return error.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)
    if (now.st_dev, now.st_ino) != (folder.st_dev, folder.st_ino) or not stat.S_ISREG(meta.st_mode):
        os.close(fd)
        return False
    with _lock:
        previous = _held.pop(key, None)
        if previous is not None:
            os.close(previous[0])
        if len(_held) >= MAX_HELD:
            os.close(fd)
            if not _warned:
                _warned.add("max-held")
                log.info(
                    "this process uses more than %d cache entries; the rest are protected "
                    "from gc only by --min-idle",
                    MAX_HELD,
                )
            return True
        _held[key] = (fd, meta.st_ino)
    return True


def release(entry: Path | str | None = None) -> None:
    """Stop marking ``entry`` (every entry when None) as in use by this process."""
    with _lock:
        keys = list(_held) if entry is None else [str(entry)]
        for key in keys:
            held = _held.pop(key, None)
            if held is not None:
                with contextlib.suppress(OSError):
                    os.close(held[0])


def exclusive(entry: Path) -> int | None:
    """A descriptor holding the entry folder's exclusive lock, or None if a process uses it.

    The caller moves the entry while it holds the descriptor, then closes it.
    """
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
            return fd
        os.close(fd)
        return None
    return fd


def in_use_here(entry: Path) -> bool:
    """Whether a process on this host uses the entry (probes; writes nothing)."""
    fd = exclusive(entry)
    if fd is None:
        return os.path.isdir(entry)
    os.close(fd)  # closing drops the probe's lock
    return False
