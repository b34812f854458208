"""The README's recipes, run as a user runs them: each recipe app in a real subprocess.

The instantiate pattern (a ``_partial_`` preprocess node keyed alone, so loader knobs never
rebuild), looking an entry up without building, and a Lightning DataModule whose
``prepare_data`` builds once while ``setup`` runs on every DDP process.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from conftest import clean_env, run

RECIPES = Path(__file__).resolve().parent.parent / "examples" / "recipes"


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    shutil.copytree(RECIPES, tmp_path / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "recipes"


def recipe(recipes: Path, script: str, root: Path, *overrides: str) -> str:
    done = run(
        [str(recipes / script), *overrides],
        cwd=recipes.parent,
        env=clean_env(HYDRA_CACHE_ROOT=str(root)),
    )
    assert done.returncode == 0, done.stderr
    return done.stderr + done.stdout


def entries(root: Path) -> list[Path]:
    return [p for p in root.glob("data.preprocess/*") if p.is_dir()]


def outcome(log: str) -> tuple[str, str]:
    found = re.search(r"prepare_data \(pid \d+\): (\w+) (\S+)", log)
    assert found, log
    return found[1], found[2]


def test_the_instantiate_pattern_keys_the_preprocess_node_alone(
    recipes: Path, tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    first = outcome(recipe(recipes, "train.py", root))
    assert first[0] == "built" and f"{root}/data.preprocess/" in first[1]
    # Loader knobs live outside data.preprocess: the same entry.
    knobs = recipe(recipes, "train.py", root, "data.batch_size=32", "data.num_workers=2")
    assert outcome(knobs) == ("hit", first[1]) and "batch_size 32" in knobs
    # A preprocessing value is in the key: a new entry beside the first.
    changed = outcome(recipe(recipes, "train.py", root, "data.preprocess.resize=4"))
    assert changed[0] == "built" and changed[1] != first[1]


def test_looking_an_entry_up_never_builds_it(recipes: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    before = recipe(recipes, "lookup.py", root)
    assert "not ready (miss): never built: no entry of namespace data.preprocess exists" in before
    assert entries(root) == []
    built = outcome(recipe(recipes, "train.py", root))[1]
    assert f"ready: {built}, " in recipe(recipes, "lookup.py", root)
    other = recipe(recipes, "lookup.py", root, "data.preprocess.resize=4")
    assert (
        "not ready (miss): key changed: 1 hashed value differs from the nearest entry "
        f"{Path(built).name} of data.preprocess (1 in all)"
    ) in other
    assert entries(root) == [Path(built)]


@pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None,
    reason="the Lightning recipe needs 'pip install lightning' (torch): not in the test extra",
)
def test_a_lightning_datamodule_builds_once_under_ddp(recipes: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    log = recipe(recipes, "train_lightning.py", root, "trainer.devices=2", "+trainer.strategy=ddp")
    prepared = re.findall(r"prepare_data \(pid \d+\): (\w+)", log)
    assert prepared == ["built"], log  # once per node, on its first process
    assert sorted(re.findall(r"setup \(pid \d+, rank (\d)\)", log)) == ["0", "1"]
