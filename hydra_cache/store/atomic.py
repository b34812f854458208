"""The one way hydra-cache replaces a small file of its own: write aside, flush, rename.

Metadata, the list of roots and every other record go through :func:`atomic_write`, so a
reader sees the old bytes or the new ones, never half of each, and a crash leaves at worst a
temporary file whose name (``<name>.<token>.tmp``) says what it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from hydra_cache.store.layout import token

log = logging.getLogger(__name__)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file or folder (not following a symlink), so it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path,
    data: bytes,
    *,
    durable: bool = True,
    temporary: Path | None = None,
    mode: int = 0o644,
) -> None:
    """Replace ``path`` with ``data`` in one rename; ``durable`` also flushes file and folder.

    The temporary file is created exclusively and without following links, so a name planted
    beside ``path`` can neither redirect the write nor be truncated by it.
    """
    temporary = temporary or path.with_name(f"{path.name}.{token()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if durable:
        fsync_path(path.parent)
