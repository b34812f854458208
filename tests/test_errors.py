"""Bad input: one clear line naming the config key and the fix, and nothing written.

One table of cases, run through the three doors a user arrives by: a real Hydra app (with the
manifest callback), the ``hydra-cache`` command line, and the Compose API in this process.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import CompactHydraException

from conftest import clean_env, run_probe, unwritable, write_config
from hydra_cache.cli import main
from hydra_cache.composing import version_base
from hydra_cache.errors import ConfigError
from hydra_cache.resolver import CacheDirError

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
        r"hydra_cache\.salt must be a string or an integer, not a list; fix: ",
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
    (
        "missing input file",
        BASE.replace("resize: 8", "resize: 8\n  source: {file}-gone")
        + "hydra_cache: {inputs: [data.source]}\n",
        [],
        r"data\.cache_dir: data\.source: input .*afile-gone does not exist.*; fix: ",
    ),
]


TRAILER = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def _snapshot(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _setup(tmp_path: Path, yaml: str, overrides: list[str]) -> tuple[Path, Path, list[str]]:
    (tmp_path / "afile").write_text("not a folder")
    conf = write_config(
        tmp_path / "conf", {"config.yaml": yaml.replace("{file}", str(tmp_path / "afile"))}
    )
    root = tmp_path / "root"
    root.mkdir()
    return conf, root, [o.format(file=tmp_path / "afile") for o in overrides]


def _assert_nothing_written(tmp_path: Path, root: Path) -> None:
    assert _snapshot(root) == [] and (tmp_path / "afile").read_text() == "not a folder"


def _assert_app_printed_one_line(done_stdout: str, done_stderr: str, message: str) -> None:
    """Our line once, Hydra's short trailer, no traceback, no warning, nothing repeated."""
    everything = (done_stdout + done_stderr).splitlines()
    ours = [line for line in everything if re.search(message, line)]
    assert len(ours) == 1, done_stdout + done_stderr
    assert re.match(r"[\w.$\[\]]+: ", ours[0]), ours[0]  # the line starts with the key
    assert "Traceback" not in done_stderr, done_stderr
    assert "Callback ManifestCallback" not in done_stderr, done_stderr  # no repeat as a warning
    assert TRAILER in done_stderr
    assert "full_key:" not in done_stderr


CASE_IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "yaml", "overrides", "message"), CASES, ids=CASE_IDS)
def test_in_a_hydra_app(
    name: str, yaml: str, overrides: list[str], message: str, tmp_path: Path
) -> None:
    conf, root, overrides = _setup(tmp_path, yaml, overrides)
    done = run_probe(
        conf,
        tmp_path,
        *overrides,
        "hydra/callbacks=cache_manifest",
        "hydra.run.dir=run",
        root=root,
        env=clean_env(PROBE_BUILD="1"),
    )
    assert done.returncode == 1
    _assert_app_printed_one_line(done.stdout, done.stderr, message)
    assert "ENTRY" not in done.stdout
    _assert_nothing_written(tmp_path, root)


@pytest.mark.parametrize(("name", "yaml", "overrides", "message"), CASES, ids=CASE_IDS)
def test_on_the_command_line(
    name: str,
    yaml: str,
    overrides: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conf, root, overrides = _setup(tmp_path, yaml, overrides)
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    assert main(["keys", "-cd", str(conf), *overrides]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hydra-cache: error: "), captured.err
    assert re.search(message, lines[0]), lines[0]
    _assert_nothing_written(tmp_path, root)


@pytest.mark.parametrize(("name", "yaml", "overrides", "message"), CASES, ids=CASE_IDS)
def test_through_the_compose_api(
    name: str,
    yaml: str,
    overrides: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf, root, overrides = _setup(tmp_path, yaml, overrides)
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(conf), **version_base()):
        cfg = compose(config_name="config", overrides=overrides)
    with pytest.raises(CacheDirError) as raised:
        str(cfg.data.cache_dir)
    error = raised.value
    assert re.search(message, str(error)) and "\n" not in str(error), str(error)
    assert isinstance(error, ConfigError) and isinstance(error, CompactHydraException)
    assert error.problem and error.fix and str(error).endswith(f"; fix: {error.fix}")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is CacheDirError and str(again) == str(error)
    _assert_nothing_written(tmp_path, root)


def test_config_error_carries_key_problem_and_fix() -> None:
    error = ConfigError("data.resize", "is '???' (missing)", "give it a value")
    assert str(error) == "data.resize: is '???' (missing); fix: give it a value"
    assert (error.config_key, error.problem, error.fix) == (
        "data.resize",
        "is '???' (missing)",
        "give it a value",
    )
    legacy = ConfigError("hydra_cache.root: cache root /x is a file; fix: set another")
    assert (legacy.config_key, legacy.problem, legacy.fix) == (
        "hydra_cache.root",
        "cache root /x is a file",
        "set another",
    )
    again = pickle.loads(pickle.dumps(error))
    assert (again.config_key, again.problem, again.fix) == (
        error.config_key,
        error.problem,
        error.fix,
    )


def test_full_error_still_shows_the_traceback(tmp_path: Path) -> None:
    conf = write_config(
        tmp_path / "conf", {"config.yaml": BASE + "hydra_cache: {on_miss: sometimes}\n"}
    )
    done = run_probe(
        conf,
        tmp_path,
        "hydra.run.dir=run",
        root=tmp_path / "root",
        env=clean_env(HYDRA_FULL_ERROR="1"),
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "CacheDirError" in done.stderr


def test_unwritable_root_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "conf", {"config.yaml": BASE})
    root = tmp_path / "locked"
    with unwritable(root):
        done = run_probe(
            conf, tmp_path, "hydra.run.dir=run", root=root / "cache", env=clean_env(PROBE_BUILD="1")
        )
    assert done.returncode == 1
    _assert_app_printed_one_line(
        done.stdout,
        done.stderr,
        r"data\.cache_dir: \$HYDRA_CACHE_ROOT: cache root .*/locked/cache is not writable "
        r"\(its nearest existing parent .*/locked is not\); fix: ",
    )
    assert _snapshot(root) == []
