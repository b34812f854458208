"""gc and verify, lock modes, and root safety: what touches entries destructively or guards them."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BUILDER, clean_env, run, spawn
from hydra_cache import CacheEntry
from hydra_cache.errors import NotAnEntryError, UnsafePathError
from hydra_cache.explain import explain
from hydra_cache.store import inuse, journal
from hydra_cache.store.entry import METADATA_NAME
from test_reliability import check_whole


def make(root: Path, key: str, *, ns: str = "ns", age: float = 0.0, size: int = 10) -> Path:
    path = root / ns / key
    CacheEntry(path).get_or_build(lambda s: (s / "data").write_text("x" * size))
    inuse.release(path)  # this test process is not a user of the entries it makes for gc
    if age:
        stamp = time.time() - age
        os.utime(path / METADATA_NAME, (stamp, stamp))
    return path


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI; gc gets --min-idle 0 unless the test sets it (entries here are fresh)."""
    if args[0] == "gc" and "--min-idle" not in args:
        args = (*args, "--min-idle", "0s")
    return run(["-m", "hydra_cache", *args], cwd=cwd, env=clean_env())


def wait_for(check: object, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not check():  # type: ignore[operator]
        assert time.time() < deadline
        time.sleep(0.02)


# ------------------------------------------------------------------------------------ gc


def test_gc_evicts_least_recently_used_first_and_journals_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = make(root, "a" * 16, age=3 * 86400)
    middle = make(root, "b" * 16, age=2 * 86400)
    fresh = make(root, "c" * 16)
    other = make(root, "d" * 16, ns="other", age=5 * 86400)
    dry = cli(tmp_path, "gc", "--root", str(root), "--max-size", "20", "--dry-run")
    assert dry.returncode == 0 and "would remove 2 entries" in dry.stdout
    assert all(p.exists() for p in (old, middle, fresh, other))
    done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "20", "--format", "json")
    removed = {row["path"] for row in json.loads(done.stdout) if row["removed"]}
    assert removed == {str(other), str(old)}  # the two least recently used
    assert middle.exists() and fresh.exists()
    stale = cli(tmp_path, "gc", "--root", str(root), "--older-than", "1d", "--namespace", "ns")
    assert stale.returncode == 0 and not middle.exists() and fresh.exists()
    deletions = [r for r in journal.records(root) if r["event"] == "delete"]
    assert {r["key"] for r in deletions} == {"a" * 16, "b" * 16, "d" * 16}
    assert all(r["reason"] == "gc" for r in deletions)


def test_gc_never_collects_an_entry_being_built_or_locked(tmp_path: Path) -> None:
    root, log = tmp_path / "root", tmp_path / "log"
    building = root / "ns" / ("e" * 16)
    builder = spawn(BUILDER, str(building), str(log), "--files", "3", "--sleep", "1")
    locked = make(root, "f" * 16)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom filelock import FileLock\n"
            f"lock = FileLock({str(locked) + '.lock'!r}); lock.acquire()\n"
            "print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        wait_for(log.exists)
        done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--grace", "0s")
        assert done.returncode == 0, done.stderr
        assert locked.exists() and f"skipped (in use) {locked}" in done.stdout
        assert CacheEntry(building).leftovers(), "gc removed a live build's staging folder"
    finally:
        holder.kill()
        holder.wait()
    assert builder.wait(timeout=60) == 0
    assert check_whole(building) is None and CacheEntry(building).ready


def test_gc_never_follows_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    victim = make(outside, "0" * 16)  # a real entry, outside the root
    make(root, "1" * 16)
    (root / "ns" / ("2" * 16)).symlink_to(victim)
    (root / "linked-ns").symlink_to(outside / "ns")
    staged = root / "ns" / f".{'3' * 16}.staging.otherhost.1.abcd"
    staged.symlink_to(outside / "ns")
    old = time.time() - 7 * 86400
    os.utime(staged, (old, old), follow_symlinks=False)
    done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--grace", "1h")
    assert done.returncode == 0, done.stderr
    assert CacheEntry(victim).ready and (victim / "data").read_text() == "x" * 10
    assert not staged.is_symlink(), "the planted staging link should be unlinked, not followed"
    assert (root / "linked-ns").is_symlink()


def test_gc_clears_dead_builds_leftovers_after_the_grace_period(tmp_path: Path) -> None:
    root, log = tmp_path / "root", tmp_path / "log"
    killed = root / "ns" / ("4" * 16)
    done = spawn(BUILDER, str(killed), str(log), "--kill-at", "build")
    done.communicate(timeout=60)
    assert done.returncode == -signal.SIGKILL and CacheEntry(killed).leftovers()
    young = cli(tmp_path, "gc", "--root", str(root), "--older-than", "30d")
    assert CacheEntry(killed).leftovers(), young.stdout  # younger than the 1h grace: kept
    cleared = cli(tmp_path, "gc", "--root", str(root), "--older-than", "30d", "--grace", "0s")
    assert cleared.returncode == 0
    assert not CacheEntry(killed).leftovers()
    assert not Path(str(killed) + ".lock").exists()
    assert "staging folder of a dead build" in cleared.stdout


# -------------------------------------------------------------------------------- verify


