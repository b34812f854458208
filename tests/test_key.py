"""Key derivation: deterministic, sensitive to every hashed leaf, blind to everything else."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from hydra_cache._omegaconf import register_resolver
from hydra_cache.key import SCHEMA_VERSION, derive
from hydra_cache.resolver import register

register()


def key_of(cfg: Any, *nodes: str, **kwargs: Any) -> str:
    root = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    return derive(root, nodes or ("data",), **kwargs).key


class Color(Enum):
    RED = 1
    BLUE = 2


# Golden keys: any change here changes every user's cache location. A deliberate change to
# derivation must bump SCHEMA_VERSION and re-pin these.
GOLDEN: list[tuple[str, dict[str, Any], tuple[str, ...], dict[str, Any], str]] = [
    ("flat ints", {"data": {"a": 1, "b": 2}}, ("data",), {}, "bac1e534c52dfe97"),
    ("float", {"data": {"lr": 0.1}}, ("data",), {}, "43105bb8e11e554b"),
    ("int one", {"data": {"v": 1}}, ("data",), {}, "e19e5ce199db2058"),
    ("float one", {"data": {"v": 1.0}}, ("data",), {}, "e57b8bd0364d0205"),
    ("bool true", {"data": {"v": True}}, ("data",), {}, "9502d15610bed3d9"),
    ("string one", {"data": {"v": "1"}}, ("data",), {}, "620abf84f85c1886"),
    ("none", {"data": {"v": None}}, ("data",), {}, "f69560a9a7d7a74a"),
    (
        "list order",
        {"data": {"resize": [224, 224], "crop": [1, 2]}},
        ("data",),
        {},
        "c0224f59a73c0d0f",
    ),
    (
        "nested",
        {"data": {"pre": {"norm": "standard", "aug": {"flip": True}}}},
        ("data",),
        {},
        "c823b16bbe3b4d66",
    ),
    ("salted", {"data": {"a": 1}}, ("data",), {"salt": "v2"}, "94edc67b5159be2b"),
    (
        "excluded",
        {"data": {"a": 1, "workers": 8}},
        ("data",),
        {"exclude": ["data.workers"]},
        "d3f48c0b041e63f0",
    ),
    ("two nodes", {"data": {"a": 1}, "prep": {"b": 2}}, ("data", "prep"), {}, "ac776b4c3a82d1da"),
    ("root node", {"a": 1, "hydra": {"x": 1}}, ("",), {}, "d74ed6abf50c19e3"),
    ("interpolated", {"base": 3, "data": {"a": "${base}"}}, ("data",), {}, "b50ff15e8b6351df"),
    (
        "string interp",
        {"name": "x", "data": {"a": "pre_${name}"}},
        ("data",),
        {},
        "a71cf1fc432b900d",
    ),
    ("unicode", {"data": {"label": "caf\u00e9 \u2603"}}, ("data",), {}, "5f7a83da6ac16212"),
    ("big int", {"data": {"n": 2**70}}, ("data",), {}, "359b3dfa2b4f789e"),
    (
        "shortest float",
        {"data": {"x": 1e-7, "y": 0.30000000000000004}},
        ("data",),
        {},
        "887db85f985328bb",
    ),
]


def test_schema_version_is_pinned() -> None:
    assert SCHEMA_VERSION == 2


@pytest.mark.parametrize(
    ("name", "config", "nodes", "kwargs", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN]
)
def test_golden_keys(
    name: str, config: dict[str, Any], nodes: tuple[str, ...], kwargs: dict[str, Any], expected: str
) -> None:
    assert key_of(config, *nodes, **kwargs) == expected


def test_golden_keys_are_all_different() -> None:
    keys = [g[4] for g in GOLDEN]
    assert len(set(keys)) == len(keys)


def test_int_float_bool_none_and_string_stay_distinct() -> None:
    values = [1, 1.0, True, "1", None, "true", "null", 0, False, 0.0, "", [], {}]
    keys = {key_of({"data": {"v": v}}) for v in values}
    assert len(keys) == len(values)


def test_key_order_and_flow_or_block_style_do_not_matter(tmp_path: Path) -> None:
    block = "data:\n  resize:\n    - 224\n    - 224\n  normalize: true\n  name: x\n"
    flow = "data: {name: x, normalize: true, resize: [224, 224]}\n"
    assert key_of(OmegaConf.create(block)) == key_of(OmegaConf.create(flow))


def test_lists_keep_their_order() -> None:
    assert key_of({"data": {"v": [1, 2]}}) != key_of({"data": {"v": [2, 1]}})


def test_key_is_stable_across_processes_and_hash_seeds() -> None:
    script = (
        "from omegaconf import OmegaConf\n"
        "from hydra_cache.key import derive\n"
        "cfg = OmegaConf.create({'data': {'s': 'abc', 'm': {'z': 1, 'a': [1.5, None, True]},"
        " 'k': {'q': 'x', 'b': 'y'}}})\n"
        "print(derive(cfg, ['data']).key)\n"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            check=True,
        ).stdout.strip()
        for seed in ("0", "1", "12345", "random")
    }
    assert len(seen) == 1


def test_interpolations_are_resolved_before_hashing() -> None:
    via_interpolation = {"base": {"size": 32}, "data": {"size": "${base.size}"}}
    literal = {"base": {"size": 99}, "data": {"size": 32}}
    assert key_of(via_interpolation) == key_of(literal)
    changed = {"base": {"size": 64}, "data": {"size": "${base.size}"}}
    assert key_of(changed) != key_of(via_interpolation)


def test_enums_and_paths_hash_as_strings() -> None:
    cfg = OmegaConf.create({"data": {"color": Color.RED, "where": Path("/data/x")}})
    assert key_of(cfg) == key_of({"data": {"color": "RED", "where": "/data/x"}})
    assert key_of({"data": {"color": Color.BLUE}}) != key_of(cfg)


def test_hydra_node_and_hydra_cache_node_never_join_but_salt_does() -> None:
    base = {"a": 1, "hydra": {"run": {"dir": "x"}}, "hydra_cache": {"root": "/r1"}}
    other = {"a": 1, "hydra": {"run": {"dir": "y"}}, "hydra_cache": {"root": "/r2"}}
    assert key_of(base, "") == key_of(other, "")
    assert key_of(base, "", salt="s1") != key_of(base, "", salt="s2")


def test_excluded_keys_do_not_change_the_key() -> None:
    one = {"data": {"a": 1, "workers": 1, "io": {"threads": 2}}}
    two = {"data": {"a": 1, "workers": 8, "io": {"threads": 16}}}
    exclude = ["data.workers", "data.io"]
    assert key_of(one, exclude=exclude) == key_of(two, exclude=exclude)
    assert key_of(one) != key_of(two)


def test_own_cache_dir_is_left_out_and_another_entrys_joins_as_its_digest() -> None:
    cfg = OmegaConf.create(
        {
            "data": {
                "resize": 8,
                "cache_dir": "${cache_dir:}",
                "train_file": "${.cache_dir}/train.npz",
                "nested": {"file": "${..cache_dir}/x"},
                "other": "${other_cache.cache_dir}",
            },
            "other_cache": {"n": 1, "cache_dir": "${cache_dir:}"},
        }
    )
    derived = derive(cfg, ["data"])
    upstream = derive(cfg, ["other_cache"]).digest
    assert derived.payload["nodes"]["data"] == {
        "resize": 8,
        "nested": {},
        "other": f"<upstream:{upstream}>",
    }
    assert set(derived.derived_from_cache_dir) == {
        "data.cache_dir",
        "data.train_file",
        "data.nested.file",
    }
    assert [up.config_key for up in derived.upstreams] == ["other_cache.cache_dir"]


def test_every_hashed_leaf_changes_the_key_even_deep_in_lists() -> None:
    cfg = {"data": {"a": 1, "b": [1, {"c": "x", "d": [0.5, None]}], "e": {"f": False}}}
    base = key_of(cfg)
    changes = [
        ("a", 2),
        ("b.0", 3),
        ("b.1.c", "y"),
        ("b.1.d.0", 0.25),
        ("b.1.d.1", 0),
        ("e.f", True),
    ]
    for where, value in changes:
        changed = OmegaConf.create(cfg)
        OmegaConf.update(changed, f"data.{where}", value, force_add=True)
        assert key_of(changed) != base, where


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    # "???" is OmegaConf's missing value and "${" starts an interpolation: not plain strings.
    st.text(max_size=8).filter(lambda t: t != "???" and "$" not in t and "\\" not in t),
)
names = st.text("abcdefghij_", min_size=1, max_size=6)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(names, children, min_size=1, max_size=3),
    ),
    max_leaves=12,
)


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, (*path, i))]
    return [path]


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


def _different(old: Any) -> Any:
    """A value that differs from ``old`` in value or in type."""
    if old is None:
        return 0
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return float(old)  # same number, other type: must still change the key
    if isinstance(old, float):
        return old + 1.0 if abs(old) < 1e15 else -old if old else 1.0
    return old + "x"


@settings(max_examples=150, deadline=None)
@given(tree=st.dictionaries(names, trees, min_size=1, max_size=4))
def test_property_every_leaf_changes_the_key(tree: dict[str, Any]) -> None:
    base = key_of({"data": tree})
    for path in _leaf_paths(tree):
        old = tree
        for step in path:
            old = old[step]
        assert key_of({"data": _replace(tree, path, _different(old))}) != base, path


@settings(max_examples=100, deadline=None)
@given(tree=st.dictionaries(names, trees, min_size=1, max_size=4))
def test_property_key_ignores_dict_order(tree: dict[str, Any]) -> None:
    reordered = json.loads(json.dumps(tree, sort_keys=True))
    reversed_order = dict(reversed(list(tree.items())))
    assert key_of({"data": tree}) == key_of({"data": reordered}) == key_of({"data": reversed_order})


def test_secrets_and_environment_values_are_redacted_but_keyed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HC_CANARY_TOKEN", "canary-abc123")
    cfg = OmegaConf.create(
        {
            "data": {
                "password": "hunter2",
                "api_key": "k-999",
                "remote": "${oc.env:HC_CANARY_TOKEN}",
                "tokenizer": "bpe",
                "size": 3,
            }
        }
    )
    derived = derive(cfg, ["data"])
    shown = json.dumps(derived.redacted_payload())
    for secret in ("hunter2", "k-999", "canary-abc123"):
        assert secret not in shown
    assert '"tokenizer": "bpe"' in shown and '"size": 3' in shown
    monkeypatch.setenv("HC_CANARY_TOKEN", "canary-other")
    assert derive(cfg, ["data"]).key != derived.key


def test_volatile_values_are_named() -> None:
    cfg = OmegaConf.create({"data": {"a": 1, "stamp": "${now:%H%M%S}"}})
    register_resolver("now", lambda fmt: "123456")
    assert derive(cfg, ["data"]).volatile == ("data.stamp",)


def test_payload_is_the_documented_canonical_json() -> None:
    import hashlib

    text = '{"nodes":{"data":{"a":1,"b":2.5,"c":[true,null,"x"]}},"salt":null,"schema":2}'
    derived = derive(
        OmegaConf.create({"data": {"c": [True, None, "x"], "b": 2.5, "a": 1}}), ["data"]
    )
    assert derived.digest == hashlib.sha256(text.encode()).hexdigest()
    assert derived.key == derived.digest[:16]


REFERENCE_CASES = [
    {"a": 1, "data": {"v": "${a}"}},
    {"a": "x", "data": {"v": "pre_${a}_post"}},
    {"a": 1.5, "b": True, "c": None, "data": {"v": "${a}/${b}/${c}"}},
    {"data": {"x": 3, "v": "${.x}", "n": {"w": "${..x}", "z": "${.w}"}}},
    {"data": {"v": "${b.c}"}, "b": {"c": "${d}"}, "d": 7},
    {"a": [1, 2], "data": {"v": "${a}"}},
    {"a": {"k": 1}, "data": {"v": "${a}"}},
    {"a": 5, "data": {"v": "\\${a}", "w": "${a}\\\\"}},
    {"a": "x", "data": {"v": "${oc.env:HOME,h}_${a}"}},
    {"a": "${b}", "b": 2, "data": {"v": "${a}"}},
    {"a": 1, "data": {"v": "${ a }"}},
]


@pytest.mark.parametrize("config", REFERENCE_CASES)
def test_fast_reference_resolution_matches_omegaconf(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hydra_cache.key.walk as key_module
    from hydra_cache.key.refs import NOT_SIMPLE

    fast = derive(OmegaConf.create(config), ["data"])
    monkeypatch.setattr(key_module, "resolve_simple", lambda node, raw, hook=None: NOT_SIMPLE)
    slow = derive(OmegaConf.create(config), ["data"])
    assert fast.payload == slow.payload and fast.key == slow.key


def test_simple_references_take_the_fast_path() -> None:
    from hydra_cache.key.refs import NOT_SIMPLE, resolve_simple

    cfg = OmegaConf.create(
        {
            "a": 1,
            "s": "x",
            "d": {"x": 2, "v": "${a}", "w": "${.x}-${s}", "e": "${oc.env:HOME}", "m": "${nope}"},
        }
    )
    node = cfg.d._get_node
    assert resolve_simple(node("v"), "${a}") == 1
    assert resolve_simple(node("w"), "${.x}-${s}") == "2-x"
    assert resolve_simple(node("e"), "${oc.env:HOME}") is NOT_SIMPLE
    assert resolve_simple(node("m"), "${nope}") is NOT_SIMPLE


UPSTREAM_ROOT = "/cache-root"

#: Leaves that each send a container off the fast path: an interpolation, a missing value,
#: credentials, paths under a relative_to base or a machine path, an enum, bytes.
tricky_leaves = st.sampled_from(
    [
        "${top}",
        "pre_${top}",
        "???",
        "https://user:hunter22@host/x",
        "password=hunter22",
        "/base/project/data",
        "/home/alice/x",
        "s3://bucket/key?X-Amz-Signature=abc",
        b"\x00\x01",
        Color.RED,
        "-u user:pass",
        UPSTREAM_ROOT + "/up/" + "0" * 16 + "/arrays.npz",  # another entry's path
        UPSTREAM_ROOT + "/up/" + "1" * 16,  # a path under the root that names no entry
    ]
)
#: Key names that send a container off the fast path: credential names, instantiate controls,
#: keys that are not strings (and "RED", which joins as Color.RED does: refused alike).
tricky_names = st.sampled_from(
    ["api_key", "password", "_partial_", "hf_token", "tokens", 3, Color.BLUE, "RED", Color.RED]
)
mixed_trees = st.recursive(
    st.one_of(leaves, tricky_leaves),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(st.one_of(names, tricky_names), children, min_size=1, max_size=4),
    ),
    max_leaves=16,
)


#: Sibling groups of leaves, mostly plain (the walk then decides all groups at once), beside
#: other children now and then.
sibling_groups = st.dictionaries(
    names,
    st.one_of(
        st.dictionaries(names, leaves, min_size=1, max_size=4),
        st.dictionaries(st.one_of(names, tricky_names), st.one_of(leaves, tricky_leaves)),
        st.lists(leaves, min_size=1, max_size=3),
        leaves,
    ),
    min_size=2,
    max_size=6,
)


def snapshot_shape(snapshot: Any) -> Any:
    """What a memo check compares, as it pairs it: each container with its content, each dict
    with its child nodes and keys, each leaf node with its raw value (in any order: the fast
    paths record sibling groups together, the loop one by one)."""
    children, keys = iter(snapshot.children), iter(snapshot.keys)
    dicts = sorted(
        (id(d), tuple(id(next(children)) for _ in d), tuple(next(keys) for _ in d))
        for d in snapshot.dicts
    )
    list_children = iter(snapshot.list_children)
    lists = sorted((id(x), tuple(id(next(list_children)) for _ in x)) for x in snapshot.lists)
    return (
        sorted(zip(map(id, snapshot.containers), map(id, snapshot.contents), snapshot.sizes)),
        dicts,
        lists,
        sorted(zip(map(id, snapshot.nodes), map(id, snapshot.raws))),
        len(snapshot.nodes) == len(snapshot.raws),
        [next(children, None), next(keys, None), next(list_children, None)],  # none left over
    )


@settings(max_examples=250, deadline=None)
@given(
    tree=st.one_of(
        st.dictionaries(st.one_of(names, tricky_names), mixed_trees, min_size=1, max_size=4),
        sibling_groups,
    ),
    exclude=st.sampled_from([(), ("data.*.password",), ("data.**.a",), ("data.b",)]),
    root_hydra=st.sampled_from([{"job": {"name": "x"}}, "zz", None]),
)
def test_property_container_fast_path_decides_exactly_as_the_leaf_loop(
    tree: dict[str, Any], exclude: tuple[str, ...], root_hydra: Any
) -> None:
    """Differential: with the walk's shortcuts on or off (off, every value takes the general
    path, one by one), every part of a derivation is the same: payload, key, redactions,
    machine-path warnings, upstreams, and the snapshot that keeps a memoized path exact."""
    from hydra_cache.key import walk
    from hydra_cache.key.patterns import ExcludeRules

    known = walk.KnownEntries()
    upstream = walk.Upstream("up.cache_dir", "f" * 64, UPSTREAM_ROOT + "/up/" + "0" * 16)
    known.add(upstream.path, ("up",), upstream, UPSTREAM_ROOT)
    cfg = OmegaConf.create(
        {"top": 1, "data": tree, "hydra": root_hydra, "hydra_cache": {"salt": "s"}}
    )
    context = walk.Context(
        exclude=ExcludeRules(exclude),
        known=known,
        relative_to=("/base/project",),
        machine=(("/home/alice", "it is under $HOME"),),
    )

    def outcome() -> Any:
        found: list[Any] = []
        for node in ("data", ""):  # "" (the root) holds `hydra` and `hydra_cache`: never hashed
            try:
                derived = derive(cfg, [node], context=context)
            except Exception as error:  # both must fail alike, with the same message
                found.append((type(error), str(error)))
                continue
            found.append(
                (
                    derived.payload,
                    derived.key,
                    derived.redacted_paths,
                    derived.machine_specific,
                    derived.derived_from_cache_dir,
                    derived.upstreams,
                    snapshot_shape(derived.snapshot),  # the same nodes watched
                )
            )
        return found

    fast = outcome()
    with pytest.MonkeyPatch.context() as patch:  # every value through the general path
        patch.setattr(walk, "SHORTCUTS", False)
        slow = outcome()
    assert fast == slow


@dataclass
class PathFields:
    root: Path = Path("/base/project/data")
    src: Path = "${data.cache_dir}/arrays.npz"  # type: ignore[assignment]
    cache_dir: str = "${cache_dir:}"


def test_path_fields_join_as_text_under_the_string_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``pathlib.Path`` field (OmegaConf's PathNode) is keyed as its text, as a string field
    is: relative to a ``relative_to`` base, and an upstream's path as its digest, also after
    ``OmegaConf.resolve`` made it a plain Path value."""
    from hydra_cache.key.walk import Context

    context = Context(relative_to=("/base/project",))
    typed = OmegaConf.create({"data": OmegaConf.structured(PathFields(src=Path("/x")))})
    assert derive(typed, ["data"], context=context).payload["nodes"]["data"]["root"] == (
        "<relative_to[0]>/data"
    )
    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path))

    def chained() -> DictConfig:
        return OmegaConf.merge(
            {"data": {"resize": 8, "cache_dir": "${cache_dir:}"}},
            {"features": OmegaConf.structured(PathFields)},
        )

    cfg = chained()
    key = cfg.features.cache_dir  # the Path interpolation: no TypeError from json
    resolved = chained()
    _ = resolved.data.cache_dir
    OmegaConf.resolve(resolved)  # features.src is now a Path holding data's entry path
    assert isinstance(resolved.features.src, Path)
    resolved.features.cache_dir = "${cache_dir:}"
    assert resolved.features.cache_dir == key


