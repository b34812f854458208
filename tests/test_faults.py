"""Fault injection: every step of publish fails in turn; the entry is a miss or valid after.

These are the faults this machine cannot produce on demand (a full disk, an I/O error, a
cross-device rename, an NFS rename reported failed after it happened), so each is faked at
one os call and nothing else.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import report
from hydra_cache import CacheEntry
from hydra_cache.store import integrity, journal
from hydra_cache.store.entry import METADATA_NAME

STEPS = ["mkdir", "rename", "replace", "fsync", "pwrite", "ftruncate"]
ERRORS = [errno.ENOSPC, errno.EIO, errno.EXDEV]


def build(staging: Path) -> None:
    for number in range(3):
        (staging / f"part{number}").write_text(f"{os.getpid()} {number}\n" * 100)


def miss_or_valid(path: Path) -> str:
    entry = CacheEntry(path)
    if not entry.ready:
        assert not path.exists() or not any(path.iterdir()), "a half entry is at the path"
        return "miss"
    meta = entry.metadata()
    assert meta is not None
    assert integrity.damage(path, meta["files"], skip=METADATA_NAME) == []
    return "valid"


class Fault:
    """Raise ``error`` at the ``nth`` call of ``os.<name>`` (counting from 0)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, nth: int, error: int) -> None:
        self.calls = 0
        real: Callable[..., Any] = getattr(os, name)

        def faulty(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls - 1 == nth:
                raise OSError(error, os.strerror(error))
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, faulty)


def count_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> int:
    with monkeypatch.context() as patch:
        counter = Fault(patch, name, -1, 0)
        CacheEntry(tmp_path / "calibrate" / "ns" / f"{abs(hash(name)):016x}"[:16]).get_or_build(
            build
        )
    return counter.calls


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_every_call_of_every_publish_step(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_calls(monkeypatch, tmp_path, step)
    assert calls > 0, f"os.{step} is not used by a build"
    outcomes: dict[str, int] = {"miss": 0, "valid": 0}
    for nth in range(calls):
        for error in ERRORS:
            path = tmp_path / "root" / "ns" / f"{nth:08x}{error:08x}"
            with monkeypatch.context() as patch:
                Fault(patch, step, nth, error)
                try:
                    CacheEntry(path).get_or_build(build)
                except OSError as raised:
                    assert raised.errno == error
            outcomes[miss_or_valid(path)] += 1
            assert not CacheEntry(path).leftovers(), "a failed build left its staging folder"
            entry = CacheEntry(path)
            entry.get_or_build(build)  # with the fault gone, the next build succeeds
            assert miss_or_valid(path) == "valid"
    report(
        f"fault injection os.{step}",
        calls_faulted=calls * len(ERRORS),
        errors="ENOSPC/EIO/EXDEV",
        torn=0,
        **outcomes,
    )


@pytest.mark.parametrize("error", ERRORS, ids=[errno.errorcode[e] for e in ERRORS])
def test_a_failed_write_of_the_metadata_leaves_a_miss(
    error: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "root" / "ns" / "0000000000000001"
    with monkeypatch.context() as patch:
        Fault(patch, "write", 0, error)  # the first os.write of a build is the metadata's
        with pytest.raises(OSError) as raised:
            CacheEntry(path).get_or_build(build)
    assert raised.value.errno == error
    assert miss_or_valid(path) == "miss" and not CacheEntry(path).leftovers()
    CacheEntry(path).get_or_build(build)
    assert miss_or_valid(path) == "valid"


def test_a_failed_journal_write_keeps_the_published_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal, "_open_journal", full_disk)
    path = tmp_path / "root" / "ns" / "0000000000000002"
    entry = CacheEntry(path)
    entry.get_or_build(build)
    assert entry.last_outcome == "built" and miss_or_valid(path) == "valid"
    assert "but could not journal it" in caplog.text


def test_a_rename_reported_failed_after_it_happened_publishes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS retries a RENAME whose reply was lost; the retry fails with ENOENT."""
    real_rename = os.rename

    def lost_reply(source: Any, target: Any) -> None:
        real_rename(source, target)
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))

    monkeypatch.setattr(os, "rename", lost_reply)
    path = tmp_path / "root" / "ns" / "0000000000000003"
    entry = CacheEntry(path)
    assert entry.get_or_build(build) == path
    monkeypatch.undo()
    assert entry.last_outcome == "built" and miss_or_valid(path) == "valid"
    publishes = [r for r in journal.records(tmp_path / "root") if r["event"] == "publish"]
    assert len(publishes) == 1
    assert not entry.leftovers()
