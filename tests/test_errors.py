"""Bad input: one clear line naming the config key and the fix, and nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import clean_env, run_probe, unwritable, write_config

BASE = """
data:
  resize: 8
  cache_dir: ${cache_dir:}
"""

CASES = [
    (
        "missing node",
        BASE.replace("${cache_dir:}", "${cache_dir:prepro}"),
        [],
        r"data\.cache_dir: node 'prepro' does not exist in the config; fix: ",
    ),
    (
        "missing value",
        BASE.replace("resize: 8", "resize: ???"),
        [],
        r"data\.resize is '\?\?\?' \(missing\) but is part of a cache key; fix: give it a value",
    ),
    (
        "missing via interpolation",
        BASE.replace("resize: 8", "resize: ${other}") + "other: ???\n",
        [],
        r"data\.resize: cannot resolve '\$\{other\}' .*; fix: ",
    ),
    (
        "unknown on_miss",
        BASE + "hydra_cache: {on_miss: sometimes}\n",
        [],
        r"hydra_cache\.on_miss must be one of build, warn, error, not 'sometimes'; fix: ",
    ),
    (
        "typo in a setting",
        BASE + "hydra_cache: {exlcude: [data.x]}\n",
        [],
        r"hydra_cache\.exlcude is not a setting; fix: did you mean hydra_cache\.exclude\?",
    ),
    (
        "exclude not a list",
        BASE + "hydra_cache: {exclude: data.x}\n",
        [],
        r"hydra_cache\.exclude must be a list of dotted keys, not 'data\.x'; fix: ",
    ),
    (
        "exclude bad entry",
        BASE + "hydra_cache: {exclude: ['..x']}\n",
        [],
        r"hydra_cache\.exclude entry '\.\.x' is not an absolute dotted key; fix: ",
    ),
    (
        "salt not scalar",
        BASE + "hydra_cache: {salt: [1]}\n",
        [],
        r"hydra_cache\.salt must be a string or an integer, not \[1\]; fix: ",
    ),
    (
        "numeric resolver arg",
        BASE.replace("${cache_dir:}", "${cache_dir:1}"),
        [],
        r"data\.cache_dir: \$\{cache_dir:\.\.\.\} takes dotted config keys, got 1; fix: ",
    ),
    (
        "climbing above root",
        BASE.replace("${cache_dir:}", "${cache_dir:...x}"),
        [],
        r"data\.cache_dir: '\.\.\.x' climbs above the config root; fix: ",
    ),
    (
        "root is a file",
        BASE,
        ["+hydra_cache.root={file}"],
        r"hydra_cache\.root: cache root .*afile is a file; fix: ",
    ),
    (
        "root under a file",
        BASE,
        ["+hydra_cache.root={file}/sub"],
        r"hydra_cache\.root: cache root .*afile/sub lies under .*afile, which is a file; fix: ",
    ),
    (
        "root not a string",
        BASE,
        ["+hydra_cache.root=[1]"],
        r"hydra_cache\.root must be a non-empty path string, not \[1\]; fix: ",
    ),
]


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "CacheDirError: " in line]
    assert len(lines) == 1, stderr
    return lines[0].split("CacheDirError: ", 1)[1]


def _snapshot(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize(("name", "yaml", "overrides", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_naming_the_key_and_the_fix(
    name: str, yaml: str, overrides: list[str], message: str, tmp_path: Path
) -> None:
    conf = write_config(tmp_path / "conf", {"config.yaml": yaml})
    (tmp_path / "afile").write_text("not a folder")
    root = tmp_path / "root"
    root.mkdir()
    overrides = [o.format(file=tmp_path / "afile") for o in overrides]
    done = run_probe(
        conf, tmp_path, *overrides, "hydra.run.dir=run", root=root, env=clean_env(PROBE_BUILD="1")
    )
    assert done.returncode == 1
    line = _error_line(done.stderr)
    assert re.search(message, line), line
    assert "ENTRY" not in done.stdout
    assert _snapshot(root) == [] and (tmp_path / "afile").read_text() == "not a folder"


def test_unwritable_root_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "conf", {"config.yaml": BASE})
    root = tmp_path / "locked"
    with unwritable(root):
        done = run_probe(
            conf, tmp_path, "hydra.run.dir=run", root=root / "cache", env=clean_env(PROBE_BUILD="1")
        )
    assert done.returncode == 1
    line = _error_line(done.stderr)
    assert re.search(
        r"\$HYDRA_CACHE_ROOT: cache root .*/locked/cache is not writable "
        r"\(its nearest existing parent .*/locked is not\); fix: ",
        line,
    ), line
    assert _snapshot(root) == []
