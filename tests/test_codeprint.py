"""Code fingerprints that cost little and say the right thing: source is found and parsed
without importing the module (so a target in a module that imports torch costs a file read),
a method can be named on its own, and switching fingerprints on explains itself as "added"."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import clean_env, run, run_probe, write_config
from hydra_cache import codeprint

# Importing this module fails (its "heavy" dependency does not exist): a fingerprint that
# imports it cannot be taken at all, one that reads its source can.
HEAVY = """
import a_heavy_framework_that_is_not_installed


def prepare(x):
    return x * 2


class DataModule:
    def __init__(self, batch_size):
        self.batch_size = batch_size

    def prepare_data(self):
        return "build the cache"

    def train_dataloader(self):
        return ("loader", self.batch_size, 4)
"""


def keys(conf: Path, cwd: Path, root: Path) -> str:
    done = run(
        ["-m", "hydra_cache", "keys", "-cd", str(conf), "--format", "json"],
        cwd=cwd,
        env=clean_env(HYDRA_CACHE_ROOT=str(root), PYTHONPATH=str(cwd / "code")),
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)[0]["key"])


def project(tmp_path: Path, settings: str, node: str) -> Path:
    (tmp_path / "code").mkdir(exist_ok=True)
    (tmp_path / "code" / "heavy_mod.py").write_text(HEAVY)
    return write_config(
        tmp_path / "conf",
        {
            "config.yaml": f"""
            data:
              {node}
              cache_dir: ${{cache_dir:}}
            hydra_cache: {settings}
            """
        },
    )


def test_a_target_is_fingerprinted_without_importing_its_module(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = project(tmp_path, "{code: function}", "fn: {_target_: heavy_mod.prepare}")
    first = keys(conf, tmp_path, cache_root)
    source = tmp_path / "code" / "heavy_mod.py"
    source.write_text(HEAVY.replace("x * 2", "x * 3"))
    assert keys(conf, tmp_path, cache_root) != first
    assert "heavy_mod" not in sys.modules


def test_a_named_method_covers_only_itself(tmp_path: Path, cache_root: Path) -> None:
    """``code: function`` on the class hashes all of it; naming the method that builds the
    cache leaves the loader settings out."""
    node = "dm: {_target_: heavy_mod.DataModule, batch_size: 32}"
    whole = project(tmp_path, "{code: function}", node)
    named = write_config(
        tmp_path / "conf-named",
        {
            "config.yaml": f"""
            data:
              {node}
              cache_dir: ${{cache_dir:}}
            hydra_cache: {{code_modules: [heavy_mod.DataModule.prepare_data]}}
            """
        },
    )
    before = {c: keys(c, tmp_path, cache_root) for c in (whole, named)}
    source = tmp_path / "code" / "heavy_mod.py"
    source.write_text(HEAVY.replace('"loader", self.batch_size, 4', '"loader", self.batch_size, 8'))
    loader_edit = {c: keys(c, tmp_path, cache_root) for c in (whole, named)}
    assert loader_edit[whole] != before[whole]
    assert loader_edit[named] == before[named]
    source.write_text(HEAVY.replace("build the cache", "build it differently"))
    assert keys(named, tmp_path, cache_root) != before[named]


def test_the_digest_is_the_one_an_import_gives(tmp_path: Path) -> None:
    """Reading the file instead of importing changes no existing key."""
    (tmp_path / "light_mod.py").write_text(HEAVY.replace("import a_heavy", "# import a_heavy"))
    sys.path.insert(0, str(tmp_path))
    try:
        for name in ("light_mod.prepare", "light_mod.DataModule.prepare_data"):
            found = codeprint._find_source(name)
            assert found is not None
            obj, module = codeprint._load(name)
            assert codeprint._digest_tree(found[2]) == codeprint._digest(obj, name)
            assert codeprint._digest_tree(found[1]) == codeprint._digest(module, name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("light_mod", None)


def test_switching_fingerprints_on_is_explained_as_added(tmp_path: Path, cache_root: Path) -> None:
    conf = project(tmp_path, "{code: 'off'}", "fn: {_target_: heavy_mod.prepare}")
    env = clean_env(PROBE_BUILD="1", PYTHONPATH=str(tmp_path / "code"))
    assert run_probe(conf, tmp_path, "hydra.run.dir=r", root=cache_root, env=env).returncode == 0
    why = run(
        ["-m", "hydra_cache", "why", "-cd", str(conf), "hydra_cache.code=function"],
        cwd=tmp_path,
        env=clean_env(HYDRA_CACHE_ROOT=str(cache_root), PYTHONPATH=str(tmp_path / "code")),
    )
    assert why.returncode == 0, why.stderr
    assert "a code fingerprint of heavy_mod.prepare was added to the key" in why.stdout
    assert "changed since the entry was built" not in why.stdout
