"""A Hypothesis state machine over build, get, kill, delete, corrupt, gc and verify.

Invariant: an entry is exactly as the model says: absent, intact (every file as recorded at
publish, all from one builder), or corrupted by the test itself (and then verify sees it).
Kills are real: a forked child is SIGKILLed mid-build or mid-publish.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hydra_cache import CacheEntry
from hydra_cache.errors import DamagedEntryError
from hydra_cache.store import integrity, inuse
from hydra_cache.store.entry import METADATA_NAME
from hydra_cache.store.eviction import collect
from hydra_cache.store.verify import verify

KEYS = [f"{n:016x}" for n in range(3)]


def writer(staging: Path) -> None:
    for number in range(3):
        (staging / f"part{number}").write_text(f"{os.getpid()}\n" * 50)


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="hc-machine-")) / "root"
        self.model = dict.fromkeys(KEYS, "absent")

    def path(self, key: str) -> Path:
        return self.root / "ns" / key

    def teardown(self) -> None:
        inuse.release()
        shutil.rmtree(self.root.parent, ignore_errors=True)

    @rule(key=st.sampled_from(KEYS))
    def build(self, key: str) -> None:
        entry = CacheEntry(self.path(key))
        entry.get_or_build(writer)
        if self.model[key] == "absent":
            self.model[key] = "intact"
            dead = [item for item in entry.leftovers() if item.alive is False]
            assert dead == [], "a rebuild left a killed build's staging folder"

    @rule(key=st.sampled_from(KEYS))
    def get_verified(self, key: str) -> None:
        try:
            CacheEntry(self.path(key), verify_on_hit=True).get_or_build(writer)
        except DamagedEntryError:  # damaged again since this process rebuilt it: no loop
            assert self.model[key] == "corrupt"
            return
        self.model[key] = "intact"

    @rule(key=st.sampled_from(KEYS), point=st.integers(0, 4))
    def kill(self, key: str, point: int) -> None:
        """A child builds and is SIGKILLed: mid-build (0-2), at metadata (3) or rename (4)."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:

                def die(*_args: object, **_kwargs: object) -> None:
                    os.kill(os.getpid(), signal.SIGKILL)

                if point == 3:
                    os.replace = die  # type: ignore[assignment]
                if point == 4:
                    os.rename = die  # type: ignore[assignment]

                def dying_writer(staging: Path) -> None:
                    for number in range(3):
                        if number == point:
                            die()
                        (staging / f"part{number}").write_text(f"{os.getpid()}\n" * 50)

                CacheEntry(self.path(key)).get_or_build(dying_writer)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)
        self.model[key] = "absent"

    @rule(key=st.sampled_from(KEYS))
    def corrupt(self, key: str) -> None:
        if self.model[key] != "absent":
            (self.path(key) / "part1").write_text("corrupted\n")
            self.model[key] = "corrupt"

    @rule(key=st.sampled_from(KEYS))
    def stop_using(self, key: str) -> None:
        """This process stops using an entry (as if the job that read it exited)."""
        inuse.release(self.path(key))

    @rule(max_size=st.sampled_from([0, 2000, 10**9]))
    def gc(self, max_size: int) -> None:
        used = {key for key in KEYS if inuse.holds(str(self.path(key)), self._inode(key))}
        collect(self.root, max_size=max_size, min_idle=0, grace=0)
        for key in used:
            assert CacheEntry(self.path(key)).ready, "gc evicted an entry this process uses"
        for key in KEYS:
            if not CacheEntry(self.path(key)).ready:
                self.model[key] = "absent"

    def _inode(self, key: str) -> int:
        try:
            return os.lstat(self.path(key) / METADATA_NAME).st_ino
        except OSError:
            return -1

    @rule()
    def verify_repair(self) -> None:
        for finding in verify(self.root, repair=True):
            assert finding.verdict == "damaged", finding
            assert self.model[finding.path.name] == "corrupt", finding
            if finding.moved_to is not None:
                self.model[finding.path.name] = "absent"

    @invariant()
    def entries_are_what_the_model_says(self) -> None:
        for key in KEYS:
            path = self.path(key)
            entry = CacheEntry(path)
            state = self.model[key]
            assert entry.ready == (state != "absent"), (key, state)
            if state == "absent":
                continue
            meta = entry.metadata()
            assert meta is not None
            problems = integrity.damage(path, meta["files"], skip=METADATA_NAME)
            if state == "intact":
                assert problems == []
                owners = {(path / n).read_text().splitlines()[0] for n in meta["files"]}
                assert owners == {str(meta["pid"])}
            else:
                assert problems == [
                    "part1: truncated (" + str(meta["files"]["part1"]["size"]) + " -> 10 bytes)"
                ]


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(
    max_examples=25 * int(os.environ.get("HYDRA_CACHE_TEST_STRESS", "1")),
    stateful_step_count=20,
    deadline=None,
)
