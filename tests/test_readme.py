"""Every command the README shows runs, top to bottom, as a newcomer runs it.

Each ``$ command`` of the README is either run here, in README order, in a fresh copy of the
project with its own home folder, or named below with the test that runs it in the situation
the README describes. A command added to the README without either fails this test. A run
command must exit as the README implies, and its sample's first line, with times, keys, paths
and durations masked, must be among the lines it prints: a sample that no longer matches what
today's code prints fails here.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from conftest import REPO, clean_env, run

README = REPO / "README.md"
#: Commands shown in a situation this walkthrough does not recreate, and the test that does
#: (a key ending in a space names every command that starts with it, else exactly one).
ELSEWHERE = {
    "hydra-cache rm ": "tests/test_cli_everyday.py (rm under the lock, with a journal record)",
    "hydra-cache show ": "tests/test_cli_everyday.py (show of a chained entry)",
    "hydra-cache keys": "tests/test_coverage.py (the under-keyed example's audit)",
    "hydra-cache why": "tests/test_coverage.py and tests/test_explain.py",
    "hydra-cache diff ": "tests/test_diff.py (real git repositories, edited and committed)",
    "python examples/recipes/train_lightning.py ": "tests/test_recipes.py (needs lightning)",
    # Sharing across machines needs an S3 server and several homes: the remote tests start them.
    "hydra-cache why -cd /tmp/demo/conf": "tests/test_remote_cli.py (why names the remote)",
    "python examples/train.py -cp /tmp/demo/conf": "tests/test_remote.py (B pulls what A built)",
    "hydra-cache push ": "tests/test_remote_cli.py (push a sweep, pull on another machine)",
    "hydra-cache pull ": "tests/test_remote_cli.py (push a sweep, pull on another machine)",
    "hydra-cache ls --remote ": "tests/test_remote_cli.py",
    "hydra-cache verify --remote ": "tests/test_remote_cli.py (verify finds torn entries)",
    "hydra-cache gc --remote ": "tests/test_remote_cli.py (manifests first, then old blobs)",
}
#: Exit statuses other than 0 that the README's text promises.
EXIT = {"python examples/train.py +hydra_cache.on_miss=error data.resize=6": 1}
_MASKS = [
    (re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]"), "[TIME]"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"), "ISO"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "DIGEST"),
    (re.compile(r"\b[0-9a-f]{16}\b"), "KEY"),
    (re.compile(r"(?:/[\w.@+-]+)+/?"), "PATH"),
    (re.compile(r"\d+(?:\.\d+)?\s?(?:s|ms|KiB|MiB|B)\b"), "N"),
    (re.compile(r"accuracy \d\.\d+"), "accuracy A"),
    (re.compile(r"pid \d+"), "pid P"),
]


def mask(line: str) -> str:
    for pattern, replacement in _MASKS:
        line = pattern.sub(replacement, line)
    return line.strip()


def readme_commands() -> list[tuple[str, list[str]]]:
    """(command, the sample lines printed after it) for each ``$ `` line, in order."""
    found: list[tuple[str, list[str]]] = []
    inside = False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and "&& python " in line:  # a set-up command: install, then run the job
            found.append(("python " + line.split("&& python ", 1)[1].strip(), []))
        elif inside and line.startswith("$ "):
            found.append((re.sub(r"\s+#.*$", "", line[2:]).strip(), []))
        elif inside and found and line.strip() and line != "...":
            found[-1][1].append(line)
    return found


def _names(start: str, command: str) -> bool:
    return command.startswith(start) if start.endswith(" ") else command == start


def elsewhere(command: str) -> str | None:
    return next((why for start, why in ELSEWHERE.items() if _names(start, command)), None)


def test_every_readme_command_is_run_here_or_by_a_named_test() -> None:
    commands = [command for command, _sample in readme_commands()]
    assert len(commands) >= 15, commands
    for start, why in ELSEWHERE.items():
        assert any(_names(start, c) for c in commands), f"README no longer shows {start!r}"
        test_file = REPO / why.split(" ")[0]
        assert test_file.exists(), why


def test_the_readme_runs_top_to_bottom(tmp_path: Path) -> None:
    project = tmp_path / "hydra-cache"
    for part in ("conf", "examples"):
        shutil.copytree(REPO / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", project)
    scratch = tmp_path / "scratch-cache"
    env = clean_env(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("XDG_CACHE_HOME", None)
    ran: list[str] = []
    for command, sample in readme_commands():
        if elsewhere(command) is not None or command.startswith("pip ") or command in ran:
            continue  # a command shown twice shows the state of its first run again
        words = command.replace("/tmp/scratch-cache", str(scratch)).split()
        if words[0] == "python":
            args = words[1:]
        else:
            assert words[0] == "hydra-cache", command
            args = ["-m", "hydra_cache", *words[1:]]
        done = run(args, cwd=project, env=env)
        assert done.returncode == EXIT.get(command, 0), f"{command}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
        if sample:
            printed = {mask(line) for line in (done.stdout + done.stderr).splitlines()}
            assert mask(sample[0]) in printed, (command, mask(sample[0]), sorted(printed))
        if sample:  # the set-up line runs the job the next "$ " line runs again, for a hit
            ran.append(command)
    assert len(ran) >= 9, ran
    assert os.path.isdir(tmp_path / "home" / ".cache" / "hydra-cache")
