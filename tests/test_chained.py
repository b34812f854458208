"""Chained stages: a downstream key changes exactly when an upstream's key does.

Every case of issue 10's "silently wrong" list for chains is reproduced here as reported, on a
real Hydra app or the CLI, and shown to hold now.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from conftest import TESTS, clean_env, run, write_config
from hydra_cache._omegaconf import register_resolver
from hydra_cache.key import derive
from hydra_cache.resolver import CacheDirError, register, resolve_all
from test_explain import cli

register()

STAGES_APP = TESTS / "apps" / "stages.py"
THREE_STAGES = {
    "config.yaml": """
    raw: {size: 100, seed: 0, cache_dir: "${cache_dir:}"}
    tokens: {vocab: 50, source: "${raw.cache_dir}", cache_dir: "${cache_dir:}"}
    features:
      dim: 8
      source: ${tokens.cache_dir}
      arrays: ${tokens.cache_dir}/out.json
      cache_dir: ${cache_dir:}
"""
}


def stages(conf: Path, cwd: Path, root: Path, *overrides: str) -> dict[str, tuple[str, str]]:
    """Run the real chained app; stage -> (outcome, path)."""
    done = run(
        [str(STAGES_APP), "-cd", str(conf), "hydra.run.dir=run", *overrides],
        cwd=cwd,
        env=clean_env(HYDRA_CACHE_ROOT=str(root)),
    )
    assert done.returncode == 0, done.stderr
    found = re.findall(r"^STAGE (\w+) (\w+) (\S+)$", done.stdout, re.M)
    return {name: (outcome, path) for name, outcome, path in found}


def test_a_three_stage_chain_invalidates_exactly_the_right_stages(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(tmp_path / "conf", THREE_STAGES)
    first = stages(conf, tmp_path, cache_root)
    assert {o for o, _ in first.values()} == {"built"}
    again = stages(conf, tmp_path, cache_root)
    assert {o for o, _ in again.values()} == {"hit"}

    def changed(*overrides: str) -> set[str]:
        after = stages(conf, tmp_path, cache_root, *overrides)
        return {name for name in after if after[name][1] != first[name][1]}

    assert changed("raw.size=101") == {"raw", "tokens", "features"}
    assert changed("tokens.vocab=51") == {"tokens", "features"}
    assert changed("features.dim=9") == {"features"}
    # The rebuilt features were built from the rebuilt raw data, not served from the old one.
    after = stages(conf, tmp_path, cache_root, "raw.size=101")
    built = json.loads((Path(after["features"][1]) / "out.json").read_text())
    assert '\\"size\\": 101' in built["upstream"]


CHAIN_FORMS = {
    "interpolation": {
        "up": {"a": 1, "cache_dir": "${cache_dir:}"},
        "down": {"source": "${up.cache_dir}", "cache_dir": "${cache_dir:}"},
    },
    "path inside": {
        "up": {"a": 1, "cache_dir": "${cache_dir:}"},
        "down": {"arrays": "${up.cache_dir}/arrays.npz", "cache_dir": "${cache_dir:}"},
    },
    "listed in the arguments": {
        "up": {"a": 1, "cache_dir": "${cache_dir:}"},
        "down": {"n": 2, "cache_dir": "${cache_dir:up.cache_dir,.n}"},
    },
    "mixed with a parameter": {
        "up": {"a": 1, "cache_dir": "${cache_dir:}"},
        "down": {"v": "v${up.a}-${up.cache_dir}", "cache_dir": "${cache_dir:}"},
    },
    "through a custom resolver": {
        "up": {"a": 1, "cache_dir": "${cache_dir:}"},
        "down": {"files": "${hc_test_files:${up.cache_dir}}", "cache_dir": "${cache_dir:}"},
    },
    "two hops": {
        "up": {"a": 1, "cache_dir": "${cache_dir:}"},
        "mid": {"x": "${up.cache_dir}", "cache_dir": "${cache_dir:}"},
        "down": {"y": "${mid.cache_dir}/z", "cache_dir": "${cache_dir:}"},
    },
    "nested deep in a list": {
        "up": {"a": 1, "cache_dir": "${cache_dir:}"},
        "down": {"l": [{"p": ["${up.cache_dir}"]}], "cache_dir": "${cache_dir:}"},
    },
}
register_resolver("hc_test_files", lambda path: {"train": f"{path}/train", "test": f"{path}/test"})


@pytest.mark.parametrize("form", list(CHAIN_FORMS))
def test_every_form_of_chaining_follows_the_upstream(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    base = CHAIN_FORMS[form]
    before = OmegaConf.create(base)
    changed = OmegaConf.create(base)
    changed.up.a = 2
    assert before.up.cache_dir != changed.up.cache_dir
    assert before.down.cache_dir != changed.down.cache_dir, form
    # ... and never with the root: another root gives the same keys.
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "elsewhere"))
    moved = OmegaConf.create(base)
    assert Path(moved.down.cache_dir).name == Path(before.down.cache_dir).name


def test_resolve_and_instantiate_give_the_same_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra.utils import instantiate

    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    config = {
        "data": {
            "resize": 8,
            "out": "${.cache_dir}/x",  # sorts before cache_dir: resolved first by resolve()
            "cache_dir": "${cache_dir:}",
        },
        "features": {
            "_target_": "builtins.dict",
            "arrays": "${data.cache_dir}/arrays.npz",
            "cache_dir": "${cache_dir:}",
        },
    }
    plain = OmegaConf.create(config)
    expected = (plain.data.cache_dir, plain.features.cache_dir)
    assert instantiate(OmegaConf.create(config).features)["cache_dir"] == expected[1]
    fresh = OmegaConf.create(config)  # resolve() before any access: derives inside resolve
    OmegaConf.resolve(fresh)
    assert (fresh.data.cache_dir, fresh.features.cache_dir) == expected
    OmegaConf.resolve(plain)
    assert (plain.data.cache_dir, plain.features.cache_dir) == expected
    # ... and with another root, the resolved keys do not move with it.
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "other"))
    other = OmegaConf.create(config)
    OmegaConf.resolve(other)
    assert Path(other.features.cache_dir).name == Path(expected[1]).name


def test_the_memo_notices_a_replaced_upstream_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    cfg = OmegaConf.create(
        {
            "raw": {"n": 1, "cache_dir": "${cache_dir:}"},
            "data": {"source": "${raw.cache_dir}", "cache_dir": "${cache_dir:}"},
        }
    )
    before = cfg.data.cache_dir
    cfg.data.source = "/datasets/plain"
    assert cfg.data.cache_dir != before
    cfg.data.source = "${raw.cache_dir}"
    assert cfg.data.cache_dir == before


def test_a_cycle_of_cache_dirs_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    cfg = OmegaConf.create(
        {
            "a": {"x": "${b.cache_dir}", "cache_dir": "${cache_dir:}"},
            "b": {"y": "${a.cache_dir}", "cache_dir": "${cache_dir:}"},
        }
    )
    with pytest.raises(Exception, match="cycle") as caught:
        _ = cfg.a.cache_dir
    assert "fix:" in str(caught.value).splitlines()[0]
    # Behind a chain, only the cycle is listed, not the eighty stages that led to it.
    stages: dict[str, Any] = {"t0": {"src": "${a.cache_dir}", "cache_dir": "${cache_dir:}"}}
    for i in range(1, 80):
        stages[f"t{i}"] = {"src": f"${{t{i - 1}.cache_dir}}", "cache_dir": "${cache_dir:}"}
    chained = OmegaConf.merge(cfg, stages)
    with pytest.raises(Exception, match="cycle") as caught:
        _ = chained.t79.cache_dir
    assert "(a -> b -> a)" in str(caught.value) and "t40" not in str(caught.value)


def test_keys_why_manifest_and_metadata_name_the_upstreams(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(tmp_path / "conf", THREE_STAGES)
    stages(conf, tmp_path, cache_root)
    done = cli(tmp_path, "keys", "-cd", str(conf), "--format", "json", root=cache_root)
    assert done.returncode == 0, done.stderr
    rows = {r["config_key"]: r for r in json.loads(done.stdout)}
    assert rows["raw.cache_dir"]["upstreams"] == []
    assert [u["config_key"] for u in rows["tokens.cache_dir"]["upstreams"]] == ["raw.cache_dir"]
    assert [u["config_key"] for u in rows["features.cache_dir"]["upstreams"]] == [
        "tokens.cache_dir"
    ]
    assert rows["tokens.cache_dir"]["upstreams"][0]["key"] == rows["raw.cache_dir"]["key"]
    text = cli(tmp_path, "keys", "-cd", str(conf), root=cache_root).stdout
    assert re.search(r"^features\.cache_dir\s.*\btokens\.cache_dir\b", text, re.M), text
    meta = json.loads((Path(rows["features.cache_dir"]["path"]) / ".hydra-cache.json").read_text())
    assert {u["config_key"] for u in meta["upstreams"]} == {"tokens.cache_dir", "raw.cache_dir"}
    # why, for a downstream miss caused at the root of the chain:
    done = cli(tmp_path, "why", "-cd", str(conf), "raw.size=50", root=cache_root)
    assert done.returncode == 0, done.stderr
    assert "upstream raw.cache_dir changed: raw.size: 100 -> 50" in done.stdout, done.stdout
    blocks = done.stdout.split("\n")
    features = next(line for line in blocks if line.startswith("features.cache_dir:"))
    assert features.endswith(
        "key changed: upstream tokens.cache_dir changed, because its upstream raw.cache_dir "
        "changed: raw.size: 100 -> 50"
    ), done.stdout


def test_a_manifest_records_upstreams_and_entries_built_after_resolve(
    tmp_path: Path, cache_root: Path
) -> None:
    conf = write_config(tmp_path / "conf", THREE_STAGES)
    done = run(
        [
            str(STAGES_APP),
            "-cd",
            str(conf),
            "hydra.run.dir=run",
            "hydra/callbacks=cache_manifest",
        ],
        cwd=tmp_path,
        env=clean_env(HYDRA_CACHE_ROOT=str(cache_root)),
    )
    assert done.returncode == 0, done.stderr
    manifest = OmegaConf.to_container(OmegaConf.load(tmp_path / "run/.hydra/cache.yaml"))
    assert isinstance(manifest, dict)
    by_key = {e["config_key"]: e for e in manifest["entries"]}
    assert [u["config_key"] for u in by_key["features.cache_dir"]["upstreams"]] == [
        "tokens.cache_dir"
    ]
    assert {e["status_at_end"] for e in manifest["entries"]} == {"built"}


def test_diff_marks_a_downstream_invalidated_because_of_its_upstream(tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "repo"
    conf = write_config(repo / "conf", THREE_STAGES)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    text = (conf / "config.yaml").read_text().replace("size: 100", "size: 200")
    (conf / "config.yaml").write_text(text)
    subprocess.run([*git, "commit", "-qam", "bigger raw"], check=True)
    done = cli(
        repo,
        "diff",
        "-cd",
        str(conf),
        "--base",
        "HEAD~1",
        "--head",
        "HEAD",
        "--format",
        "json",
        root=tmp_path / "root",
    )
    assert done.returncode == 0, done.stderr
    caches = {c["config_key"]: c for c in json.loads(done.stdout)["sets"][0]["caches"]}
    assert {k for k, c in caches.items() if c["status"] == "invalidated"} == {
        "raw.cache_dir",
        "tokens.cache_dir",
        "features.cache_dir",
    }
    assert not caches["raw.cache_dir"]["because_of_upstream"]
    assert caches["features.cache_dir"]["because_of_upstream"]
    assert any(
        "upstream raw.cache_dir changed: raw.size: 100 -> 200" in cause
        for cause in caches["features.cache_dir"]["upstream_causes"]
    ), caches["features.cache_dir"]
    markdown = cli(
        repo, "diff", "-cd", str(conf), "--base", "HEAD~1", "--head", "HEAD",
        "--format", "markdown", root=tmp_path / "root",
    ).stdout  # fmt: skip
    assert "upstream raw.cache_dir changed" in markdown
    assert "<upstream:" not in markdown


def test_the_audit_counts_reads_of_upstream_values_as_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra_cache.testing import assert_key_covers

    conf = write_config(
        tmp_path / "conf",
        {
            "config.yaml": """
            raw: {size: 3, cache_dir: "${cache_dir:}"}
            features: {dim: 2, source: "${raw.cache_dir}", cache_dir: "${cache_dir:}"}
            """
        },
    )
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))

    def build(cfg: Any, staging: Path) -> None:
        # The features build looks at its upstream's parameters: covered by its digest.
        (staging / "x").write_text(f"{cfg.raw.size} {cfg.features.dim}")

    assert_key_covers(conf, cache="features.cache_dir", build=build)


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX symlinks")
def test_the_key_never_depends_on_the_root_or_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = []
    for home in ("alice", "bob"):
        monkeypatch.setenv("HOME", str(tmp_path / home))
        monkeypatch.delenv("HYDRA_CACHE_ROOT", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        cfg = OmegaConf.create(CHAIN_FORMS["two hops"])
        keys.append(Path(cfg.down.cache_dir).name)
        assert cfg.down.cache_dir.startswith(str(tmp_path / home))
    assert keys[0] == keys[1]
    assert os.environ["HOME"].endswith("bob")


def test_derive_alone_needs_no_resolver_for_plain_configs() -> None:
    assert derive(OmegaConf.create({"data": {"a": 1}}), ["data"]).payload["schema"] == 2
    assert resolve_all(OmegaConf.create({"data": {"a": 1}})) == []


def test_a_path_this_node_had_in_another_config_is_not_its_own_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm start from an earlier entry of the same node joins the key; it is not 'own'."""
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    earlier = OmegaConf.create({"data": {"resize": 8, "cache_dir": "${cache_dir:}"}}).data.cache_dir
    cold = OmegaConf.create({"data": {"resize": 4, "cache_dir": "${cache_dir:}"}})
    warm = OmegaConf.create(
        {"data": {"resize": 4, "init_from": earlier, "cache_dir": "${cache_dir:}"}}
    )
    assert warm.data.cache_dir != cold.data.cache_dir


