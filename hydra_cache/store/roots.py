"""Where cache roots come from, and whether one can be used.

The root is chosen in a fixed order (``hydra_cache.root``, ``$HYDRA_CACHE_ROOT``,
``$XDG_CACHE_HOME/hydra-cache``, ``~/.cache/hydra-cache``) and the source is kept beside it,
because "the root moved" is the most common silent miss and the source is the first thing to
check. Checking a root never writes anything.

A root is a folder that holds ``.hydra-cache/``; hydra-cache creates it with the root, and the
maintenance commands (``gc``, ``verify``, ``ls``) refuse any folder without it, so pointing
``--root`` at a home folder or a project checkout touches nothing. Roots that are empty or
blank, that normalise to ``/`` or a system folder, or that are reached through a symlink that
someone else controls are refused before anything is created.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hydra_cache.errors import ConfigError, HydraCacheError
from hydra_cache.store import layout

ENV_ROOT = "HYDRA_CACHE_ROOT"
#: Set by the ``cache_root`` pytest fixture: it beats every other setting, the config's own
#: ``hydra_cache.root`` included, so a project's tests never build into the root its config
#: names (a team's shared cache, say).
ENV_PINNED_ROOT = "HYDRA_CACHE_TEST_ROOT"
#: Folders that are never a cache root (nor, for the first five, anything under them).
SYSTEM_FOLDERS = frozenset(
    {
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/var/tmp",
        "/usr/local",
    }
)
_SYSTEM_TREES = ("/proc", "/sys", "/dev", "/etc", "/boot")


class NotARootError(HydraCacheError):
    """A folder given to gc, verify or ls is not a hydra-cache root (no ``.hydra-cache/``)."""


@dataclass(frozen=True)
class Root:
    """A cache root and the setting it came from (``hydra_cache.root``, ``$HYDRA_CACHE_ROOT``…)."""

    path: Path
    source: str


def select_root(
    configured: str | None,
    *,
    base_dir: str,
    environ: Mapping[str, str] = os.environ,
) -> Root:
    """Pick the root; a relative one is taken relative to ``base_dir`` (the launch directory).

    An unset or empty variable is skipped; one that holds only whitespace is refused (a
    folder named two spaces is never what was meant), as is an empty or blank ``$HOME``
    when the default root needs it.
    """
    if environ.get(ENV_PINNED_ROOT):
        path = _absolute(environ[ENV_PINNED_ROOT], base_dir, f"${ENV_PINNED_ROOT}")
        return _refuse_odd(Root(path, f"${ENV_PINNED_ROOT}"))
    if configured is not None:
        return _refuse_odd(
            Root(_absolute(configured, base_dir, "hydra_cache.root"), "hydra_cache.root")
        )
    if environ.get(ENV_ROOT):
        path = _absolute(environ[ENV_ROOT], base_dir, f"${ENV_ROOT}")
        return _refuse_odd(Root(path, f"${ENV_ROOT}"))
    if environ.get("XDG_CACHE_HOME"):
        path = _absolute(environ["XDG_CACHE_HOME"], base_dir, "$XDG_CACHE_HOME")
        return _refuse_odd(Root(path / "hydra-cache", "$XDG_CACHE_HOME"))
    home = environ.get("HOME") if "HOME" in environ else os.path.expanduser("~")
    if not home or not home.strip() or not os.path.isabs(home):
        raise ConfigError(
            f"$HOME is {home!r}, so the default cache root ~/.cache/hydra-cache has no home; "
            "fix: set HYDRA_CACHE_ROOT=<a folder of yours> or hydra_cache.root"
        )
    return _refuse_odd(Root(Path(os.path.normpath(home)) / ".cache" / "hydra-cache", "~/.cache"))


def _absolute(value: str, base_dir: str, setting: str) -> Path:
    if not value.strip():
        raise ConfigError(
            f"{setting}: the cache root {value!r} is blank; fix: set it to a folder, or unset it"
        )
    return Path(os.path.normpath(os.path.join(base_dir, os.path.expanduser(value))))


def _refuse_odd(root: Root) -> Root:
    """A root that normalises to ``/``, a system folder or a home folder is a mistake."""
    text = str(root.path)
    home = os.path.normpath(os.path.expanduser("~"))
    if (
        text in SYSTEM_FOLDERS
        or text == home
        or any(text.startswith(tree + "/") for tree in _SYSTEM_TREES)
    ):
        raise ConfigError(
            f"{_setting_name(root)}: cache root {text} is a system or home folder; gc would "
            "evict from it; fix: set hydra_cache.root=<a folder of its own>, e.g. "
            "~/.cache/hydra-cache"
        )
    return root


def require_root(path: Path, option: str = "--root") -> None:
    """Refuse a folder that is not a hydra-cache root: gc, verify and ls touch nothing else."""
    try:
        marker = os.lstat(layout.state_dir(path))
    except OSError:
        marker = None
    if marker is None or not stat.S_ISDIR(marker.st_mode):
        raise NotARootError(
            f"{option} {path} is not a hydra-cache root (it has no {layout.STATE_DIR_NAME}/ "
            "folder); refusing to touch it; fix: point --root at a cache root "
            "(see 'hydra-cache keys' for the root in use)"
        )


def _setting_name(root: Root) -> str:
    return root.source if root.source.startswith(("$", "--")) else "hydra_cache.root"


def check_root(root: Root, *, shared: bool = False) -> None:
    """Raise a one-line :class:`ConfigError` if the root cannot hold entries, or is unsafe.

    Unsafe: reached through a symlink someone else planted in a shared folder such as
    ``/tmp``, world-writable without the sticky bit, or owned by another user (unless the root
    is ``shared`` with a group you are in). Writes nothing.
    """
    path = root.path
    _refuse_planted_links(root)
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: creating through it goes who knows where
            raise ConfigError(
                f"{_setting_name(root)}: {probe} is a dangling symlink; "
                "fix: remove it or point hydra_cache.root elsewhere"
            )
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file" if probe == path else f"lies under {probe}, which is a file"
        raise ConfigError(
            f"{_setting_name(root)}: cache root {path} {what}; "
            "fix: set hydra_cache.root=<a directory>"
        )
    if probe == path:
        _refuse_foreign(root, shared)
    if not _writable(probe):
        where = "" if probe == path else f" (its nearest existing parent {probe} is not)"
        raise ConfigError(
            f"{_setting_name(root)}: cache root {path} is not writable{where}; "
            "fix: set hydra_cache.root=<a directory you can write> or fix its permissions"
        )


def _writable(directory: Path) -> bool:
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    try:
        return not os.statvfs(directory).f_flag & os.ST_RDONLY
    except OSError:
        return False


def _trusted(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def _refuse_planted_links(root: Root) -> None:
    """A symlink on the way to the root that someone else owns, or that sits in a folder
    someone else owns: whoever controls it can redirect gc into their choice of folder."""
    current = Path(root.path.anchor)
    for part in root.path.parts[1:]:
        current = current / part
        try:
            link = os.lstat(current)
        except OSError:
            return
        if not stat.S_ISLNK(link.st_mode):
            continue
        above = Path(os.path.realpath(current.parent))
        owners = [(current, link.st_uid)]
        for folder in (above, *above.parents):
            try:
                owners.append((folder, os.stat(folder).st_uid))
            except OSError:
                continue
        for where, uid in owners:
            if not _trusted(uid):
                place = "" if where == current else f" in the folder {where}"
                raise ConfigError(
                    f"{_setting_name(root)}: cache root {root.path} is reached through the "
                    f"symlink {current}{place}, owned by uid {uid}; refusing it (whoever owns "
                    "it can redirect your cache and what gc deletes); fix: set "
                    "hydra_cache.root=<a folder of your own>"
                )


def _refuse_foreign(root: Root, shared: bool) -> None:
    info = os.stat(root.path)
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"{_setting_name(root)}: cache root {root.path} is world-writable without the sticky "
            "bit, so anyone could replace your entries; fix: chmod o-w (or +t) it, or set "
            "hydra_cache.root=<a folder of your own>"
        )
    if info.st_uid == os.geteuid():
        return
    in_group = info.st_gid in (os.getegid(), *os.getgroups())
    if shared and in_group and info.st_mode & stat.S_IWGRP:
        return
    hint = (
        "add hydra_cache.shared=true if it is your group's shared cache"
        if in_group and info.st_mode & stat.S_IWGRP and not shared
        else "set hydra_cache.root=<a folder of your own>"
    )
    raise ConfigError(
        f"{_setting_name(root)}: cache root {root.path} is owned by another user "
        f"(uid {info.st_uid}); refusing to read entries they control; fix: {hint}"
    )


def ensure_root(path: Path, *, shared: bool = False) -> None:
    """Create a missing root (``0700``, or ``2770`` setgid when shared) with its marker."""
    mode = 0o2770 if shared else 0o700
    if not os.path.isdir(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
        else:
            os.chmod(path, mode)  # mkdir's mode is cut by the umask
    try:
        os.mkdir(layout.state_dir(path), mode)
    except FileExistsError:
        return


#: Filesystems whose clients may see a just-published entry late (lookup and attribute caches).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "panfs",
        "orangefs",
        "pvfs2",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.ceph",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.juicefs",
        "wekafs",
        "quobyte",
    }
)


def is_network_filesystem(path: Path) -> bool:
    """Whether ``path`` lives on a network filesystem (True when it cannot be told)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as handle:
            mounts = [line.split()[1:3] for line in handle if len(line.split()) > 2]
    except OSError:
        return True
    target = os.path.realpath(path)
    best, kind = "", ""
    for mount_point, fs_type in mounts:
        point = mount_point.replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs_type
    return kind in NETWORK_FILESYSTEMS