def test_credentials_in_bytes_values_are_redacted() -> None:
    cfg = OmegaConf.create(
        {"data": {"header": b"Authorization: Bearer abcdefgh12345678", "plain": b"\x00\x01"}}
    )
    derived = derive(cfg, ["data"])
    assert derived.redacted_paths == frozenset({"data.header"})
    assert "abcdefgh" not in json.dumps(derived.redacted_payload())


def test_keys_that_join_under_one_name_are_refused() -> None:
    """``Color.RED`` joins a key by its name, as the string "RED" does: with both in one
    node, one value would be left out of the key."""
    from hydra_cache.errors import ConfigError

    cfg = OmegaConf.create({"data": {Color.RED: 0.8, "RED": "a"}})
    with pytest.raises(ConfigError, match=r"data: the keys .* both join the cache key as 'RED'"):
        derive(cfg, ["data"])
    assert key_of({"data": {Color.RED: 0.8, "BLUE": "a"}}) != key_of(
        {"data": {Color.RED: 0.5, "BLUE": "a"}}
    )


def test_hydra_and_hydra_cache_never_join_a_root_key_whatever_they_hold() -> None:
    base = key_of({"a": 1}, "")
    for held in ("zz", None, 5, {"x": 1}):
        assert key_of({"a": 1, "hydra": held, "hydra_cache": {"salt": None}}, "") == base


