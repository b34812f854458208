"""A real Hydra app for the remote-tier tests: one "machine" building or pulling one entry.

Environment:

- ``BUILD_LOG``: each build appends ``BUILD <host> <pid>`` to it (how the tests count builds);
- ``BUILD_FILES`` (default 4) files of ``BUILD_BYTES`` (default 2000) bytes each, made from
  ``data.size``, plus ``tool.sh`` with the executable bit and ``sub/empty/`` and a symlink;
- ``BUILD_SLEEP``: seconds each build takes (to widen race windows);
- ``BUILD_NOISE``: put the pid into one file (a non-deterministic build);
- ``START_FILE``: wait until it exists before asking for the entry (a race's starting gun);
- ``KILL_AT``: SIGKILL this process, for real, at ``blob`` (the second blob upload) or
  ``manifest`` (after the last blob, before the manifest's create);
- ``PAUSE_BEFORE_COMMIT``: a folder; before the manifest's create, write ``at-commit`` there
  and wait for ``go-commit`` (so a test can commit another machine's manifest first).

Prints ``OUTCOME <last_outcome> <path>``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"}


def install_kill(point: str) -> None:
    from hydra_cache.store.remote import backend

    calls: list[int] = []  # blob uploads so far, whichever backend makes them
    for cls in (backend.LocalBackend, backend.FsspecBackend):
        if point == "blob":
            real_put = cls.put_file

            def put_file(
                self: Any, local: Path, name: str, on_bytes: Any, _r: Any = real_put
            ) -> None:
                calls.append(1)
                if len(calls) == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                _r(self, local, name, on_bytes)

            cls.put_file = put_file  # type: ignore[method-assign]
        elif point == "manifest":
            real_create = cls.create

            def create(self: Any, name: str, data: bytes, _r: Any = real_create) -> Any:
                if name.startswith("entries/"):
                    os.kill(os.getpid(), signal.SIGKILL)
                return _r(self, name, data)

            cls.create = create  # type: ignore[method-assign]


def install_pause(folder: Path) -> None:
    from hydra_cache.store.remote import backend

    for cls in (backend.LocalBackend, backend.FsspecBackend):
        real_create = cls.create

        def create(self: Any, name: str, data: bytes, _r: Any = real_create) -> Any:
            if name.startswith("entries/"):
                (folder / "at-commit").touch()
                while not (folder / "go-commit").exists():
                    time.sleep(0.01)
            return _r(self, name, data)

        cls.create = create  # type: ignore[method-assign]


@hydra.main(config_path=None, config_name="config", **VERSION_BASE)
def main(cfg: DictConfig) -> None:
    from hydra_cache import CacheEntry

    if os.environ.get("KILL_AT"):
        install_kill(os.environ["KILL_AT"])
    if os.environ.get("PAUSE_BEFORE_COMMIT"):
        install_pause(Path(os.environ["PAUSE_BEFORE_COMMIT"]))
    files = int(os.environ.get("BUILD_FILES", "4"))
    size = int(os.environ.get("BUILD_BYTES", "2000"))

    def build(staging: Path) -> None:
        with open(os.environ["BUILD_LOG"], "a") as log:
            log.write(f"BUILD {os.uname().nodename} {os.getpid()}\n")
        time.sleep(float(os.environ.get("BUILD_SLEEP", "0")))
        for number in range(files):
            text = f"{cfg.data.size}:{number}:" * (size // 8 + 1)
            (staging / f"part{number}.txt").write_text(text[:size])
        (staging / "copy.txt").write_text((staging / "part0.txt").read_text())
        tool = staging / "tool.sh"
        tool.write_text("#!/bin/sh\necho ok\n")
        tool.chmod(0o755)
        (staging / "sub" / "empty").mkdir(parents=True)
        (staging / "sub" / "link").symlink_to("../part0.txt")
        if os.environ.get("BUILD_NOISE"):
            (staging / "noise.txt").write_text(str(os.getpid()))

    if os.environ.get("START_FILE"):
        while not os.path.exists(os.environ["START_FILE"]):
            time.sleep(0.005)
    entry = CacheEntry(cfg.data.cache_dir)
    path = entry.get_or_build(build)
    print(f"OUTCOME {entry.last_outcome} {path}", flush=True)


if __name__ == "__main__":
    main()
