"""The import graph, pinned: data flows config -> key -> path -> entry -> manifest, and each
layer imports only what is below it.

- ``key/`` (the pure key code) imports neither Hydra nor the store;
- ``store/`` (an entry on disk) imports neither OmegaConf nor Hydra;
- only the resolver, the callback, the composing code and the plugin import Hydra;
- ``cli/`` holds argparse and rendering: it never imports Hydra, and it reaches the store only
  through the modules that own the work.

Each rule checks the packages that exist: where a package has not been split out yet, its
modules are checked under their current flat names, so the rule holds while the layout moves.
Imports are read from the source (``ast``), at every depth, so a deferred import inside a
function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "hydra_cache"
PLUGIN = REPO / "hydra_plugins"

#: Where each layer lives today if it has not moved into its package yet.
FLAT = {
    "key": ("hydra_cache.key", "hydra_cache.references"),
    "store": (
        "hydra_cache.entry",
        "hydra_cache.eviction",
        "hydra_cache.journal",
        "hydra_cache.roots",
        "hydra_cache.locking",
        "hydra_cache.integrity",
        "hydra_cache.liveness",
    ),
}
HYDRA_DOORS = ("hydra_cache.resolver", "hydra_cache.callback", "hydra_cache.composing")
LOCKS_AND_INTEGRITY = (
    "hydra_cache.integrity",
    "hydra_cache.locking",
    "hydra_cache.store.integrity",
    "hydra_cache.store.locking",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    files = [*PACKAGE.rglob("*.py"), *PLUGIN.rglob("*.py")]
    return {module_name(p): p for p in files if "__pycache__" not in p.parts}


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth, with relative imports made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here[: len(here) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def layer(name: str) -> dict[str, Path]:
    """The modules of ``hydra_cache/<name>/``, or of its flat predecessors."""
    modules = all_modules()
    packaged = {m: p for m, p in modules.items() if m.startswith(f"hydra_cache.{name}.")}
    if (PACKAGE / name / "__init__.py").is_file():
        packaged[f"hydra_cache.{name}"] = PACKAGE / name / "__init__.py"
        return packaged
    return {m: modules[m] for m in FLAT.get(name, ()) if m in modules}


def reaches(found: set[str], *tops: str) -> list[str]:
    return sorted(m for m in found if any(m == t or m.startswith(t + ".") for t in tops))


def test_every_module_parses_and_the_rules_see_modules() -> None:
    modules = all_modules()
    assert "hydra_cache.resolver" in modules and "hydra_cache.cli" in modules
    assert layer("key") and layer("store")
    # Explanations are one package: why a miss happened, and what a change invalidates.
    assert {"hydra_cache.explain.why", "hydra_cache.explain.diff"} <= set(modules)


def test_key_imports_neither_hydra_nor_the_store() -> None:
    store = [*layer("store"), "hydra_cache.store"]
    bad = {
        name: reaches(imports(path), "hydra", *store)
        for name, path in layer("key").items()
        if reaches(imports(path), "hydra", *store)
    }
    assert not bad, f"the key code reaches Hydra or the store: {bad}"


def test_store_imports_neither_omegaconf_nor_hydra() -> None:
    bad = {
        name: reaches(imports(path), "omegaconf", "hydra")
        for name, path in layer("store").items()
        if reaches(imports(path), "omegaconf", "hydra")
    }
    assert not bad, f"the store imports OmegaConf or Hydra: {bad}"


def test_only_the_resolver_callback_composing_and_plugin_import_hydra() -> None:
    offenders = {
        name: reaches(imports(path), "hydra")
        for name, path in all_modules().items()
        if not name.startswith(("hydra_plugins", *HYDRA_DOORS)) and reaches(imports(path), "hydra")
    }
    assert not offenders, f"Hydra imported outside its doors: {offenders}"


@pytest.mark.parametrize("name", ["hydra_cache.cli"])
def test_the_cli_is_argparse_and_rendering(name: str) -> None:
    cli = {m: p for m, p in all_modules().items() if m == name or m.startswith(name + ".")}
    for module, path in cli.items():
        found = imports(path)
        assert not reaches(found, "hydra"), module
        # Finding entries and reading their records is fine (ls, show); changing a root
        # (locks, integrity, quarantine) goes through maintenance/eviction, never from here.
        assert not reaches(found, *LOCKS_AND_INTEGRITY), module


def test_the_checker_reads_deferred_and_relative_imports() -> None:
    sample = PACKAGE / "cli" / "commands.py"
    found = imports(sample)
    assert "hydra_cache.composing" in found  # imported inside a function
    assert "hydra_cache.cli.parser" in found
