"""Promises under faults, with counts: kills, races, broken locks, deleters, late visibility.

Default counts keep the suite quick; ``pytest tests/test_reliability.py --stress 10`` runs ten
times as many trials. Each test prints a ``RELIABILITY`` line (see it with ``-s``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import BUILDER, TESTS, clean_env, report, spawn
from hydra_cache import CacheEntry
from hydra_cache.store import integrity
from hydra_cache.store.entry import METADATA_NAME

RACER = TESTS / "apps" / "racer.py"


def check_whole(path: Path) -> str | None:
    """None if the entry is a miss or complete and verified; else what is wrong."""
    entry = CacheEntry(path)
    if not entry.ready:
        return None
    meta = entry.metadata()
    if meta is None:
        return "metadata unreadable"
    problems = integrity.damage(path, meta["files"], skip=METADATA_NAME)
    if problems:
        return "; ".join(problems)
    owners = {
        (path / name).read_text().splitlines()[0]
        for name, record in meta["files"].items()
        if "sha256" in record or "blake2b" in record  # files, not folders or links
    }
    return None if owners == {str(meta["pid"])} else f"mixed: {owners}"


def test_kill_sweep_never_leaves_a_torn_entry(tmp_path: Path, stress: int) -> None:
    """At least 100 builders SIGKILLed at random points; every key reads whole, then rebuilds."""
    log = tmp_path / "log"
    rng = random.Random(20261126)
    target, killed, finished = 100 * stress, [], 0
    running: list[tuple[subprocess.Popen[str], float, Path]] = []
    number = 0
    while len(killed) < target:
        while len(running) < 6:
            number += 1
            path = tmp_path / "root" / "ns" / f"{number:016x}"
            builder = spawn(BUILDER, str(path), str(log), "--files", "6", "--sleep", "0.03")
            running.append((builder, time.monotonic() + rng.uniform(0.02, 0.4), path))
        item = min(running, key=lambda entry: entry[1])
        process, deadline, path = item
        time.sleep(max(0.0, deadline - time.monotonic()))
        running.remove(item)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate()
        if process.returncode == -signal.SIGKILL:
            killed.append(path)
        else:
            finished += 1
        assert check_whole(path) is None, path
    for process, _, _ in running:
        process.kill()
        process.communicate()
    torn = [path for path in killed if check_whole(path) is not None]
    assert torn == []
    half_built = sum(1 for path in killed if not CacheEntry(path).ready)
    for path in killed:  # the next call rebuilds every killed key, or finds it whole
        entry = CacheEntry(path)
        entry.get_or_build(
            lambda staging: [
                (staging / f"part{n}").write_text(f"{os.getpid()}\n") for n in range(6)
            ]
        )
        assert entry.ready and check_whole(path) is None
        assert not entry.leftovers(), "a killed build's staging folder outlived the rebuild"
    report(
        "kill sweep",
        builders_killed=len(killed),
        killed_before_publish=half_built,
        builders_finished=finished,
        torn_reads=0,
        keys_rebuilt=len(killed),
    )


def race_rounds(tmp_path: Path, rounds: int, *extra: str) -> tuple[list[int], list[str]]:
    sync = tmp_path / "sync"
    sync.mkdir()
    racers = [
        spawn(RACER, str(tmp_path / "root"), str(rounds), str(sync), *extra) for _ in range(8)
    ]
    try:
        for number in range(rounds):
            (sync / f"go-{number}").touch()
            deadline = time.time() + 60
            while len(list(sync.glob(f"done-{number}-*"))) < 8:
                assert time.time() < deadline, f"round {number} did not finish"
                assert all(r.poll() in (None, 0) for r in racers), [r.stderr for r in racers]
                time.sleep(0.005)
    finally:
        for racer in racers:
            _out, err = racer.communicate(timeout=60)
            assert racer.returncode == 0, err
    lines = (sync / "builds").read_text().split("\n")
    builds = [sum(1 for line in lines if line.startswith(f"BUILD {n} ")) for n in range(rounds)]
    verdicts = [p.read_text() for p in sync.glob("done-*")]
    return builds, verdicts


def test_eight_racers_times_25_rounds_build_once_per_round(tmp_path: Path, stress: int) -> None:
    builds, verdicts = race_rounds(tmp_path, 25 * stress)
    assert builds == [1] * len(builds)
    assert set(verdicts) == {"ok"}
    report("race (flock)", rounds=len(builds), processes=8, builds_per_round=1, mixed_entries=0)


def test_with_flock_a_no_op_racers_duplicate_work_but_never_mix(
    tmp_path: Path, stress: int
) -> None:
    builds, verdicts = race_rounds(tmp_path, 25 * stress, "--noop-flock")
    assert all(count >= 1 for count in builds)
    assert set(verdicts) == {"ok"}
    for number in range(len(builds)):
        assert check_whole(tmp_path / "root" / "race" / f"{number:016x}") is None
    report(
        "race (flock a no-op)",
        rounds=len(builds),
        processes=8,
        duplicate_builds=sum(builds) - len(builds),
        mixed_entries=0,
    )


READER = """
import json, os, sys, time, random
from pathlib import Path
from hydra_cache import CacheEntry
from hydra_cache.store import integrity
from hydra_cache.store.entry import METADATA_NAME
root, seconds = Path(sys.argv[1]), float(sys.argv[2])
rng = random.Random(os.getpid())
stats = {"reads": 0, "torn": 0, "vanished": 0, "rebuilds": 0, "errors": 0}
end = time.time() + seconds
def build(staging):
    stats["rebuilds"] += 1
    for n in range(4):
        (staging / f"part{n}").write_text(f"{os.getpid()}\\n" * 2000)