def test_verify_finds_changed_truncated_removed_and_extra_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    paths = []
    for n, damage in enumerate(["change", "truncate", "remove", "add", "none"]):
        path = root / "ns" / f"{n:016x}"
        CacheEntry(path).get_or_build(
            lambda s: [(s / f"f{i}").write_text("abcdef" * 100) for i in range(2)]
        )
        inuse.release(path)
        paths.append(path)
        if damage == "change":
            (path / "f0").write_text("ABCDEF" * 100)
        elif damage == "truncate":
            (path / "f0").write_text("abc")
        elif damage == "remove":
            (path / "f1").unlink()
        elif damage == "add":
            (path / "stray").write_text("?")
    found = cli(tmp_path, "verify", "--root", str(root))
    assert found.returncode == 1
    assert f"damaged {paths[0]}\n    f0: content changed" in found.stdout
    assert "f0: truncated (600 -> 3 bytes)" in found.stdout
    assert "f1: removed" in found.stdout and "stray: not in the entry's record" in found.stdout
    assert "4 damaged entries" in found.stdout and str(paths[4]) not in found.stdout
    repaired = cli(tmp_path, "verify", "--root", str(root), "--repair")
    assert repaired.returncode == 1
    assert not any(p.exists() for p in paths[:4]) and paths[4].exists()
    kept = list((root / ".hydra-cache" / "damaged").iterdir())
    assert len(kept) == 4, "damaged entries are moved aside, never deleted"
    assert cli(tmp_path, "verify", "--root", str(root)).returncode == 0
    reason = explain(paths[0])
    assert reason.kind == "damaged" and "moved aside as damaged" in reason.summary


def test_verify_on_hit_rebuilds_a_damaged_entry(tmp_path: Path) -> None:
    path = tmp_path / "root" / "ns" / ("5" * 16)
    CacheEntry(path).get_or_build(lambda s: (s / "f").write_text("good"))
    (path / "f").write_text("evil")
    unchecked = CacheEntry(path)
    unchecked.get_or_build(lambda s: (s / "f").write_text("good"))
    assert unchecked.last_outcome == "hit" and (path / "f").read_text() == "evil"
    checked = CacheEntry(path, verify_on_hit=True)
    checked.get_or_build(lambda s: (s / "f").write_text("good"))
    assert checked.last_outcome == "built" and (path / "f").read_text() == "good"
    assert len(list((tmp_path / "root" / ".hydra-cache" / "damaged").iterdir())) == 1


# ---------------------------------------------------------------------------- lock modes


def test_soft_locks_build_once_and_reclaim_a_dead_holder(tmp_path: Path) -> None:
    path, log, go = tmp_path / "root" / "ns" / ("6" * 16), tmp_path / "log", tmp_path / "go"
    racers = [
        spawn(BUILDER, str(path), str(log), "--lock", "soft", "--start-file", str(go))
        for _ in range(6)
    ]
    time.sleep(0.8)
    go.touch()
    assert all(r.wait(timeout=60) == 0 for r in racers)
    assert log.read_text().count("BUILD") == 1 and check_whole(path) is None
    stale = tmp_path / "root" / "ns" / ("7" * 16)
    killed = spawn(BUILDER, str(stale), str(log), "--lock", "soft", "--kill-at", "build")
    killed.communicate(timeout=60)
    assert Path(str(stale) + ".lock").exists(), "the dead holder's marker should remain"
    started = time.monotonic()
    again = spawn(BUILDER, str(stale), str(log), "--lock", "soft", "--timeout", "20")
    _out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert time.monotonic() - started < 15 and CacheEntry(stale).ready


def test_a_soft_lock_from_another_host_is_reported_with_the_way_to_clear_it(tmp_path: Path) -> None:
    path = tmp_path / "root" / "ns" / ("8" * 16)
    path.parent.mkdir(parents=True)
    Path(str(path) + ".lock").write_text("4242\nfar-away-node\n123\n")
    waiter = spawn(BUILDER, str(path), str(tmp_path / "log"), "--lock", "soft", "--timeout", "1")
    _out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 1
    assert "far-away-node:4242" in err and f"remove {path}.lock" in err


def test_auto_falls_back_to_soft_locks_without_flock(tmp_path: Path) -> None:
    path, log = tmp_path / "root" / "ns" / ("9" * 16), tmp_path / "log"
    done = spawn(BUILDER, str(path), str(log), "--flock-enosys")
    _out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    assert "flock is not supported under" in err and "using soft (marker file) locks" in err
    assert check_whole(path) is None


# --------------------------------------------------------------------------- root safety


def test_new_roots_are_private_unless_shared(tmp_path: Path) -> None:
    private = tmp_path / "private-root"
    make(private, "a" * 16)
    assert private.stat().st_mode & 0o7777 == 0o700
    from hydra_cache.store.roots import ensure_root

    ensure_root(tmp_path / "group-root", shared=True)
    assert (tmp_path / "group-root").stat().st_mode & 0o7777 == 0o2770


@pytest.mark.parametrize("plant", ["symlink", "fifo"])
def test_planted_links_and_fifos_at_the_lock_are_refused(plant: str, tmp_path: Path) -> None:
    path = tmp_path / "root" / "ns" / ("b" * 16)
    path.parent.mkdir(parents=True)
    lock = Path(str(path) + ".lock")
    if plant == "symlink":
        lock.symlink_to(tmp_path / "victim")
    else:
        os.mkfifo(lock)
    with pytest.raises(
        UnsafePathError,
        match=f"is a {'symlink' if plant == 'symlink' else 'FIFO'}"
        " where hydra-cache expects its lock file: refusing",
    ):
        CacheEntry(path).get_or_build(lambda s: None)
    assert not (tmp_path / "victim").exists()


def test_a_fifo_at_the_metadata_path_is_no_hit_never_blocks_and_is_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "root" / "ns" / ("c" * 16)
    path.mkdir(parents=True)
    os.mkfifo(path / METADATA_NAME)
    entry = CacheEntry(path)
    assert not entry.ready and entry.metadata() is None
    with pytest.raises(NotAnEntryError, match="not a hydra-cache entry"):
        entry.get_or_build(lambda s: (s / "f").write_text("ok"))
    assert stat.S_ISFIFO(os.lstat(path / METADATA_NAME).st_mode)
