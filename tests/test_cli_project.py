"""The CLI set up once per project: ``[tool.hydra-cache]`` and ``HYDRA_CACHE_*`` defaults, so
``hydra-cache keys`` runs bare inside a lightning-hydra-template layout; global flags anywhere;
sweeps in ``keys`` and ``why``; one root for every command, named with its source.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_env, run, write_config

# The lightning-hydra-template layout: configs/ with groups, train.yaml with a defaults list,
# paths.root_dir from $PROJECT_ROOT, a data node instantiated as the DataModule, whose
# preprocessing lives in a `preprocess` node (`_target_` + `_partial_`) keyed on its own.
LHT = {
    "configs/train.yaml": """
    defaults:
      - _self_
      - data: mnist
      - model: mnist
      - paths: default
      - trainer: default
    task_name: train
    seed: 12345
    hydra_cache:
      code: function
    """,
    "configs/paths/default.yaml": """
    root_dir: ${oc.env:PROJECT_ROOT}
    data_dir: ${paths.root_dir}/data/
    log_dir: ${paths.root_dir}/logs/
    output_dir: ${hydra:runtime.output_dir}
    """,
    "configs/data/mnist.yaml": """
    _target_: src.data.mnist_datamodule.MNISTDataModule
    data_dir: ${paths.data_dir}
    batch_size: 128
    num_workers: 0
    pin_memory: false
    preprocess:
      _target_: src.data.prepare.prepare
      _partial_: true
      resize: 28
      normalize: true
    cache_dir: ${cache_dir:.preprocess}
    """,
    "configs/model/mnist.yaml": """
    lr: 0.001
    """,
    "configs/trainer/default.yaml": """
    max_epochs: 10
    """,
    "src/__init__.py": "",
    "src/data/__init__.py": "",
    "src/data/prepare.py": """
    def prepare(staging, resize, normalize):
        (staging / "x.txt").write_text(f"{resize} {normalize}")
    """,
    "pyproject.toml": """
    [project]
    name = "lht-like"
    version = "0"

    [tool.hydra-cache]
    config_dir = "configs"
    config_name = "train"
    env = { PROJECT_ROOT = "{project}" }
    """,
}


@pytest.fixture
def lht(tmp_path: Path) -> Path:
    return write_config(tmp_path / "lht", LHT)


def hydra_cache(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed command, bare, as a user types it (no PYTHONPATH, no PROJECT_ROOT)."""
    child = clean_env(**env)
    for name in ("PROJECT_ROOT", "PYTHONPATH"):
        child.pop(name, None)
    return run(["-m", "hydra_cache", *args], cwd=cwd, env=child)


