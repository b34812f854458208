"""A real builder process for the entry tests: races, kills and broken locks.

usage: builder.py PATH LOG [--files N] [--sleep S] [--kill-at POINT] [--noop-flock]
       [--start-file F] [--timeout T] [--log-interval S] [--fail] [--nested] [--fifo]
       [--empty-dir] [--dir-link] [--copy-metadata FROM] [--read-for S] [--verify-on-hit]

Each build appends ``BUILD <pid>`` to LOG and writes N files holding its pid, sleeping S
seconds between files, so a mixed entry would show two pids. ``--kill-at`` SIGKILLs this
process for real at one point of the publish: ``build`` (mid-build), ``fsync``, ``metadata``
(just before the metadata file is moved into place) or ``rename`` (just before the publish).
``--nested`` writes the parts two folders deep (so the staging folder's own mtime never
moves), ``--fifo`` leaves a FIFO in the build, ``--read-for S`` keeps reading every file of the
entry it got for S seconds and prints ``READ ok=N failed=M`` (a job using the entry).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path


def install_noop_flock() -> None:
    """The one fault faked: a filesystem where flock "succeeds" without excluding anybody
    (as on some Lustre/GPFS/NFS mounts)."""
    import fcntl

    fcntl.flock = lambda fd, op: None  # type: ignore[assignment]


def install_flock_enosys() -> None:
    """The one fault faked: a filesystem with no flock at all (ENOSYS)."""
    import errno
    import fcntl

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    fcntl.flock = no_flock  # type: ignore[assignment]


def install_late_visibility(seconds: float) -> None:
    """The one fault faked: a filesystem (NFS) that keeps showing a just-published entry as
    absent on this host for a while after it first exists."""
    real_lstat = os.lstat
    first_seen: list[float] = []

    def late_lstat(path: object, *a: object, **k: object) -> os.stat_result:
        result = real_lstat(path, *a, **k)  # type: ignore[arg-type]
        if str(path).endswith(".hydra-cache.json"):
            first_seen[:] = first_seen or [time.time()]
            if time.time() - first_seen[0] < seconds:
                raise FileNotFoundError(2, "not visible yet", str(path))
        return result

    os.lstat = late_lstat  # type: ignore[assignment]


def kill_self_on(module: object, name: str) -> None:
    """SIGKILL this process, for real, at its next call of module.name."""
    real = getattr(module, name)

    def wrapper(*a: object, **k: object) -> object:
        os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)

    setattr(module, name, wrapper)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("log")
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=0.01)
    parser.add_argument("--kill-at", choices=["build", "fsync", "metadata", "rename"])
    parser.add_argument("--noop-flock", action="store_true")
    parser.add_argument("--start-file")
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--log-interval", type=float, default=30.0)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--hide-for", type=float, default=0.0)
    parser.add_argument("--patience", type=float, help="visibility patience (network fs)")
    parser.add_argument("--lock", choices=["auto", "flock", "soft"])
    parser.add_argument("--flock-enosys", action="store_true")
    parser.add_argument("--nested", action="store_true")
    parser.add_argument("--fifo", action="store_true")
    parser.add_argument("--empty-dir", action="store_true")
    parser.add_argument("--dir-link", action="store_true")
    parser.add_argument("--copy-metadata")
    parser.add_argument("--read-for", type=float, default=0.0)
    parser.add_argument("--verify-on-hit", action="store_true")
    parser.add_argument("--hits", type=int, default=1, help="call get_or_build this often")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )

    if args.noop_flock:
        install_noop_flock()
    if args.hide_for:
        install_late_visibility(args.hide_for)
    if args.flock_enosys:
        install_flock_enosys()
    from hydra_cache import CacheEntry

    pid = os.getpid()

    def build(staging: Path) -> None:
        with open(args.log, "a") as log:
            log.write(f"BUILD {pid}\n")
        if args.fail:
            (staging / "partial").write_text("x")
            raise RuntimeError("build failed on purpose")
        target = staging / "sub" / "deeper" if args.nested else staging
        target.mkdir(parents=True, exist_ok=True)
        for number in range(args.files):
            (target / f"part{number}").write_text(f"{pid}\n" * 1000)
            if args.kill_at == "build" and number == args.files // 2:
                os.kill(pid, signal.SIGKILL)
            time.sleep(args.sleep)
        if args.fifo:
            os.mkfifo(staging / "pipe")
        if args.empty_dir:
            (staging / "empty").mkdir()
        if args.dir_link:
            (staging / "linked").symlink_to("sub" if args.nested else ".")
        if args.copy_metadata:
            upstream = Path(args.copy_metadata) / ".hydra-cache.json"
            (staging / ".hydra-cache.json").write_bytes(upstream.read_bytes())
        if args.kill_at == "fsync":
            kill_self_on(os, "fsync")
        if args.kill_at == "metadata":
            kill_self_on(os, "replace")
        if args.kill_at == "rename":
            kill_self_on(os, "rename")

    if args.start_file:
        while not os.path.exists(args.start_file):
            time.sleep(0.005)
    entry = CacheEntry(
        args.path,
        wait_log_interval=args.log_interval,
        visibility_patience=args.patience,
        lock=args.lock,
        verify_on_hit=args.verify_on_hit,
    )
    try:
        for hit in range(args.hits):
            if hit:
                time.sleep(0.05)
            entry.get_or_build(build, timeout=args.timeout)
    except Exception as error:  # report for the test, then fail
        print(f"ERROR {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"OUTCOME {entry.last_outcome}", flush=True)
    if args.read_for:
        read_for(Path(args.path), args.read_for)
    return 0


def read_for(path: Path, seconds: float) -> None:
    """Keep reading every file of the entry, as a job using it would; count failed reads."""
    names = [p for p in sorted(path.rglob("*")) if p.is_file()]
    ok = failed = 0
    end = time.time() + seconds
    print(f"READING {len(names)} files", flush=True)
    while time.time() < end:
        for name in names:
            try:
                name.read_bytes()
                ok += 1
            except OSError:
                failed += 1
        time.sleep(0.01)
    print(f"READ ok={ok} failed={failed}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
