"""Shared helpers: real Hydra apps run in subprocesses against a private cache root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
PROBE_APP = TESTS / "apps" / "probe.py"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a child run: no inherited cache root, Hydra errors in full."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HYDRA_CACHE_ROOT", "XDG_CACHE_HOME", "HYDRA_FULL_ERROR")
    }
    env.update(extra)
    return env


BUILDER = TESTS / "apps" / "builder.py"


def spawn(script: Path, *args: str) -> subprocess.Popen[str]:
    """Start a helper script (a builder, a racer) as a real process, output captured."""
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )


def run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(directory: Path, files: dict[str, str]) -> Path:
    """Write a config tree (``{"config.yaml": "...", "data/a.yaml": "..."}``) and return it."""
    for name, text in files.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    return directory


def run_probe(
    conf: Path,
    cwd: Path,
    *overrides: str,
    root: Path | None = None,
    env: dict[str, str] | None = None,
    name: str = "config",
) -> subprocess.CompletedProcess[str]:
    """Run the probe app on ``conf``; each job writes the values of PROBE_KEYS to probe.json."""
    child_env = env or clean_env()
    if root is not None:
        child_env["HYDRA_CACHE_ROOT"] = str(root)
    return run(
        [str(PROBE_APP), "--config-dir", str(conf), "--config-name", name, *overrides],
        cwd=cwd,
        env=child_env,
    )


def probe_results(run_dir: Path) -> list[dict[str, Any]]:
    """Every probe.json written under a run or sweep folder, in job order."""
    found = sorted(run_dir.rglob("probe.json"), key=lambda p: json.loads(p.read_text())["num"])
    return [json.loads(p.read_text()) for p in found]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stress",
        type=int,
        default=1,
        metavar="N",
        help="multiply the trial counts of the reliability tests by N",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Read at import time by the Hypothesis state machine, whose settings are class-level.
    os.environ["HYDRA_CACHE_TEST_STRESS"] = str(max(1, int(config.getoption("--stress"))))
    # The user's list of roots ($XDG_STATE_HOME/hydra-cache/roots.json) is never touched by a
    # test: not by module-level setup, not by a child process, not between per-test fixtures.
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="hydra-cache-test-state-")


@pytest.fixture
def stress(request: pytest.FixtureRequest) -> int:
    """How many times the default trial counts to run (``pytest --stress 10``)."""
    return max(1, int(request.config.getoption("--stress")))


def report(name: str, **figures: object) -> None:
    """Print a reliability figure (shown with ``-s``; collected for the README table)."""
    print(f"\nRELIABILITY {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the list of known roots ($XDG_STATE_HOME) inside the test, for children too."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
def cache_root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "cache-root"


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """Make ``folder`` unwritable even for root (chattr +i), or skip the test."""
    folder.mkdir(parents=True, exist_ok=True)
    immutable = (
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode
        == 0
    )
    if not immutable:
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):
            folder.chmod(0o755)
            pytest.skip("cannot make a folder unwritable here")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
        folder.chmod(0o755)


def entries(root: Path) -> list[Path]:
    """Published entries under a root (folders holding metadata)."""
    return sorted(p.parent for p in root.rglob(".hydra-cache.json"))