while time.time() < end:
    entry = CacheEntry(root / "ns" / f"{rng.randrange(6):016x}")
    try:
        path = entry.get_or_build(build)
        meta = json.loads((path / METADATA_NAME).read_text())
        contents = {name: (path / name).read_bytes() for name in meta["files"]}
    except (FileNotFoundError, NotADirectoryError):
        stats["vanished"] += 1   # deleted under our feet: the next call rebuilds
        continue
    except OSError:
        stats["errors"] += 1
        continue
    stats["reads"] += 1
    owners = {c.splitlines()[0] for c in contents.values()}
    sizes_ok = all(len(contents[n]) == meta["files"][n]["size"] for n in contents)
    if not sizes_ok or len(owners) != 1:
        stats["torn"] += 1
print(json.dumps(stats))
"""

DELETER = """
import os, random, shutil, sys, time
from pathlib import Path
root, seconds = Path(sys.argv[1]) / "ns", float(sys.argv[2])
rng = random.Random(7)
deleted = 0
end = time.time() + seconds
while time.time() < end:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        time.sleep(0.01)
        continue
    if names:
        target = root / rng.choice(names)
        try:
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
            deleted += 1
        except OSError:
            pass
    time.sleep(rng.uniform(0, 0.02))
print(deleted)
"""


def test_a_deleter_never_causes_a_torn_read(tmp_path: Path, stress: int) -> None:
    seconds = str(4 * stress)
    root = tmp_path / "root"
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(root), seconds],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for _ in range(3)
    ]
    deleter = subprocess.Popen(
        [sys.executable, "-c", DELETER, str(root), seconds],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    totals = {"reads": 0, "torn": 0, "vanished": 0, "rebuilds": 0, "errors": 0}
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        for name, count in json.loads(out).items():
            totals[name] += count
    deleted = int(deleter.communicate(timeout=60)[0])
    assert deleted > 20 and totals["reads"] > 20 and totals["rebuilds"] > 6
    assert totals["torn"] == 0
    report("deleter", seconds=seconds, deletions=deleted, **totals)


def test_late_visibility_waiters_poll_and_never_rebuild(tmp_path: Path) -> None:
    path, log = tmp_path / "root" / "ns" / "abcdefabcdefabcd", tmp_path / "log"
    builder = spawn(BUILDER, str(path), str(log), "--files", "3", "--sleep", "0.3")
    deadline = time.time() + 30
    while not log.exists() and time.time() < deadline:
        time.sleep(0.01)
    # The patience a network filesystem gets (this machine's /tmp is local, and the fake
    # hides the entry the way an NFS client's lookup cache would).
    waiter = spawn(BUILDER, str(path), str(log), "--hide-for", "2.5", "--patience", "30")
    _out, err = builder.communicate(timeout=60)
    assert builder.returncode == 0, err
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out.split()[-1] == "waited"
    assert log.read_text().count("BUILD") == 1, "the waiter rebuilt over a published entry"
    assert f"waiting for {path} to become visible here" in err
    report("late visibility", hidden_seconds=2.5, rebuilds=0)
