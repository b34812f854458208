"""Removing a tree hydra-cache made, honestly: read-only folders are made writable first, and
whatever could not be removed is reported, never claimed as freed.

``shutil.rmtree(ignore_errors=True)`` let ``gc`` print "removed" over a read-only subfolder that
stayed on disk; here every failure comes back to the caller, which says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_OWNER_RWX = stat.S_IRUSR | stat.S_IWUSR | stat.S_IXUSR


def _make_writable(folder: str) -> None:
    """Give the owner rwx on every folder of the tree (top-down, never following links)."""
    try:
        mode = os.lstat(folder).st_mode
        if not stat.S_ISDIR(mode):
            return
        if mode & _OWNER_RWX != _OWNER_RWX:
            os.chmod(folder, stat.S_IMODE(mode) | _OWNER_RWX)
        with os.scandir(folder) as items:
            children = [item.path for item in items if item.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for child in children:
        _make_writable(child)


def remove_tree(path: Path | str) -> list[str]:
    """Remove ``path`` (a folder, file or link; links are never followed).

    Returns what could not be removed, one line each; empty when ``path`` is gone.
    """
    problems: list[str] = []
    target = str(path)
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return problems
    except OSError as error:
        return [f"{target}: {error.strerror}"]
    if not stat.S_ISDIR(mode):
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
        except OSError as error:
            problems.append(f"{target}: {error.strerror}")
        return problems
    _make_writable(target)

    def failed(_function: Any, failing: str, error: BaseException) -> None:
        if isinstance(error, FileNotFoundError):
            return
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        problems.append(f"{failing}: {reason}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(target, onexc=failed)
    else:
        shutil.rmtree(target, onerror=lambda f, p, info: failed(f, p, info[1]))
    if os.path.lexists(target) and not problems:
        problems.append(f"{target}: still there after removal")
    for problem in problems:
        log.warning("could not remove %s", problem)
    return problems