def test_the_memo_notices_a_node_moved_to_another_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where nodes are set without a copy (``OmegaConf.unsafe_merge``, Hydra's composer), a
    node can move to another key as the same object: the key names join the key, so the
    memoized path must change with them."""
    from omegaconf import flag_override

    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path))
    cfg = OmegaConf.create({"data": {"opts": {"lr": 1, "epochs": 5}, "cache_dir": "${cache_dir:}"}})
    before = cfg.data.cache_dir
    opts = cfg.data.opts
    node = opts._get_node("epochs")
    with flag_override(cfg, "no_deepcopy_set_nodes", True):
        del opts["epochs"]
        opts["warmup"] = node  # the same node object under a new name
    assert opts._get_node("warmup") is node
    fresh = OmegaConf.create(OmegaConf.to_container(cfg)).data.cache_dir
    assert cfg.data.cache_dir == fresh != before


def test_credentials_in_path_values_and_resolver_results_are_redacted() -> None:
    """pathlib turns ``https://alice:pw@host`` into ``https:/alice:pw@host``, and a resolver
    may return bytes inside a list: both still hide the credentials they carry."""

    @dataclass
    class Source:
        url: Path = Path("https://alice:hunter22@example.com/data")
        plain: Path = Path("/data/train")

    register_resolver("hc_test_bytes_list", lambda: [b"password=hunter22", b"ok"])
    cfg = OmegaConf.create(
        {"data": OmegaConf.structured(Source), "more": {"v": "${hc_test_bytes_list:}"}}
    )
    derived = derive(cfg, ["data"])
    assert derived.redacted_paths == frozenset({"data.url"})
    assert "hunter22" not in json.dumps(derived.redacted_payload())
    derived = derive(cfg, ["more"])
    assert derived.redacted_paths == frozenset({"more.v[0]"})
    assert "70617373776f7264" not in json.dumps(derived.redacted_payload())  # "password" in hex


class Split(Enum):
    TRAIN = 1
    TEST = 2


@dataclass
class Loader:
    batch_size: int = 32
    shuffle: bool = True


@dataclass
class Auth:
    user: str = "alice"
    api_key: str = "plain-looking-value"


@dataclass
class Dataset:
    name: str = "mnist"
    root: Path = Path("/base/project/data")
    split: Split = Split.TRAIN
    size: tuple[int, int] = (28, 28)
    mean: Optional[float] = None  # noqa: UP045  (OmegaConf evaluates it; `|` needs 3.10)
    loaders: list[Loader] = field(default_factory=lambda: [Loader(), Loader(64, False)])
    extra: dict[str, Any] = field(default_factory=lambda: {"note": "x", "n": 1})
    token: str = "hf_abcdefghijklmnopqrstuvwx"
    login: Auth = field(default_factory=Auth)  # plain fields only: the shortcut's own case


@pytest.mark.parametrize("shape", ["the demo's Hydra-composed config", "a structured config"])
def test_the_shortcuts_decide_alike_on_real_project_shapes(
    shape: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The differential of the fast path, on what real projects hash rather than on generated
    dicts: the demo's config as Hydra composes it (AnyNode leaves, defaults lists, the
    ``hydra`` node at the root), and a structured config (typed leaf nodes, enums, Path,
    tuples, Optional, lists of dataclasses, a credential by its shape and one by its name)."""
    from hydra_cache.composing import compose_config
    from hydra_cache.key import walk

    monkeypatch.setenv("HYDRA_CACHE_ROOT", str(tmp_path))
    if shape == "a structured config":
        cfg = OmegaConf.create({"data": OmegaConf.structured(Dataset), "seed": 0})
    else:
        cfg = compose_config(str(Path(__file__).parents[1] / "conf"), "config", ["seed=3"])
    names = ["", *(name for name in cfg if name not in ("hydra", "hydra_cache"))]
    context = walk.Context(relative_to=("/base/project",))

    def outcome() -> list[Any]:
        found = []
        for name in names:
            derived = derive(cfg, [name], context=context)
            snapshot = derived.snapshot
            found.append(
                (derived.payload, derived.redacted_paths, derived.upstreams, snapshot.raws)
            )
        return found

    fast = outcome()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(walk, "SHORTCUTS", False)
        assert outcome() == fast
    assert any(payload["nodes"] for payload, *_ in fast)
