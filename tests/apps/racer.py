"""A long-lived racer for the round-based race test: one process, many rounds.

usage: racer.py ROOT ROUNDS SYNC_DIR [--noop-flock]

For round r it waits for SYNC_DIR/go-r, calls get_or_build on key r (each build appends
``BUILD r pid`` to SYNC_DIR/builds and writes 4 files holding its pid), checks the entry it
got is whole, then writes SYNC_DIR/done-r-pid (``ok`` or what was wrong).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> int:
    root, rounds, sync = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    if "--noop-flock" in sys.argv:
        import fcntl

        fcntl.flock = lambda fd, op: None  # type: ignore[assignment]  # the one faked fault
    from hydra_cache import CacheEntry

    pid = os.getpid()
    for number in range(rounds):
        while not (sync / f"go-{number}").exists():
            time.sleep(0.002)

        def build(staging: Path, number: int = number) -> None:
            with open(sync / "builds", "a") as log:
                log.write(f"BUILD {number} {pid}\n")
            for part in range(4):
                (staging / f"part{part}").write_text(f"{pid}\n" * 500)
                time.sleep(0.005)

        entry = CacheEntry(root / "race" / f"{number:016x}")
        path = entry.get_or_build(build)
        owners = {(path / f"part{part}").read_text() for part in range(4)}
        verdict = "ok" if len(owners) == 1 and entry.ready else f"MIXED {sorted(owners)}"
        (sync / f"done-{number}-{pid}").write_text(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
