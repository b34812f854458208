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
from typing import Any

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
    rng = random.Random(20261126)
    target, killed, finished = 100 * stress, [], 0
    # [process, delay, path, its log, deadline]: the delay runs from the moment the builder
    # starts building (its log appears), so a slow interpreter start on a busy machine does
    # not turn every kill into a kill before the build.
    running: list[list[Any]] = []
    number = 0
    while len(killed) < target:
        while len(running) < 6:
            number += 1
            path = tmp_path / "root" / "ns" / f"{number:016x}"
            log = tmp_path / f"log-{number}"
            builder = spawn(BUILDER, str(path), str(log), "--files", "6", "--sleep", "0.03")
            running.append([builder, rng.uniform(0.0, 0.4), path, log, None])
        now = time.monotonic()
        for item in running:
            if item[4] is None and (item[3].exists() or item[0].poll() is not None):
                item[4] = now + item[1]
        due = [item for item in running if item[4] is not None and item[4] <= now]
        if not due:
            time.sleep(0.002)
            continue
        item = due[0]
        process, path = item[0], item[2]
        running.remove(item)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate()
        if process.returncode == -signal.SIGKILL:
            killed.append(path)
        else:
            finished += 1
        assert check_whole(path) is None, path
    for item in running:
        item[0].kill()
        item[0].communicate()
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


RACE_READER = """
import json, os, sys, time, random
from pathlib import Path
from hydra_cache import CacheEntry
from hydra_cache.store import inuse
from hydra_cache.store.entry import METADATA_NAME
root, seconds = Path(sys.argv[1]), float(sys.argv[2])
rng = random.Random(os.getpid())
stats = {"reads": 0, "torn": 0, "removed_in_use": 0, "builds": 0, "refused": 0}
def build(staging):
    stats["builds"] += 1
    for n in range(4):
        (staging / f"part{n}").write_text(f"{os.getpid()}\\n" * 2000)
end = time.time() + seconds
while time.time() < end:
    path = root / "ns" / f"{rng.randrange(6):016x}"
    try:
        CacheEntry(path).get_or_build(build)
    except OSError:
        stats["refused"] += 1
        continue
    try:  # while this process holds the entry, gc and verify --repair must leave it alone
        meta = json.loads((path / METADATA_NAME).read_text())
        time.sleep(rng.uniform(0, 0.02))
        contents = {n: (path / n).read_bytes() for n in meta["files"]}
    except OSError:
        stats["removed_in_use"] += 1
        continue
    finally:
        inuse.release(path)  # the "job" ends: gc may take it from now on
    stats["reads"] += 1
    owners = {c.splitlines()[0] for c in contents.values()}
    sizes_ok = all(len(contents[n]) == meta["files"][n]["size"] for n in contents)
    if not sizes_ok or len(owners) != 1:
        stats["torn"] += 1
print(json.dumps(stats))
"""

MAINTAINER = """
import json, sys, time
from pathlib import Path
from hydra_cache.store.eviction import collect
from hydra_cache.store.verify import verify
root, seconds, what = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
stats = {"runs": 0, "evicted": 0, "false_damage": 0, "failed": 0}
end = time.time() + seconds
while time.time() < end:
    if not (root / ".hydra-cache").is_dir():
        time.sleep(0.01)
        continue
    stats["runs"] += 1
    if what == "gc":
        report = collect(root, max_size=0, min_idle=0, grace=0)
        stats["evicted"] += sum(r.kind == "entry" and r.outcome == "removed" for r in report.rows)
        failed = [f"{r.path}: {r.detail}" for r in report.rows if r.outcome == "failed"]
        stats["failed"] += len(failed)
        if failed:
            print(failed, file=sys.stderr)
    else:
        stats["false_damage"] += sum(1 for f in verify(root, repair=True) if f.verdict == "damaged")
print(json.dumps(stats))
"""