@pytest.mark.parametrize("suffix", [".tar", "-v2", "_old", "/x"])
def test_an_upstream_path_with_a_suffix_still_joins_as_its_digest(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "data": {"a": 1, "cache_dir": "${cache_dir:}"},
        "features": {"src": "${data.cache_dir}" + suffix, "cache_dir": "${cache_dir:}"},
    }
    found = set()
    for root in ("rootA", "rootB"):
        monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / root))
        found.add(Path(OmegaConf.create(config).features.cache_dir).name)
    assert len(found) == 1


def test_instantiate_control_keys_do_not_change_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra.utils import instantiate

    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
    config = {"features": {"_target_": "builtins.dict", "k": 3, "cache_dir": "${cache_dir:}"}}
    expected = OmegaConf.create(config).features.cache_dir
    partial = instantiate(OmegaConf.create(config).features, _partial_=True)()
    assert partial["cache_dir"] == expected
    flat = instantiate(OmegaConf.create(config).features, _recursive_=False)
    assert flat["cache_dir"] == expected


def test_deep_configs_and_long_chains_hash_or_fail_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One stack frame per level of nesting: a config 600 levels deep and a chain of 50
    stages, each 4 levels deep, hash under Python's default recursion limit; past the limit,
    the error names the node and the fix instead of a RecursionError."""
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path))
    limit = sys.getrecursionlimit()

    def nested(depth: int) -> Any:
        node: dict[str, Any] = {"leaf": 1}
        for level in range(depth):
            node = {"x": node, "v": level}
        node["cache_dir"] = "${cache_dir:}"
        sys.setrecursionlimit(20 * depth + limit)  # only to build it: OmegaConf recurses too
        try:
            return OmegaConf.create({"data": node})
        finally:
            sys.setrecursionlimit(limit)

    assert nested(600).data.cache_dir.startswith(str(tmp_path))
    chain: dict[str, Any] = {}
    for stage in range(50):
        body: dict[str, Any] = {
            "p": stage,
            "src": f"${{s{stage - 1}.cache_dir}}/x" if stage else "",
        }
        for level in range(4):
            body = {"sub": body, "q": level}
        chain[f"s{stage}"] = {**body, "cache_dir": "${cache_dir:}"}
    assert OmegaConf.create(chain).s49.cache_dir.startswith(str(tmp_path))
    with pytest.raises(CacheDirError, match=r"data is too deep to hash .*; fix: "):
        _ = nested(3000).data.cache_dir


def test_a_chain_past_the_recursion_limit_fails_at_once_instead_of_retrying(
    tmp_path: Path,
) -> None:
    """Past Python's limit, a memo check used to swallow the RecursionError and re-derive,
    which hit it again one stage further up: time doubled per stage (a hang at 150 stages).
    Run in a child process with a timeout, so a regression fails instead of hanging CI."""
    probe = tmp_path / "chain.py"
    probe.write_text(
        "from omegaconf import OmegaConf\n"
        "from hydra_cache.resolver import register\n"
        "register()\n"
        "stages = {'s0': {'n': 0, 'cache_dir': '${cache_dir:}'}}\n"
        "for i in range(1, 250):\n"
        "    stages[f's{i}'] = {'n': i, 'source': f'${{s{i - 1}.cache_dir}}/out.json',\n"
        "                       'cache_dir': '${cache_dir:}'}\n"
        "cfg = OmegaConf.create(stages)\n"
        "for i in range(250):\n"
        "    try:\n"
        "        cfg[f's{i}'].cache_dir\n"
        "    except Exception as error:\n"
        "        print(i, str(error).splitlines()[0])\n"
        "        break\n"
        "else:\n"
        "    print('all resolved')\n"
        "try:\n"  # as an app meets it: the last stage first, on a config with no memo
        "    OmegaConf.create(stages).s249.cache_dir\n"
        "except Exception as error:\n"
        "    print('last:', str(error))\n"
    )
    env = {**clean_env(), "HYDRA_CACHE_ROOT": str(tmp_path / "root")}
    done = subprocess.run(
        [sys.executable, str(probe)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "all resolved" in done.stdout or "too deep to hash" in done.stdout, done.stdout
    # One line naming the stage asked for and the one that failed, not every stage between.
    last = done.stdout.split("last: ", 1)[1]
    assert last.startswith("s249.cache_dir: upstream s"), last
    assert last.count(".cache_dir:") == 2 and last.count("\n") == 1, last
    assert "too deep to hash" in last, last


_ORDER_PROBE = """
import json, sys
from omegaconf import OmegaConf
from hydra_cache.resolver import register
from hydra_cache.key import walk
register()
shortcuts, first, up_path, layout = sys.argv[1:5]
walk.SHORTCUTS = shortcuts == "on"
data = {"a_src": "${up.cache_dir}"}
if layout == "groups":  # sibling groups, decided at once by the fast path
    data.update({"g1": {"p": up_path + "/arrays.npz"}, "g2": {"x": 1}})
