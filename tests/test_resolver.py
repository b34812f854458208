"""``${cache_dir:}`` in real Hydra apps: @hydra.main, the Compose API and three launchers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from conftest import clean_env, probe_results, run, run_probe, write_config
from hydra_cache.key import derive

CONFIG = {
    "config.yaml": """
        defaults:
          - _self_
        data:
          resize: 8
          normalize: standard
          cache_dir: ${cache_dir:}
          arrays: ${.cache_dir}/arrays.npz
        model:
          C: 1.0
    """,
}
KEY_PATH = re.compile(r"^(?P<root>.+)/(?P<ns>[A-Za-z0-9_.-]+)/(?P<key>[0-9a-f]{16})$")


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return write_config(tmp_path / "conf", CONFIG)


def _expected_key(**data: object) -> str:
    return derive(OmegaConf.create({"data": data}), ["data"]).key


def test_main_app_resolves_to_root_namespace_key(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    done = run_probe(
        conf, tmp_path, root=cache_root, env=clean_env(PROBE_KEYS="data.cache_dir,data.arrays")
    )
    assert done.returncode == 0, done.stderr
    values = probe_results(tmp_path / "outputs")[0]["values"]
    key = _expected_key(resize=8, normalize="standard")
    assert values["data.cache_dir"] == f"{cache_root}/data/{key}"
    assert values["data.arrays"] == f"{cache_root}/data/{key}/arrays.npz"
    assert not cache_root.exists(), "resolving a path must write nothing"


def test_plain_run_prints_no_warning(conf: Path, tmp_path: Path, cache_root: Path) -> None:
    done = run_probe(conf, tmp_path, root=cache_root)
    assert done.returncode == 0, done.stderr
    assert not re.search(r"Warning|\[WARNING\]|WARN", done.stderr + done.stdout)


def test_plugin_is_registered_as_a_hydra_plugins_entry_point() -> None:
    from importlib.metadata import entry_points

    from hydra.plugins.search_path_plugin import SearchPathPlugin

    found = [ep for ep in entry_points(group="hydra.plugins") if ep.name == "hydra_cache"]
    assert len(found) == 1
    assert issubclass(found[0].load(), SearchPathPlugin)


def test_compose_api_gives_the_same_path_as_hydra_main(
    conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    script = (
        "from hydra import compose, initialize_config_dir\n"
        "from hydra_cache.composing import version_base\n"
        f"with initialize_config_dir(config_dir={str(conf)!r}, **version_base()):\n"
        "    cfg = compose(config_name='config', overrides=['model.C=5'])\n"
        "print(cfg.data.cache_dir)\n"
    )
    composed = run(["-c", script], cwd=tmp_path, env=clean_env(HYDRA_CACHE_ROOT=str(cache_root)))
    assert composed.returncode == 0, composed.stderr
    done = run_probe(conf, tmp_path, root=cache_root)
    assert done.returncode == 0, done.stderr
    main_value = probe_results(tmp_path / "outputs")[0]["values"]["data.cache_dir"]
    assert composed.stdout.strip() == main_value


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_multirun_workers_resolve_in_every_launcher(
    launcher: str, conf: Path, tmp_path: Path, cache_root: Path
) -> None:
    overrides = [
        "-m",
        f"hydra/launcher={launcher}",
        "model.C=0.1,10",
        "data.resize=4,8",
        "hydra.sweep.dir=sweep",
    ]
    if launcher == "submitit_local":
        overrides += ["hydra.launcher.timeout_min=5"]
    done = run_probe(conf, tmp_path, *overrides, root=cache_root)
    assert done.returncode == 0, done.stderr
    results = probe_results(tmp_path / "sweep")
    assert len(results) == 4
    by_resize: dict[int, set[str]] = {}
    for result in results:
        path = result["values"]["data.cache_dir"]
        match = KEY_PATH.match(path)
        assert match and match["root"] == str(cache_root) and match["ns"] == "data"
        resize = 4 if match["key"] == _expected_key(resize=4, normalize="standard") else 8
        by_resize.setdefault(resize, set()).add(path)
    # model.C does not change the data key; data.resize does.
    assert {k: len(v) for k, v in by_resize.items()} == {4: 1, 8: 1}
    if launcher != "basic":
        assert len({r["pid"] for r in results}) > 1, "jobs should have run in workers"


def test_root_sources_in_order_and_logged(conf: Path, tmp_path: Path) -> None:
    base = clean_env(HOME=str(tmp_path / "home"))
    cases = [
        (
            ["hydra_cache.root=" + str(tmp_path / "cfg-root")],
            {"HYDRA_CACHE_ROOT": str(tmp_path / "env-root")},
            tmp_path / "cfg-root",
            "hydra_cache.root",
        ),
        (
            [],
            {
                "HYDRA_CACHE_ROOT": str(tmp_path / "env-root"),
                "XDG_CACHE_HOME": str(tmp_path / "xdg"),
            },
            tmp_path / "env-root",
            "$HYDRA_CACHE_ROOT",
        ),
        (
            [],
            {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
            tmp_path / "xdg" / "hydra-cache",
            "$XDG_CACHE_HOME",
        ),
        ([], {}, tmp_path / "home" / ".cache" / "hydra-cache", "~/.cache"),
    ]
    for number, (overrides, env, expected_root, source) in enumerate(cases):
        out = f"run{number}"
        done = run_probe(
            conf,
            tmp_path,
            *["+" + o for o in overrides],
            f"hydra.run.dir={out}",
            env={**base, **env},
        )
        assert done.returncode == 0, done.stderr
        value = probe_results(tmp_path / out)[0]["values"]["data.cache_dir"]
        assert Path(value).parent.parent == expected_root
        log = (tmp_path / out / "probe.log").read_text()
        assert f"hydra-cache root {expected_root} (from {source})" in log


def test_relative_root_is_relative_to_the_launch_dir(conf: Path, tmp_path: Path) -> None:
    done = run_probe(
        conf, tmp_path, "+hydra_cache.root=rel-cache", "hydra.job.chdir=true", "hydra.run.dir=run"
    )
    assert done.returncode == 0, done.stderr
    value = probe_results(tmp_path / "run")[0]["values"]["data.cache_dir"]
    assert Path(value).parent.parent == tmp_path / "rel-cache"


def test_listed_nodes_and_namespaces(tmp_path: Path, cache_root: Path) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
        data: {resize: 8, source: digits}
        prep: {norm: standard}
        paths:
          data_cache: ${cache_dir:data}
          both: ${cache_dir:prep,data.source}
        cache_dir: ${cache_dir:}
        nested:
          deep: {x: 1, here: "${cache_dir:.x,..top}"}
          top: 5
        "we/ird key": {v: 1, cache_dir: "${cache_dir:}"}
    """
        },
    )
    keys = "paths.data_cache,paths.both,cache_dir,nested.deep.here,we/ird key.cache_dir"
    done = run_probe(conf, tmp_path, root=cache_root, env=clean_env(PROBE_KEYS=keys))
    assert done.returncode == 0, done.stderr
    values = probe_results(tmp_path / "outputs")[0]["values"]
    cfg = OmegaConf.load(conf / "config.yaml")
    assert values["paths.data_cache"] == f"{cache_root}/data/{derive(cfg, ['data']).key}"
    assert values["paths.both"] == f"{cache_root}/prep/{derive(cfg, ['prep', 'data.source']).key}"
    assert Path(values["cache_dir"]).parent == cache_root / "cache_dir"
    here = derive(cfg, ["nested.deep.x", "nested.top"]).key
    assert values["nested.deep.here"] == f"{cache_root}/nested.deep.x/{here}"
    assert Path(values["we/ird key.cache_dir"]).parent == cache_root / "we_ird_key"