def test_builders_readers_gc_and_verify_repair_racing(tmp_path: Path, stress: int) -> None:
    """Readers build and read while ``gc --max-size 0`` and ``verify --repair`` loop."""
    seconds = str(4 * stress)
    root = tmp_path / "root"

    def start(script: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, str(root), seconds, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )

    readers = [start(RACE_READER) for _ in range(3)]
    gc, verifier = start(MAINTAINER, "gc"), start(MAINTAINER, "verify")
    totals: dict[str, int] = {}
    errors = {}
    for process in (*readers, gc, verifier):
        out, err = process.communicate(timeout=120 + 8 * stress)
        assert process.returncode == 0, err
        errors[process.pid] = err
        for name, count in json.loads(out).items():
            totals[name] = totals.get(name, 0) + count
    assert totals["reads"] > 0 and totals["evicted"] > 0, totals
    assert totals["torn"] == 0 and totals["removed_in_use"] == 0, totals
    assert totals["false_damage"] == 0, (totals, errors[verifier.pid])
    assert totals["failed"] == 0, (totals, errors[gc.pid])
    report(
        "builders, readers, gc --max-size 0, verify --repair racing",
        seconds=seconds,
        reads=totals["reads"],
        builds=totals["builds"],
        evicted=totals["evicted"],
        torn_served=0,
        removed_in_use=0,
        false_damage=0,
    )


NOT_ROOTS = """
import hashlib, json, os, stat, sys
from hydra_cache.cli import main
def digest(folder):
    h = hashlib.sha256()
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(top, name)
            info = os.lstat(full)
            h.update(f"{full}|{info.st_mode}|{info.st_size}|{info.st_mtime_ns}".encode())
            if stat.S_ISREG(info.st_mode):
                h.update(open(full, "rb").read())
    return h.hexdigest()
stats = {"folders": 0, "refused": 0, "touched": 0}
for folder in sys.argv[1:]:
    before = digest(folder)
    codes = [
        main(["gc", "--root", folder, "--max-size", "0", "--min-idle", "0s", "--grace", "0s"]),
        main(["gc", "--root", folder, "--older-than", "0s", "--dry-run"]),
        main(["verify", "--root", folder, "--repair"]),
        main(["ls", "--root", folder]),
    ]
    stats["folders"] += 1
    stats["refused"] += codes == [2, 2, 2, 2]
    stats["touched"] += digest(folder) != before
print(json.dumps(stats))
"""


def test_gc_over_folders_that_are_not_roots_touches_nothing(tmp_path: Path, stress: int) -> None:
    """Folders full of names that look like hydra-cache's (locks, keys, staging folders)."""
    rng = random.Random(11)
    folders = []
    for number in range(20 * stress):
        folder = tmp_path / f"project{number}"
        for name in ("Cargo.lock", "poetry.lock", f"{rng.getrandbits(64):016x}.lock"):
            (folder / "ns").mkdir(parents=True, exist_ok=True)
            (folder / "ns" / name).write_text("lock")
        key = folder / "ns" / f"{rng.getrandbits(64):016x}"
        key.mkdir()
        (key / ".hydra-cache.json").write_text('{"size_bytes": 1, "files": {}}')
        staging = folder / "ns" / f".{rng.getrandbits(64):016x}.staging.host.1.2.abcd1234"
        staging.mkdir()
        (staging / "data").write_text("x")
        (folder / ".hydra-cache-not").mkdir()
        old = time.time() - 30 * 86400
        for path in folder.rglob("*"):
            os.utime(path, (old, old), follow_symlinks=False)
        folders.append(str(folder))
    done = subprocess.run(
        [sys.executable, "-c", NOT_ROOTS, *folders],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats == {"folders": len(folders), "refused": len(folders), "touched": 0}
    report("gc, verify --repair and ls over folders that are not roots", folders=len(folders),
           refused=len(folders), foreign_files_touched=0)  # fmt: skip
