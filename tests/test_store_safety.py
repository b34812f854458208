"""Issue 11: maintenance that never destroys the wrong thing, each defect reproduced for real.

Every test runs real processes: builders, readers and the ``hydra-cache`` command. Builders on
another host are a process in its own UTS namespace with another hostname (``unshare --uts``),
builders in a container are a process in its own PID namespace (``unshare --pid --fork``);
both need root and are skipped with the reason otherwise. Only faults this machine cannot
produce are faked, one at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import BUILDER, clean_env, run
from hydra_cache import CacheEntry
from hydra_cache.store import inuse, journal, layout
from hydra_cache.store.publish import heartbeat
from test_reliability import check_whole

OTHER_HOST = ["unshare", "--uts", "sh", "-c", 'hostname far-away-node && exec "$@"', "sh"]
OTHER_PIDNS = ["unshare", "--pid", "--fork"]


def _can(prefix: list[str]) -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    done = subprocess.run([*prefix, "true"], capture_output=True, check=False)
    return done.returncode == 0


NAMESPACES = {
    "another host": pytest.param(
        OTHER_HOST,
        id="another host",
        marks=pytest.mark.skipif(
            not _can(OTHER_HOST), reason="needs root and unshare --uts for another hostname"
        ),
    ),
    "another PID namespace": pytest.param(
        OTHER_PIDNS,
        id="another PID namespace",
        marks=pytest.mark.skipif(
            not _can(OTHER_PIDNS), reason="needs root and unshare --pid --fork"
        ),
    ),
}
ELSEWHERE = pytest.mark.parametrize("prefix", list(NAMESPACES.values()))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, chattr, mount)")


def spawn_in(prefix: list[str], *args: str) -> subprocess.Popen[str]:
    """A builder (or any helper) started under ``prefix`` (an unshare), output captured."""
    return subprocess.Popen(
        [*prefix, sys.executable, str(BUILDER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["-m", "hydra_cache", *args], cwd=cwd, env=clean_env())


def wait_for(check: Callable[[], object], seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not check():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.02)


def tree_digest(folder: Path) -> str:
    """Names, types, sizes, modes, mtimes and contents of everything under ``folder``."""
    digest = hashlib.sha256()
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(top, name)
            info = os.lstat(full)
            digest.update(
                f"{os.path.relpath(full, folder)}|{info.st_mode}|{info.st_size}|"
                f"{info.st_mtime_ns}\n".encode()
            )
            if stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(full).encode())
            elif stat.S_ISREG(info.st_mode):
                with open(full, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def make(root: Path, key: str, *, ns: str = "ns", files: int = 1, age: float = 0.0) -> Path:
    """An entry built in this process, which then stops using it (as a finished job would)."""
    path = root / ns / key
    CacheEntry(path).get_or_build(
        lambda s: [(s / f"f{n}").write_text(f"{n}" * 100) for n in range(files)]
    )
    inuse.release(path)
    if age:
        stamp = time.time() - age
        os.utime(path / layout.METADATA_NAME, (stamp, stamp))
    return path


def backdate(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def staging_of(path: Path) -> Path:
    found = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.staging.")]
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------- 1. live builds elsewhere


@ELSEWHERE
def test_gc_never_removes_a_live_build_on_another_host_or_pid_namespace(
    prefix: list[str], tmp_path: Path
) -> None:
    """Defect 1: the lock was never checked, and mtime aged a build writing into subfolders."""
    root, log = tmp_path / "root", tmp_path / "log"
    path = root / "ns" / ("a" * 16)
    builder = spawn_in(prefix, str(path), str(log), "--files", "8", "--sleep", "0.4", "--nested")
    wait_for(log.exists)
    staging = staging_of(path)
    backdate(staging, 3 * 86400)  # as old as the mtime of a folder nobody writes into
    done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--grace", "0s",
               "--min-idle", "0s")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert staging.exists(), f"gc removed a live build: {done.stdout}"
    _out, err = builder.communicate(timeout=60)
    assert builder.returncode == 0, err
    assert check_whole(path) is None and CacheEntry(path).ready
    verified = cli(tmp_path, "verify", "--root", str(root))
    assert verified.returncode == 0, verified.stdout


@pytest.mark.skipif(not _can(OTHER_HOST), reason="needs root and unshare --uts")
def test_a_dead_build_of_another_host_waits_the_long_grace_with_its_lock_free(
    tmp_path: Path,
) -> None:
    root, log = tmp_path / "root", tmp_path / "log"
    path = root / "ns" / ("b" * 16)
    killed = spawn_in(OTHER_HOST, str(path), str(log), "--kill-at", "build")
    killed.communicate(timeout=60)
    staging = staging_of(path)
    assert ".staging.far-away-node." in staging.name
    backdate(staging, 2 * 3600)  # past --grace: a local dead build would go
    kept = cli(tmp_path, "gc", "--root", str(root), "--older-than", "30d", "--grace", "1h")
    assert kept.returncode == 0 and staging.exists(), kept.stdout
    backdate(staging, 25 * 3600)  # silent for longer than the 24 h grace of unknown builders
    gone = cli(tmp_path, "gc", "--root", str(root), "--older-than", "30d", "--grace", "1h")
    assert gone.returncode == 0 and not staging.exists(), gone.stdout
    assert "staging folder of a build on another host or PID namespace" in gone.stdout


def test_a_running_build_refreshes_its_heartbeat(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    backdate(staging, 86400)
    with heartbeat(staging, interval=0.05):
        wait_for(lambda: time.time() - staging.stat().st_mtime < 60)
    refreshed = staging.stat().st_mtime
    time.sleep(0.2)
    assert staging.stat().st_mtime == refreshed, "the heartbeat outlived the build"


# ------------------------------------------------ 2. foreign files, dry run, root marker


FOREIGN = {
    "Cargo.lock": "[[package]]\n",
    "poetry.lock": "# poetry\n",
    "src/main.rs": "fn main() {}\n",
    "vendor/Gemfile.lock": "GEM\n",
    "notes/.cache.staging.host.1.abcd1234/keep": "x",
}


def plant(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    backdate(folder / "Cargo.lock", 30 * 86400)


def test_gc_verify_and_ls_refuse_a_folder_that_is_not_a_root(tmp_path: Path) -> None:
    """Defect 2: gc deleted Cargo.lock (an "orphaned lock") in any folder it was pointed at."""
    project = tmp_path / "project"
    plant(project, FOREIGN)
    before = tree_digest(project)
    for args in (
        ["gc", "--max-size", "0", "--grace", "0s", "--min-idle", "0s"],
        ["gc", "--older-than", "1s", "--dry-run"],
        ["verify", "--repair"],
        ["ls"],
    ):
        done = cli(tmp_path, *args, "--root", str(project))
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1
        assert "is not a hydra-cache root (it has no .hydra-cache/ folder)" in done.stderr
    assert tree_digest(project) == before


def test_gc_touches_only_its_own_names_and_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make(root, "c" * 16, age=7200)
    make(root, "d" * 16, age=7200)
    plant(root / "ns", FOREIGN)
    (root / "ns" / "eeeeeeeeeeeeeeee.lock").write_text("")  # a lock of ours, entry gone
    backdate(root / "ns" / "eeeeeeeeeeeeeeee.lock", 86400)
    (root / "ns" / "0123456789abcdef").mkdir()  # a key-like folder that is not an entry
    (root / "ns" / "0123456789abcdef" / "data").write_text("someone's")
    before = tree_digest(root)
    dry = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--grace", "0s",
              "--min-idle", "0s", "--dry-run")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "would remove 2 entries" in dry.stdout and "1 leftover\n" in dry.stdout
    assert tree_digest(root) == before, "a dry run wrote into the root"
    done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--grace", "0s",
               "--min-idle", "0s")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (root / "ns" / "eeeeeeeeeeeeeeee.lock").exists()
    for name, text in FOREIGN.items():
        assert (root / "ns" / name).read_text() == text, name
    assert (root / "ns" / "0123456789abcdef" / "data").read_text() == "someone's"


@needs_root
def test_a_root_through_someone_elses_symlink_is_refused(tmp_path: Path) -> None:
    """Defect 5: a link planted in another user's 0755 folder became the victim's root."""
    victim = tmp_path / "victim"
    make(victim, "f" * 16, age=7200)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    (theirs / "cache").symlink_to(victim)
    os.lchown(theirs / "cache", 65534, 65534)
    before = tree_digest(victim)
    done = cli(tmp_path, "gc", "--root", str(theirs / "cache"), "--max-size", "0",
               "--min-idle", "0s")  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"reached through the symlink {theirs / 'cache'}" in done.stderr
    assert "owned by uid 65534" in done.stderr
    (theirs / "mine").symlink_to(victim)  # our link, but in their folder: still theirs
    done = cli(tmp_path, "gc", "--root", str(theirs / "mine"), "--max-size", "0")
    assert done.returncode == 2 and f"in the folder {theirs}" in done.stderr
    assert tree_digest(victim) == before
    (tmp_path / "own-link").symlink_to(victim)  # ours, in a folder of ours: accepted
    done = cli(tmp_path, "gc", "--root", str(tmp_path / "own-link"), "--max-size", "0",
               "--min-idle", "0s")  # fmt: skip
    assert done.returncode == 0 and "removed 1 entry," in done.stdout, done.stderr


# ------------------------------------------------------------------ 3. entries in use


@pytest.mark.parametrize(
    "prefix",
    [pytest.param([], id="this host"), list(NAMESPACES.values())[1]],
)
def test_gc_never_evicts_an_entry_a_running_job_reads(prefix: list[str], tmp_path: Path) -> None:
    """Defect 3: readers took no lock, and --max-size evicted under them (111 of 201 failed)."""
    root, log = tmp_path / "root", tmp_path / "log"
    path = root / "ns" / ("1" * 16)
    built = spawn_in([], str(path), str(log), "--files", "201", "--sleep", "0")
    assert built.wait(timeout=60) == 0
    backdate(path / layout.METADATA_NAME, 7200)
    reader = spawn_in(prefix, str(path), str(log), "--read-for", "3")
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "OUTCOME hit"
    assert reader.stdout.readline().startswith("READING 202")  # and metadata
    done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--min-idle", "0s")
    assert done.returncode == 0, done.stderr
    assert f"skipped (in use) {path}" in done.stdout
    assert "in use by a process on this host" in done.stdout
    assert "could not reach --max-size 0 B" in done.stdout
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert out.strip().endswith("failed=0"), out
    after = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--min-idle", "0s")
    assert "removed 1 entry," in after.stdout and not path.exists()


def test_max_size_evicts_lru_first_skipping_entries_in_use(tmp_path: Path) -> None:
    root, log = tmp_path / "root", tmp_path / "log"
    oldest, middle, newest = (root / "ns" / (c * 16) for c in "234")
    for number, path in enumerate((oldest, middle, newest)):
        spawn_in([], str(path), str(log), "--files", "1").communicate(timeout=60)
        backdate(path / layout.METADATA_NAME, 86400 * (3 - number))

    def size(path: Path) -> int:
        return int(json.loads((path / layout.METADATA_NAME).read_text())["size_bytes"])

    reader = spawn_in([], str(oldest), str(log), "--read-for", "30")
    assert reader.stdout is not None and reader.stdout.readline().strip() == "OUTCOME hit"
    try:
        done = cli(tmp_path, "gc", "--root", str(root), "--max-size",
                   str(size(oldest) + size(newest)), "--min-idle", "0s")  # fmt: skip
    finally:
        reader.kill()
        reader.communicate()
    assert done.returncode == 0
    assert oldest.exists() and not middle.exists() and newest.exists(), done.stdout
    assert "could not reach" not in done.stdout


def test_min_idle_protects_entries_used_recently_on_any_host(tmp_path: Path) -> None:
    root = tmp_path / "root"
    recent = make(root, "5" * 16, age=600)  # used 10 min ago by a job that has exited
    done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0")
    assert recent.exists() and "< --min-idle 3600s" in done.stdout
    assert "could not reach --max-size 0 B" in done.stdout


# ------------------------------------------------------------------- 6. special files


def test_a_build_that_leaves_a_fifo_fails_naming_it(tmp_path: Path) -> None:
    """Defect 6: a FIFO in an entry hung the builder (and its waiters) forever."""
    path = tmp_path / "root" / "ns" / ("6" * 16)
    builder = spawn_in([], str(path), str(tmp_path / "log"), "--fifo")
    _out, err = builder.communicate(timeout=60)
    assert builder.returncode == 1
    assert f"ERROR SpecialFileError: {staging_prefix(path)}" in err
    assert "/pipe is a FIFO: a cache entry may hold only files, folders and symlinks" in err
    assert not CacheEntry(path).ready and not CacheEntry(path).leftovers()


def staging_prefix(path: Path) -> str:
    return str(path.parent / layout.staging_prefix(path))


def test_verify_reports_planted_special_files_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = make(root, "7" * 16, files=2)
    (path / "f0").unlink()
    os.mkfifo(path / "f0")
    os.mkfifo(path / "extra-pipe")
    done = cli(tmp_path, "verify", "--root", str(root))  # a blocking open never returns
    assert done.returncode == 1
    assert "f0: a FIFO where the entry had a file" in done.stdout
    assert "extra-pipe: a FIFO planted in the entry" in done.stdout
    rebuilt = spawn_in([], str(path), str(tmp_path / "log"), "--verify-on-hit")
    out, err = rebuilt.communicate(timeout=60)
    assert rebuilt.returncode == 0 and out.strip() == "OUTCOME built", err


@pytest.mark.parametrize("flush", [False, True])
def test_fingerprint_records_every_size_exactly_and_sees_a_change_in_any(
    flush: bool, tmp_path: Path
) -> None:
    """Small files are hashed by the caller and large ones on the pool: both must land in the
    record under their own names, equal to an independent hash, and a change to any one of
    them (a large one among small ones too) must be reported."""
    from hydra_cache.store import integrity

    folder = tmp_path / "entry"
    (folder / "sub").mkdir(parents=True)
    sizes = [0, 1, 1023, 1 << 20, 5, (1 << 18) - 1, 1 << 18, 3 * (1 << 20) + 7, 64]
    for index, size in enumerate(sizes):
        where = folder / ("sub" if index % 2 else "") / f"f{index}"
        where.write_bytes(os.urandom(size))
    os.mkfifo(folder / "sub" / "pipe")
    record = integrity.fingerprint(folder, flush=flush)
    for index, size in enumerate(sizes):
        name = f"sub/f{index}" if index % 2 else f"f{index}"
        data = (folder / name).read_bytes()
        assert record[name] == {"size": size, "sha256": hashlib.sha256(data).hexdigest()}
    assert record.pop("sub/pipe") == {"size": 0, "special": "FIFO"}
    (folder / "sub" / "pipe").unlink()
    assert integrity.damage(folder, record) == []
    big = folder / "sub" / "f7"
    data = bytearray(big.read_bytes())
    data[-1] ^= 1
    big.write_bytes(bytes(data))
    assert integrity.damage(folder, record) == ["sub/f7: content changed"]


# ---------------------------------------------------------------------- 7. the journal


@pytest.mark.parametrize("plant_as", ["symlink", "fifo"])
def test_a_planted_journal_is_never_followed_or_waited_on(plant_as: str, tmp_path: Path) -> None:
    """Defect 7: open(..., "a") appended through a planted link and blocked on a FIFO."""
    root = tmp_path / "root"
    (root / ".hydra-cache").mkdir(parents=True)
    target = tmp_path / "their-file"
    target.write_text("theirs\n")
    if plant_as == "symlink":
        (root / ".hydra-cache" / "journal.jsonl").symlink_to(target)
    else:
        os.mkfifo(root / ".hydra-cache" / "journal.jsonl")
    builder = spawn_in([], str(root / "ns" / ("8" * 16)), str(tmp_path / "log"))
    out, err = builder.communicate(timeout=60)
    assert builder.returncode == 0 and out.strip() == "OUTCOME built", err
    assert "could not journal it" in err and "where hydra-cache expects its journal" in err
    assert target.read_text() == "theirs\n"


def test_a_torn_journal_tail_is_repaired_before_the_next_record(tmp_path: Path) -> None:
    """Defect 8: a line cut by a kill or a full disk swallowed the next record."""
    root = tmp_path / "root"
    make(root, "9" * 16)
    path = root / ".hydra-cache" / "journal.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + whole[: len(whole) // 2])  # what a SIGKILL mid-append leaves
    builder = spawn_in([], str(root / "ns" / ("a" * 15 + "0")), str(tmp_path / "log"))
    assert builder.wait(timeout=60) == 0
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["publish", "publish"]
    assert path.read_bytes().endswith(b"\n")


_APPENDER = """
import sys
from pathlib import Path
from hydra_cache.store import journal
root, number = Path(sys.argv[1]), 0
while True:
    number += 1
    journal.append(root, "cleanup", path=f"/x/{number}", pad="p" * 14000)