else:  # the same string as a leaf after the interpolation
    data.update({"p": up_path + "/arrays.npz", "g2": {"x": 1}})
data["cache_dir"] = "${cache_dir:}"
cfg = OmegaConf.create({"up": {"n": 1, "cache_dir": "${cache_dir:}"}, "data": data})
if first == "up":
    cfg.up.cache_dir
print(json.dumps(cfg.data.cache_dir))
"""


def test_a_key_does_not_depend_on_which_entry_a_process_derived_first(tmp_path: Path) -> None:
    """A string holding an upstream's path joins as the upstream's digest even when that
    upstream's root becomes known only halfway through the walk (the upstream is met through
    an earlier sibling). Found by an attack: `data` first gave another key than `up` first, so
    the app built an entry that `hydra-cache keys` called a miss."""
    work = tmp_path / "work"  # the root is neither under $HOME nor under the launch dir
    work.mkdir()
    env = {**clean_env(), "HYDRA_CACHE_ROOT": str(tmp_path / "root"), "HOME": str(work)}

    def key(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", _ORDER_PROBE, *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout))

    up = OmegaConf.create({"up": {"n": 1, "cache_dir": "${cache_dir:}"}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYDRA_CACHE_ROOT", str(tmp_path / "root"))
        register()
        up_path = up.up.cache_dir
    for layout in ("groups", "leaf"):
        found = {key(s, first, up_path, layout) for s in ("on", "off") for first in ("data", "up")}
        assert len(found) == 1, (layout, found)