def test_hostile_names_never_leave_the_root(tmp_path: Path, cache_root: Path) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
        "..": {v: 1, cache_dir: "${cache_dir:}"}
        "../../etc": {v: 1, cache_dir: "${cache_dir:}"}
        "/abs": {v: 1, cache_dir: "${cache_dir:}"}
    """
        },
    )
    script = (
        "from omegaconf import OmegaConf\n"
        "import hydra_plugins.hydra_cache_plugin\n"
        f"cfg = OmegaConf.load({str(conf / 'config.yaml')!r})\n"
        "for k in ['..', '../../etc', '/abs']:\n"
        "    print(cfg[k]['cache_dir'])\n"
    )
    done = run(["-c", script], cwd=tmp_path, env=clean_env(HYDRA_CACHE_ROOT=str(cache_root)))
    assert done.returncode == 0, done.stderr
    for line in done.stdout.split():
        path = Path(line)
        assert path.parent.parent == cache_root
        assert path.parent.name not in (".", "..") and "/" not in path.parent.name
        assert path.resolve().is_relative_to(cache_root.resolve())


def _memo_config() -> DictConfig:
    return OmegaConf.create(
        {
            "base": 3,
            "data": {
                "a": 1,
                "b": "${base}",
                "l": [1, 2],
                "cache_dir": "${cache_dir:}",
                "file": "${.cache_dir}/x",
            },
        }
    )


@pytest.fixture
def derive_calls(monkeypatch: pytest.MonkeyPatch, cache_root: Path) -> list[object]:
    """Counts real derivations (a spy: every call still derives)."""
    import hydra_plugins.hydra_cache_plugin  # noqa: F401  (registers the resolver)
    from hydra_cache import resolver

    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(cache_root))
    calls: list[object] = []
    real = resolver.derive

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(None)  # count only: keep no reference to the config
        return real(*args, **kwargs)

    monkeypatch.setattr(resolver, "derive", counting)
    return calls


def test_repeated_access_derives_once(derive_calls: list[object]) -> None:
    cfg = _memo_config()
    seen = {cfg.data.cache_dir for _ in range(1000)}
    seen |= {cfg.data.file.rsplit("/", 1)[0] for _ in range(100)}
    assert len(seen) == 1
    assert len(derive_calls) == 1


@pytest.mark.parametrize(
    "mutation",
    [
        "c.data.a = 2",
        "c.data.a = True",
        "c.data.a = 1.0",
        "c.base = 4",
        "c.data.l.append(3)",
        "c.data.l[0] = 9",
        "c.data.new = 1",
        "del c.data['b']",
        "c.data.b = '${base}x'",
        "c.hydra_cache = {'salt': 's'}",
    ],
)
def test_memo_is_never_stale_after_a_change(mutation: str, derive_calls: list[object]) -> None:
    cfg = _memo_config()
    before = cfg.data.cache_dir
    exec(mutation, {"c": cfg})
    after = cfg.data.cache_dir
    fresh = OmegaConf.create(OmegaConf.to_container(cfg))  # a new object: no memo at all
    assert after == fresh.data.cache_dir
    assert after != before


def _groups_config() -> DictConfig:
    """Sibling groups of plain leaves: the walk decides them at once (``_plain_groups``)."""
    return OmegaConf.create(
        {
            "base": 3,
            "data": {
                "g1": {"a": 1, "b": "x"},
                "g2": {"a": 0.0, "b": "y"},
                "g3": {"a": 3, "b": "z"},
                "l": [1, 2],  # a list among the groups goes its own way
                "cache_dir": "${cache_dir:}",
            },
        }
    )


@pytest.fixture
def batched(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records each batch of sibling groups the walk decided at once (a spy)."""
    from hydra_cache.key import walk

    decided: list[object] = []
    real = walk._Walker._plain_groups

    def spying(self: Any, children: Any, values: Any) -> Any:
        found = real(self, children, values)
        if found is not None:
            decided.append(sorted(found))
        return found

    monkeypatch.setattr(walk._Walker, "_plain_groups", spying)
    return decided


