"""A project as it was at a git revision, in a temporary folder.

``git archive`` of the revision, unpacked with tarfile's ``data`` filter: the user's checkout,
index and worktree list are never touched, and the folder is removed afterwards. The whole tree
is taken, not only the config folder, so code fingerprints see the revision's own code.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hydra_cache.errors import ConfigError


@dataclass(frozen=True)
class Revision:
    """A revision as the user named it, and the commit it names."""

    name: str
    commit: str

    @property
    def short(self) -> str:
        return self.commit[:7]


def _git(top: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-C", str(top), *args],
        capture_output=True,
        check=False,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )


def repository_of(folder: Path) -> Path:
    """The top of the git work tree that holds ``folder``."""
    try:
        done = _git(folder, "rev-parse", "--show-toplevel")
    except FileNotFoundError:
        raise ConfigError(
            "git is not installed; fix: install git to use hydra-cache diff"
        ) from None
    if done.returncode != 0:
        raise ConfigError(
            f"{folder} is not inside a git repository; fix: run hydra-cache diff "
            "from your project's checkout"
        )
    return Path(done.stdout.decode().strip())


def resolve_revision(top: Path, name: str, option: str) -> Revision:
    if not name or name.startswith("-"):
        raise ConfigError(f"{option} {name!r} is not a revision; fix: e.g. {option} origin/main")
    done = _git(top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}")
    if done.returncode != 0:
        raise ConfigError(
            f"{option} {name!r} is not a commit in {top}; fix: fetch it "
            "(git fetch origin) or name an existing branch, tag or commit"
        )
    return Revision(name, done.stdout.decode().strip())


@contextmanager
def checkout_tree(top: Path, revision: Revision, relative: str) -> Iterator[Path | None]:
    """The repository at ``revision``; None if the config folder ``relative`` (to the top)
    did not exist then."""
    listed = _git(top, "ls-tree", "-d", "--name-only", revision.commit, "--", relative)
    if relative not in ("", ".") and not listed.stdout.strip():
        yield None
        return
    archive = _git(top, "archive", "--format=tar", revision.commit)
    if archive.returncode != 0:
        raise ConfigError(
            f"cannot read {relative or '.'} at {revision.name}: "
            f"{archive.stderr.decode(errors='replace').strip()}"
        )
    with tempfile.TemporaryDirectory(prefix="hydra-cache-diff-") as scratch:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(scratch, filter="data")
            else:  # pragma: no cover - Pythons without extraction filters
                tar.extractall(scratch)
        yield Path(scratch)
