"""Test your cache keys: a pytest plugin with a ``cache_root`` fixture and
:func:`assert_key_covers`.

Installed with hydra-cache-dir and registered through the ``pytest11`` entry point, so a
project's tests can use both without importing anything::

    from hydra_cache.testing import assert_key_covers

    def test_data_cache_key(cache_root):
        assert_key_covers("conf", "config", cache="data.cache_dir", build=my_preprocess)

Heavy modules are imported inside the functions: pytest loads this plugin in every project
that has hydra-cache installed, and it must not slow their start-up.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["assert_key_covers", "cache_root"]


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private cache root for one test, and a private list of roots.

    The root is pinned: it beats the config's own ``hydra_cache.root`` too (through
    ``$HYDRA_CACHE_TEST_ROOT``, which child processes inherit), so a project whose config names
    a team root never builds into it from its tests.
    """
    root = tmp_path / "hydra-cache"
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(root))
    monkeypatch.setenv("HYDRA_CACHE_TEST_ROOT", str(root))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield root


def assert_key_covers(
    config_dir: str | Path,
    config_name: str = "config",
    *,
    cache: str = "data.cache_dir",
    overrides: Sequence[str] = (),
    build: Callable[[Any, Path], object] | None = None,
) -> None:
    """Fail unless the key of ``cache`` covers what its entry depends on.

    - Every leaf of the hashed nodes, changed on its own, must change the key.
    - Every ``hydra_cache.exclude`` leaf inside them, changed, must leave the key alone.
    - Given ``build(cfg, staging)``, it runs once with the key-coverage audit, and any config
      value it reads outside the key fails the check.
    """
    from omegaconf import OmegaConf

    from hydra_cache.composing import compose_config
    from hydra_cache.key import UNRESOLVED_PER_RUN, flatten
    from hydra_cache.resolver import resolve_all

    cfg = compose_config(str(config_dir), config_name, list(overrides))
    found = {item.config_key: item for item in resolve_all(cfg)}
    if cache not in found:
        raise AssertionError(
            f"no ${{cache_dir:...}} at {cache} in {config_dir}/{config_name}; "
            f"found: {', '.join(found) or 'none'}"
        )
    item = found[cache]
    problems: list[str] = []
    hashed = item.derived.payload["nodes"]
    for name, value in hashed.items():
        for leaf, old in flatten(value, "" if name == "." else name).items():
            if old == UNRESOLVED_PER_RUN or leaf.rsplit(".", 1)[-1] == "_target_":
                # A _target_ is hashed as its string (and, with code fingerprints, its source);
                # rewriting it to a name that cannot be imported would test nothing.
                continue
            new = _different(old)
            if _key_after(cfg, cache, leaf, new) == item.derived.key:
                problems.append(f"changing {leaf} ({old!r} -> {new!r}) leaves the key unchanged")
    for excluded in item.settings.exclude:
        current = OmegaConf.select(cfg, excluded, default=None, throw_on_missing=False)
        if current is None or not any(excluded.startswith(n + ".") for n in hashed):
            continue
        leaves = (
            flatten(OmegaConf.to_container(current, resolve=True), excluded)
            if OmegaConf.is_config(current)
            else {excluded: current}
        )
        for leaf, old in leaves.items():
            if _key_after(cfg, cache, leaf, _different(old)) != item.derived.key:
                problems.append(f"{leaf} is in hydra_cache.exclude but changing it changes the key")
    if build is not None:
        problems += _audit(cfg, item.path, build)
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise AssertionError(
            f"the key of {cache} does not cover what its entry depends on "
            f"({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n"
            f"{lines}"
        )


def _key_after(cfg: Any, cache: str, leaf: str, value: Any) -> str:
    from omegaconf import OmegaConf, open_dict

    changed = copy.deepcopy(cfg)
    with open_dict(changed):
        OmegaConf.update(
            changed, re.sub(r"\[(\d+)\]", r".\1", leaf), value, merge=False, force_add=True
        )
    return Path(str(OmegaConf.select(changed, cache))).name


def _different(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "_changed"
    if value is None:
        return "changed"
    if isinstance(value, list):
        return [*value, 0]
    if isinstance(value, dict):
        return {**value, "_added_by_assert_key_covers": 0}
    return str(value) + "_changed"


def _audit(cfg: Any, path: str, build: Callable[[Any, Path], object]) -> list[str]:
    import tempfile

    from hydra_cache import registry
    from hydra_cache.audit import recording

    info = registry.lookup(path)
    assert info is not None
    with (
        tempfile.TemporaryDirectory(prefix="hydra-cache-audit-") as staging,
        recording(cfg, info.covered, info.excluded) as recorder,
    ):
        build(cfg, Path(staging))
    from hydra_cache.key import ExcludeRules

    rules = ExcludeRules(info.excluded)
    return [
        f"the build read {key}, which hydra_cache.exclude leaves out of the key: runs that "
        f"differ only in {key} would share the entry; fix: drop it from hydra_cache.exclude"
        if rules and any(rules.excludes(prefix) for prefix in _prefixes(key))
        else f"the build read {key}, which is not part of the key: runs that differ only in "
        f"{key} would share the entry"
        for key in recorder.uncovered()
    ]


def _prefixes(key: str) -> list[str]:
    parts = re.split(r"\.(?![^\[]*\])", key)
    return [".".join(parts[: i + 1]) for i in range(len(parts))]