def test_sibling_groups_decided_at_once_are_derived_once(
    derive_calls: list[object], batched: list[object]
) -> None:
    cfg = _groups_config()
    assert len({cfg.data.cache_dir for _ in range(100)}) == 1
    assert batched and len(derive_calls) == 1  # the snapshot it took holds on every access


@pytest.mark.parametrize(
    "mutations",
    [
        ["c.data.g2.b = 'changed'"],
        ["c.data.g1.a = True"],  # equal to 1, and not the same value
        ["c.data.g1.a = 1.0"],
        ["c.data.g2.a = -0.0"],  # equal to 0.0; JSON tells them apart
        ["c.data.g3 = {'a': 3, 'b': 'z', 'c': None}"],
        ["c.data.g3 = {'a': 3, 'b': 'z'}", "c.data.g3.a = 4"],  # a replaced group, then changed
        ["c.data.g2.new = 1"],
        ["del c.data.g2['b']"],
        ["c.data.g1.b = '${base}'", "c.base = 5"],
        ["c.data.g4 = {'a': 4}"],
        ["c.data.l[1] = 3"],
        ["c.data.g2['z'] = c.data.g2._get_node('b')", "del c.data.g2['b']"],  # a moved node
    ],
)
def test_memo_of_sibling_groups_decided_at_once_is_never_stale(
    mutations: list[str], derive_calls: list[object], batched: list[object]
) -> None:
    cfg = _groups_config()
    before = cfg.data.cache_dir
    assert batched == [["g1", "g2", "g3"]]  # the path under test was taken
    for mutation in mutations:  # each step: the key a config with no memo at all has
        exec(mutation, {"c": cfg})
        fresh = OmegaConf.create(OmegaConf.to_container(cfg))
        assert cfg.data.cache_dir == fresh.data.cache_dir, mutation
    assert cfg.data.cache_dir != before


def test_memo_is_per_config_object(derive_calls: list[object]) -> None:
    one, two = _memo_config(), _memo_config()
    two.data.a = 5
    assert one.data.cache_dir != two.data.cache_dir
    assert one.data.cache_dir == _memo_config().data.cache_dir


def test_a_per_run_value_in_a_hashed_node_is_named_in_a_warning(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
        data:
          resize: 8
          stamp: ${now:%H-%M-%S-%f}
          out: ${hydra:runtime.output_dir}
          cache_dir: ${cache_dir:}
    """
        },
    )
    done = run_probe(conf, tmp_path, "hydra.run.dir=run", root=cache_root)
    assert done.returncode == 0, done.stderr
    for key in ("data.stamp", "data.out"):
        assert re.search(
            rf"\[WARNING\] - data\.cache_dir: {key} holds a per-run value, so "
            r"its key changes on every run",
            done.stdout + done.stderr,
        ), key


def test_the_memo_lives_and_dies_with_its_config(derive_calls: list[object]) -> None:
    import gc
    import pickle
    import weakref

    cfg = _memo_config()
    path = cfg.data.cache_dir
    copied = pickle.loads(pickle.dumps(cfg))
    assert len(pickle.dumps(cfg)) < 2 * len(pickle.dumps(_memo_config()))
    assert copied.data.cache_dir == path and len(derive_calls) == 2  # re-derived, not carried
    alive = weakref.ref(cfg)
    del cfg, copied
    gc.collect()
    assert alive() is None, "a resolved config must not be kept alive by the memo"