def test_keys_runs_bare_in_a_lightning_hydra_template_tree(lht: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = hydra_cache(lht, "keys", "--format", "json", HYDRA_CACHE_ROOT=str(root))
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["config_key"] == "data.cache_dir" and row["namespace"] == "data.preprocess"
    # From a subfolder the project is found by walking up, and the key is the same.
    deeper = hydra_cache(
        lht / "src" / "data", "keys", "--format", "json", HYDRA_CACHE_ROOT=str(root)
    )
    assert deeper.returncode == 0, deeper.stderr
    assert json.loads(deeper.stdout)[0]["path"] == row["path"]
    # The code fingerprint imported src.data.prepare: the project folder is on sys.path. An
    # edit of the function changes the key.
    prepare = lht / "src" / "data" / "prepare.py"
    prepare.write_text(prepare.read_text().replace("{resize} {normalize}", "{resize}"))
    edited = hydra_cache(lht, "keys", "--format", "json", HYDRA_CACHE_ROOT=str(root))
    assert json.loads(edited.stdout)[0]["key"] != row["key"]


def test_without_the_pyproject_the_same_call_fails(lht: Path, tmp_path: Path) -> None:
    (lht / "pyproject.toml").unlink()
    done = hydra_cache(lht, "keys", HYDRA_CACHE_ROOT=str(tmp_path / "root"))
    assert done.returncode == 2 and "no such directory" in done.stderr, done.stderr


def test_environment_beats_the_pyproject_and_the_line_beats_both(lht: Path, tmp_path: Path) -> None:
    write_config(lht / "configs", {"other.yaml": "data:\n  x: 1\n  cache_dir: ${cache_dir:}\n"})
    root = str(tmp_path / "root")
    by_env = hydra_cache(
        lht, "keys", "--format", "json", HYDRA_CACHE_ROOT=root, HYDRA_CACHE_CONFIG_NAME="other"
    )
    assert json.loads(by_env.stdout)[0]["namespace"] == "data"
    by_line = hydra_cache(
        lht,
        "keys",
        "-cn",
        "train",
        "--format",
        "json",
        HYDRA_CACHE_ROOT=root,
        HYDRA_CACHE_CONFIG_NAME="other",
    )
    assert json.loads(by_line.stdout)[0]["namespace"] == "data.preprocess"
    env_var = hydra_cache(
        lht,
        "keys",
        "--format",
        "json",
        HYDRA_CACHE_ROOT=root,
        HYDRA_CACHE_ENV=f"PROJECT_ROOT={lht / 'elsewhere'}",
    )
    assert env_var.returncode == 0, env_var.stderr


def test_global_flags_and_overrides_anywhere_on_the_line(lht: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    first = hydra_cache(
        lht, "--format", "json", "keys", "data.preprocess.resize=32", HYDRA_CACHE_ROOT=root
    )
    second = hydra_cache(
        lht,
        "keys",
        "data.preprocess.resize=32",
        "--format",
        "json",
        "-cn",
        "train",
        HYDRA_CACHE_ROOT=root,
    )
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout)
    broken = hydra_cache(lht, "keys", "-cd", "/no/such", "--debug", HYDRA_CACHE_ROOT=root)
    assert "Traceback (most recent call last)" in broken.stderr


def test_keys_and_why_take_sweeps(lht: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    sweep = ["data.preprocess.resize=28,32", "data.batch_size=64,128"]
    done = hydra_cache(lht, "keys", *sweep, HYDRA_CACHE_ROOT=root)
    assert done.returncode == 0, done.stderr
    assert "4 jobs use 2 distinct cache entries" in done.stdout
    assert "job 3: data.preprocess.resize=32 data.batch_size=128" in done.stdout
    rows = json.loads(
        hydra_cache(lht, "keys", *sweep, "--format", "json", **{"HYDRA_CACHE_ROOT": root}).stdout
    )
    assert [r["job"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["key"] == rows[1]["key"] != rows[2]["key"] == rows[3]["key"]
    why = hydra_cache(lht, "why", "data.preprocess.resize=28,32", HYDRA_CACHE_ROOT=root)
    assert why.returncode == 0, why.stderr
    assert "[job 0: data.preprocess.resize=28] data.cache_dir: never built" in why.stdout
    assert "[job 1: data.preprocess.resize=32] data.cache_dir: never built" in why.stdout


def test_a_bad_pyproject_table_is_one_line(lht: Path, tmp_path: Path) -> None:
    text = (lht / "pyproject.toml").read_text()
    (lht / "pyproject.toml").write_text(text + 'confg_name = "x"\n')
    done = hydra_cache(lht, "keys", HYDRA_CACHE_ROOT=str(tmp_path / "root"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"hydra-cache: error: [tool.hydra-cache] confg_name in {lht / 'pyproject.toml'}: is not "
        "a setting; fix: use config_dir, config_name, app, root, env"
    ]


# ------------------------------------------------------------------ one root everywhere


def team_config(tmp_path: Path, team: Path) -> Path:
    """A config that names its own root, as a team's shared cache would be named."""
    text = "data: {x: 1, cache_dir: '${cache_dir:}'}\n" + f"hydra_cache: {{root: {team}}}\n"
    return write_config(tmp_path / "conf", {"config.yaml": text})


@pytest.mark.parametrize("command", ["ls", "verify", "gc --older-than 30d", "rm --namespace x"])
def test_every_root_command_takes_the_configs_root_and_says_so(
    command: str, tmp_path: Path
) -> None:
    team = tmp_path / "team-cache"
    conf = team_config(tmp_path, team)
    env_root = str(tmp_path / "env-root")
    for root in (team, tmp_path / "env-root", tmp_path / "r"):
        (root / ".hydra-cache").mkdir(parents=True)  # roots in use: gc touches nothing else
    words = command.split()
    from_config = hydra_cache(tmp_path, *words, "-cd", str(conf), HYDRA_CACHE_ROOT=env_root)
    assert from_config.returncode == 0, from_config.stderr
    assert f"root {team} (from hydra_cache.root in the config config)" in from_config.stderr
    plain = hydra_cache(tmp_path, *words, HYDRA_CACHE_ROOT=env_root)
    assert f"root {env_root} (from $HYDRA_CACHE_ROOT)" in plain.stderr
    flag = hydra_cache(
        tmp_path, *words, "-cd", str(conf), "--root", str(tmp_path / "r"), HYDRA_CACHE_ROOT=env_root
    )
    assert f"root {tmp_path / 'r'} (from --root)" in flag.stderr


def test_pyproject_root_and_config_selection_apply_to_ls(lht: Path, tmp_path: Path) -> None:
    text = (lht / "pyproject.toml").read_text()
    (lht / "pyproject.toml").write_text(text + 'root = "cache"\n')
    (lht / "cache" / ".hydra-cache").mkdir(parents=True)
    done = hydra_cache(lht, "ls")
    assert done.returncode == 0, done.stderr
    assert f"root {lht / 'cache'} (from root in pyproject.toml at {lht / 'pyproject.toml'})" in (
        done.stderr
    )


def test_the_cache_root_fixture_pins_a_root_the_config_sets(tmp_path: Path) -> None:
    team = tmp_path / "team-cache"
    conf = team_config(tmp_path, team)
    (tmp_path / "test_project.py").write_text(
        f"""
from hydra_cache import CacheEntry
from hydra_cache.composing import compose_config


def test_builds_into_the_fixture_root(cache_root):
    cfg = compose_config({str(conf)!r}, "config", ["hydra_cache.root={team}/other"])
    entry = CacheEntry(cfg.data.cache_dir)
    entry.get_or_build(lambda staging: (staging / "x").write_text("1"))
    assert entry.path.parent.parent == cache_root
"""
    )
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="),
            *("-p", "no:xdist", str(tmp_path / "test_project.py")),
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not team.exists()