"""


def test_appenders_sigkilled_at_random_never_leave_a_journal_that_loses_records(
    tmp_path: Path,
) -> None:
    """Defect 8, with real kills: processes appending near-maximal lines are SIGKILLed at
    random moments. Whatever each kill left (a whole line, or a line cut between pages), the
    next record must land on a line of its own and every earlier whole record must stay."""
    import random

    root = tmp_path / "root"
    path = root / ".hydra-cache" / "journal.jsonl"
    torn = 0
    for attempt in range(12):
        child = subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(root)], env=clean_env(), cwd=tmp_path
        )
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        data = path.read_bytes()
        torn += not data.endswith(b"\n")
        whole = data[: data.rfind(b"\n") + 1]
        journal.append(root, "probe", attempt=attempt)
        after = path.read_bytes()
        assert after.startswith(whole), "a whole record was lost"
        lines = after.splitlines()
        assert all(json.loads(line) for line in lines)
        last = json.loads(lines[-1])
        assert (last["event"], last["attempt"]) == ("probe", attempt)
    probes = [r["attempt"] for r in journal.records(root) if r["event"] == "probe"]
    assert probes == list(range(12))
    print(f"{torn} of 12 kills left a torn line")


def test_journal_lines_and_the_journal_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    journal.append(root, "publish", namespace="ns", key="k" * 16, payload={"x": "y" * 10**6})
    line = (root / ".hydra-cache" / "journal.jsonl").read_bytes()
    assert len(line) < journal.MAX_LINE
    assert json.loads(line)["payload"]["see"] == "metadata"
    monkeypatch.setattr(journal, "MAX_BYTES", 4096)
    for number in range(40):
        journal.append(root, "cleanup", path=f"/x/{number}")
    assert (root / ".hydra-cache" / "journal.jsonl").stat().st_size <= 4096
    assert (root / ".hydra-cache" / "journal.1.jsonl").exists()
    kept = [r["path"] for r in journal.records(root) if r["event"] == "cleanup"]
    assert kept[-1] == "/x/39" and kept == sorted(kept, key=lambda p: int(p.rsplit("/")[-1]))


@contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@needs_root
def test_gc_frees_space_on_a_full_disk_and_journals_after(tmp_path: Path) -> None:
    """Defect 8: gc renamed one entry aside, failed to journal it and exited, freeing nothing."""
    with small_disk(tmp_path / "small", "2m") as disk:
        root = disk / "root"
        paths = [make(root, f"{n:016x}", files=4, age=7200) for n in range(3)]
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk to the last block
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(filler)
        with pytest.raises(OSError):
            journal.append(root, "probe", pad="x" * 8000)  # the disk is full: no journal
        before = os.statvfs(disk).f_bfree
        done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--min-idle", "0s")
        assert done.returncode == 0, done.stderr
        assert "removed 3 entries" in done.stdout and "could not journal" not in done.stdout
        assert not any(p.exists() for p in paths)
        assert os.statvfs(disk).f_bfree > before
        deletes = [r["key"] for r in journal.records(root) if r["event"] == "delete"]
        assert sorted(deletes) == sorted(p.name for p in paths)


# --------------------------------------------------------------------- 8. honest removal


@needs_root
def test_a_removal_that_fails_is_reported_and_collected_later(tmp_path: Path) -> None:
    """Defect 9: rmtree(ignore_errors=True) left files on disk while gc printed "removed"."""
    root = tmp_path / "root"
    path = root / "ns" / ("b" * 16)
    spawn_in([], str(path), str(tmp_path / "log"), "--nested").communicate(timeout=60)
    stuck = path / "sub" / "deeper"
    if subprocess.run(["chattr", "+i", str(stuck)], check=False).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--min-idle", "0s")
    finally:
        moved = list((root / "ns").glob(f".{path.name}.evicting.*"))
        for folder in moved:
            subprocess.run(["chattr", "-i", str(folder / "sub" / "deeper")], check=False)
    assert done.returncode == 0
    assert f"failed to remove {path}" in done.stdout and "removed 0 entries" in done.stdout
    assert "Operation not permitted" in done.stdout
    assert len(moved) == 1 and not path.exists()  # out of place: readers see a miss
    later = cli(tmp_path, "gc", "--root", str(root), "--older-than", "30d", "--grace", "0s")
    assert "moved-aside copy" in later.stdout and not moved[0].exists()


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to run as nobody")
def test_read_only_subfolders_are_made_writable_and_removed(tmp_path: Path) -> None:
    """As a user (root ignores permissions): a read-only subfolder no longer survives gc."""
    probe = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
         "-c", "import filelock, hydra_cache"],
        capture_output=True, check=False, cwd="/",
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("this interpreter's packages are not readable by uid 65534 (a 0700 venv)")
    home = Path(tempfile.mkdtemp(prefix="hc-nobody-"))  # pytest's own folder is 0700 root
    try:
        root = home / "root"
        path = root / "ns" / ("c" * 16)
        spawn_in([], str(path), str(tmp_path / "log"), "--nested").communicate(timeout=60)
        for folder in (path / "sub" / "deeper", path / "sub"):
            folder.chmod(0o555)
        subprocess.run(["chown", "-R", "65534:65534", str(home)], check=True)
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-m", "hydra_cache", "gc", "--root", str(root), "--max-size", "0", "--min-idle",
             "0s"],
            capture_output=True, text=True, check=False,
            env=clean_env(HOME=str(home), XDG_STATE_HOME=str(home / "state")),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "removed 1 entry," in done.stdout, done.stdout
        assert [p.name for p in (root / "ns").iterdir()] == [f"{path.name}.lock"]
    finally:
        shutil.rmtree(home)


def test_gc_collects_damaged_copies_after_the_grace(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = make(root, "d" * 16)
    (path / "f0").write_text("changed")
    assert cli(tmp_path, "verify", "--root", str(root), "--repair").returncode == 1
    copies = list((root / ".hydra-cache" / "damaged").iterdir())
    assert len(copies) == 1
    kept = cli(tmp_path, "gc", "--root", str(root), "--older-than", "30d")
    assert copies[0].exists(), kept.stdout
    gone = cli(tmp_path, "gc", "--root", str(root), "--older-than", "30d", "--grace", "0s")
    assert "damaged copy moved aside by verify" in gone.stdout and not copies[0].exists()


# ------------------------------------------------------------------------ 9. verify


def test_verify_racing_gc_reports_evictions_not_damage_and_never_crashes(
    tmp_path: Path, stress: int
) -> None:
    """Defect 10: entries evicted mid-check were called damaged; --repair crashed."""
    root = tmp_path / "root"
    for number in range(30 * stress):
        make(root, f"{number:016x}", files=5)
    gc = subprocess.Popen(
        [sys.executable, "-m", "hydra_cache", "gc", "--root", str(root), "--max-size", "0",
         "--min-idle", "0s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    runs = []
    while gc.poll() is None or not runs:
        runs.append(cli(tmp_path, "verify", "--root", str(root), "--repair", "--format", "json"))
    gc.communicate()
    for done in runs:
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert all(row["verdict"] == "evicted" for row in json.loads(done.stdout))
    assert not (root / ".hydra-cache" / "damaged").exists()


def test_verify_records_empty_folders_and_links_to_folders(tmp_path: Path) -> None:
    """Defect 11: empty folders and symlinks to folders were not part of the record."""
    root = tmp_path / "root"
    path = root / "ns" / ("e" * 16)
    builder = spawn_in([], str(path), str(tmp_path / "log"), "--nested", "--empty-dir",
                       "--dir-link")  # fmt: skip
    assert builder.wait(timeout=60) == 0
    assert cli(tmp_path, "verify", "--root", str(root)).returncode == 0
    (path / "empty").rmdir()
    (path / "linked").unlink()
    (path / "linked").symlink_to("/etc")
    done = cli(tmp_path, "verify", "--root", str(root))
    assert done.returncode == 1
    assert "empty: removed" in done.stdout and "linked: symlink target changed" in done.stdout


def test_a_build_that_copies_another_entrys_metadata_is_not_damaged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    upstream = make(root, "f" * 16)
    path = root / "ns" / ("0" * 16)
    builder = spawn_in([], str(path), str(tmp_path / "log"), "--copy-metadata", str(upstream))
    assert builder.wait(timeout=60) == 0
    done = cli(tmp_path, "verify", "--root", str(root))
    assert done.returncode == 0, done.stdout


DAMAGER = """
import sys, time
from pathlib import Path
target = Path(sys.argv[1]) / "part0"
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        if target.read_text() != "evil":
            target.write_text("evil")
    except OSError:
        pass
    time.sleep(0.002)
