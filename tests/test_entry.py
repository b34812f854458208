"""CacheEntry: built exactly once, published atomically, never half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BUILDER, spawn
from hydra_cache import CacheEntry
from hydra_cache.store.entry import METADATA_NAME


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def builds(log: Path) -> list[str]:
    return log.read_text().split("BUILD ")[1:] if log.exists() else []


def assert_whole(path: Path, files: int = 5) -> int:
    """The entry is complete and every file comes from one builder; returns its pid."""
    meta = json.loads((path / METADATA_NAME).read_text())
    pids = {(path / f"part{n}").read_text().splitlines()[0] for n in range(files)}
    assert len(pids) == 1, f"mixed entry: {pids}"
    assert (path / "part0").read_text() == f"{meta['pid']}\n" * 1000
    assert set(meta["files"]) == {f"part{n}" for n in range(files)}
    return int(meta["pid"])


def leftovers(path: Path) -> list[str]:
    return (
        sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))
        if path.parent.exists()
        else []
    )


def test_build_publishes_metadata_and_a_hit_does_not_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "root" / "data" / "0123456789abcdef"
    entry = CacheEntry(path)
    assert not entry.ready and entry.metadata() is None
    calls: list[Path] = []

    def build(staging: Path) -> None:
        calls.append(staging)
        assert staging.parent == path.parent and staging != path and not any(staging.iterdir())
        (staging / "x.txt").write_text("hello")

    assert entry.get_or_build(build) == path
    assert entry.last_outcome == "built" and entry.ready
    assert (path / "x.txt").read_text() == "hello"
    meta = entry.metadata()
    assert meta is not None
    assert meta["key"] == "0123456789abcdef" and meta["namespace"] == "data"
    assert meta["pid"] == os.getpid() and meta["host"] and meta["created"] and meta["published"]
    assert meta["hydra_cache_version"] and meta["size_bytes"] == 5
    assert CacheEntry(path).get_or_build(build) == path
    assert len(calls) == 1 and leftovers(path) == []


def test_metadata_carries_digest_and_redacted_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omegaconf import OmegaConf

    import hydra_plugins.hydra_cache_plugin  # noqa: F401

    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    cfg = OmegaConf.create(
        {"data": {"resize": 8, "password": "hunter2", "cache_dir": "${cache_dir:}"}}
    )
    entry = CacheEntry(cfg.data.cache_dir)
    entry.get_or_build(lambda staging: (staging / "a").write_text("1"))
    meta = entry.metadata()
    assert meta is not None
    assert meta["digest"].startswith(meta["key"]) and len(meta["digest"]) == 64
    assert meta["config_key"] == "data.cache_dir" and meta["root_source"] == "$HYDRA_CACHE_ROOT"
    assert meta["payload"]["nodes"]["data"]["resize"] == 8
    assert meta["payload"]["nodes"]["data"]["password"].startswith("<redacted:")
    assert "hunter2" not in (entry.path / METADATA_NAME).read_text()


def test_a_failing_build_leaves_nothing_and_propagates(tmp_path: Path) -> None:
    path = tmp_path / "ns" / "aaaaaaaaaaaaaaaa"

    def build(staging: Path) -> None:
        (staging / "half").write_text("half")
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        CacheEntry(path).get_or_build(build)
    assert not path.exists() and leftovers(path) == []
    CacheEntry(path).get_or_build(lambda s: (s / "ok").write_text("ok"))
    assert (path / "ok").exists()


def test_a_hit_never_takes_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "ns" / "bbbbbbbbbbbbbbbb"
    CacheEntry(path).get_or_build(lambda s: (s / "v").write_text("1"))
    holder = spawn(BUILDER, str(tmp_path / "ns" / "other"), str(tmp_path / "log"), "--sleep", "0")
    finish(holder)
    # Hold the lock of the ready entry from another process, then hit it.
    script = (
        "import sys, time\nfrom filelock import FileLock\n"
        f"lock = FileLock({str(path) + '.lock'!r}); lock.acquire()\n"
        "print('locked', flush=True); time.sleep(30)\n"
    )
    locker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        entry = CacheEntry(path)
        assert entry.get_or_build(lambda s: None, timeout=5) == path
        assert entry.last_outcome == "hit"
    finally:
        locker.kill()
        locker.wait()


def test_eight_processes_race_one_builds_all_reuse(tmp_path: Path) -> None:
    path, log, start = tmp_path / "ns" / "cccccccccccccccc", tmp_path / "log", tmp_path / "go"
    racers = [
        spawn(BUILDER, str(path), str(log), "--start-file", str(start), "--sleep", "0.05")
        for _ in range(8)
    ]
    time.sleep(1.0)  # let every interpreter reach the start line
    start.touch()
    results = [finish(p) for p in racers]
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
    outcomes = sorted(out.split()[-1] for _, out, _ in results)
    assert outcomes.count("built") == 1 and len(builds(log)) == 1
    assert set(outcomes) <= {"built", "waited", "hit"}
    assert assert_whole(path) == int(builds(log)[0])
    assert leftovers(path) == []


@pytest.mark.parametrize("point", ["build", "fsync", "metadata", "rename"])
def test_sigkill_at_any_point_leaves_nothing_ready_and_next_call_rebuilds(
    point: str, tmp_path: Path
) -> None:
    path, log = tmp_path / "ns" / "dddddddddddddddd", tmp_path / "log"
    code, _, _ = finish(spawn(BUILDER, str(path), str(log), "--kill-at", point))
    assert code == -9
    assert not CacheEntry(path).ready and not path.exists()
    assert leftovers(path), "the killed build should have left its staging folder"
    code, out, err = finish(spawn(BUILDER, str(path), str(log)))
    assert code == 0, err
    assert out.split()[-1] == "built" and len(builds(log)) == 2
    assert assert_whole(path) == int(builds(log)[1])
    assert leftovers(path) == [], "the next build clears a killed builder's staging folder"


@pytest.mark.parametrize("round_", range(3))
def test_without_a_working_flock_racers_never_publish_a_mixed_entry(
    round_: int, tmp_path: Path
) -> None:
    path, log, start = tmp_path / "ns" / "eeeeeeeeeeeeeeee", tmp_path / "log", tmp_path / "go"
    racers = [
        spawn(
            BUILDER,
            str(path),
            str(log),
            "--noop-flock",
            "--start-file",
            str(start),
            "--sleep",
            "0.02",
        )
        for _ in range(8)
    ]
    time.sleep(1.0)
    start.touch()
    results = [finish(p) for p in racers]
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
    assert len(builds(log)) >= 2, "with flock a no-op, racers should duplicate work"
    winner = assert_whole(path)
    assert str(winner) in {b.strip() for b in builds(log)}
    assert leftovers(path) == []


def test_waiter_says_whom_it_waits_for_and_can_time_out(tmp_path: Path) -> None:
    path, log = tmp_path / "ns" / "ffffffffffffffff", tmp_path / "log"
    holder = spawn(BUILDER, str(path), str(log), "--files", "4", "--sleep", "1")
    deadline = time.time() + 30
    while not builds(log) and time.time() < deadline:
        time.sleep(0.05)
    impatient = finish(spawn(BUILDER, str(path), str(log), "--timeout", "0.5"))
    waiter = finish(spawn(BUILDER, str(path), str(log), "--log-interval", "0.5"))
    code, _, _ = finish(holder)
    assert code == 0
    assert impatient[0] == 1 and "LockTimeout" in impatient[2]
    assert f":{holder.pid} (holding the lock for" in impatient[2]
    assert waiter[0] == 0 and waiter[1].split()[-1] == "waited"
    assert f"waiting for {path}: being built by" in waiter[2]
    assert f":{holder.pid} (holding the lock for" in waiter[2]
    assert len(builds(log)) == 1


def test_a_folder_that_is_not_an_entry_is_refused_by_name_and_left_alone(tmp_path: Path) -> None:
    """Issue 11, defect 4: get_or_build moved a user's folder aside and deleted it silently."""
    features = tmp_path / "outputs" / "features"
    features.mkdir(parents=True)
    (features / "embeddings.npy").write_bytes(b"\x93NUMPY precious")
    builder = spawn(BUILDER, str(features), str(tmp_path / "log"))
    _out, err = builder.communicate(timeout=60)
    assert builder.returncode == 1
    error = [line for line in err.splitlines() if line.startswith("ERROR")]
    assert error == [
        f"ERROR NotAnEntryError: {features} is a folder that holds files, not a hydra-cache "
        "entry (it has no .hydra-cache.json): refusing to replace or remove it; fix: move it "
        "away, or give the cache entry another path"
    ]
    assert [p.name for p in features.iterdir()] == ["embeddings.npy"]
    assert (features / "embeddings.npy").read_bytes() == b"\x93NUMPY precious"
    assert sorted(p.name for p in features.parent.iterdir()) == ["features", "features.lock"]
    empty = tmp_path / "ns" / "1111111111111111"
    empty.mkdir(parents=True)  # an empty folder holds nothing to lose: built into place
    CacheEntry(empty).get_or_build(lambda s: (s / "good").write_text("1"))
    assert sorted(p.name for p in empty.iterdir()) == [METADATA_NAME, "good"]


def test_a_hit_refreshes_the_last_used_mark_at_most_once_a_minute(tmp_path: Path) -> None:
    path = tmp_path / "ns" / "2222222222222222"
    CacheEntry(path).get_or_build(lambda s: (s / "v").write_text("1"))
    metadata = path / METADATA_NAME
    os.utime(metadata, (time.time() - 86400, time.time() - 86400))
    CacheEntry(path).get_or_build(lambda s: None)
    refreshed = metadata.stat().st_mtime
    assert time.time() - refreshed < 60
    os.utime(metadata, (refreshed - 30, refreshed - 30))  # used 30 s ago: leave it alone
    CacheEntry(path).get_or_build(lambda s: None)
    assert metadata.stat().st_mtime == refreshed - 30
    journal = tmp_path / ".hydra-cache" / "journal.jsonl"
    assert journal.read_text().count("\n") == 1, "hits must not be journaled, only the publish"