"""


def test_verify_on_hit_stops_after_one_rebuild_that_is_damaged_again(tmp_path: Path) -> None:
    """Defect 11: an entry damaged again at once was rebuilt on every hit, forever."""
    root = tmp_path / "root"
    path = root / "ns" / ("1" * 15 + "0")
    assert spawn_in([], str(path), str(tmp_path / "log")).wait(timeout=60) == 0
    damager = subprocess.Popen([sys.executable, "-c", DAMAGER, str(path), "20"])
    try:
        wait_for(lambda: (path / "part0").read_text() == "evil")
        checked = spawn_in([], str(path), str(tmp_path / "log"), "--verify-on-hit", "--hits", "5")
        _out, err = checked.communicate(timeout=60)
    finally:
        damager.kill()
        damager.wait()
    assert checked.returncode == 1
    assert (
        "ERROR DamagedEntryError: " in err and "is damaged again right after it was rebuilt" in err
    )
    assert len(list((root / ".hydra-cache" / "damaged").iterdir())) == 1


# ------------------------------------------------------- 10. clocks, roots, timeouts


def test_future_dated_leftovers_and_entries_are_collected(tmp_path: Path) -> None:
    """Defect 13: negative ages kept future-dated staging folders and entries forever."""
    root, year = tmp_path / "root", 365 * 86400
    killed = root / "ns" / ("2" * 16)
    spawn_in([], str(killed), str(tmp_path / "log"), "--kill-at", "build").communicate()
    staging = staging_of(killed)
    backdate(staging, -year)
    future = make(root, "3" * 16)
    backdate(future / layout.METADATA_NAME, -year)
    done = cli(tmp_path, "gc", "--root", str(root), "--older-than", "30d", "--grace", "1h")
    assert done.returncode == 0
    assert not staging.exists() and not future.exists(), done.stdout


def test_a_holder_with_a_clock_ahead_is_described_without_negative_ages(tmp_path: Path) -> None:
    path = tmp_path / "root" / "ns" / ("4" * 16)
    path.parent.mkdir(parents=True)
    lock = Path(str(path) + ".lock")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom filelock import FileLock\n"
         f"held = FileLock({str(lock)!r}); held.acquire(); print('held', flush=True)\n"
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        record = {"host": "far-away-node", "pid": 7, "since": time.time() + 3600}
        lock.write_text(json.dumps(record))  # its clock runs an hour ahead of ours
        waiter = spawn_in([], str(path), str(tmp_path / "log"), "--timeout", "1")
        _out, err = waiter.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert waiter.returncode == 1
    assert "by its clock, which is ahead of ours" in err and "for -" not in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOME": ""}, "$HOME is '', so the default cache root"),
        ({"HOME": "  "}, "$HOME is '  ', so the default cache root"),
        ({"HYDRA_CACHE_ROOT": "  "}, "$HYDRA_CACHE_ROOT: the cache root '  ' is blank"),
        ({"HYDRA_CACHE_ROOT": "/"}, "$HYDRA_CACHE_ROOT: cache root / is a system or home"),
    ],
    ids=["HOME empty", "HOME blank", "root blank", "root is /"],
)
def test_odd_roots_are_refused_before_anything_is_created(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    """Defect 14: HOME= gave /.cache/hydra-cache; a blank root made a folder named '  '."""
    before = sorted(os.listdir(tmp_path))
    done = run(["-m", "hydra_cache", "ls"], cwd=tmp_path, env=clean_env(**env))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert message in done.stderr and "fix: " in done.stderr
    assert sorted(os.listdir(tmp_path)) == before
    assert not os.path.exists("/.cache/hydra-cache")


def test_timeout_zero_tries_the_lock_once(tmp_path: Path) -> None:
    """Defect 15: timeout=0 raised "built by another process" without trying the lock."""
    path = tmp_path / "root" / "ns" / ("5" * 16)
    free = spawn_in([], str(path), str(tmp_path / "log"), "--timeout", "0")
    out, err = free.communicate(timeout=60)
    assert free.returncode == 0 and out.strip() == "OUTCOME built", err
    busy = tmp_path / "root" / "ns" / ("6" * 16)
    slow = spawn_in([], str(busy), str(tmp_path / "log2"), "--files", "3", "--sleep", "1")
    wait_for((tmp_path / "log2").exists)
    waiter = spawn_in([], str(busy), str(tmp_path / "log3"), "--timeout", "0")
    _out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 1 and "ERROR LockTimeout: gave up after 0s" in err
    assert slow.wait(timeout=60) == 0
    assert not (tmp_path / "log3").exists()


def test_a_killed_local_build_is_collected_after_the_grace(tmp_path: Path) -> None:
    """A builder SIGKILLed on this host: its staging folder is dead at once (lock free, pid
    gone), so gc takes it after --grace; the lock file goes with it."""
    root = tmp_path / "root"
    path = root / "ns" / ("7" * 16)
    killed = spawn_in([], str(path), str(tmp_path / "log"), "--kill-at", "build")
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    done = cli(tmp_path, "gc", "--root", str(root), "--older-than", "30d", "--grace", "0s")
    assert "staging folder of a dead build" in done.stdout
    assert "lock of an entry that is gone" in done.stdout
    assert sorted(os.listdir(root / "ns")) == []


# ------------------------------------------------------------------- 12. big metadata


def test_an_entry_with_metadata_over_64_mib_is_seen_by_ls_verify_and_gc(tmp_path: Path) -> None:
    """Defect 12: the metadata reader stopped at 64 MiB, so big entries were invisible."""
    root = tmp_path / "root"
    path = make(root, "8" * 16, age=7200)
    meta_path = path / layout.METADATA_NAME
    meta = json.loads(meta_path.read_text())
    meta["inputs"] = {"padding": "x" * (65 << 20)}  # as big as 200,000 files' records
    meta_path.write_text(json.dumps(meta))
    backdate(meta_path, 7200)
    listed = cli(tmp_path, "ls", "--root", str(root), "--format", "json")
    assert [row["key"] for row in json.loads(listed.stdout)] == [path.name]
    assert cli(tmp_path, "verify", "--root", str(root)).returncode == 0
    done = cli(tmp_path, "gc", "--root", str(root), "--max-size", "0", "--min-idle", "0s")
    assert "removed 1 entry," in done.stdout and not path.exists()
