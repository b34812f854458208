"""Pins the behaviour of each private OmegaConf internal hydra-cache relies on.

Every reach into OmegaConf's internals goes through ``hydra_cache._omegaconf``; each function
there has a test here, run by CI on every supported OmegaConf version (2.3 and 2.4). A new
OmegaConf that changes one of these fails here first, with the function's name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

from hydra_cache import _omegaconf as door


@dataclass
class Point:
    x: int = 1


def sample() -> DictConfig:
    return OmegaConf.create(
        {"a": {"b": [1, {"c": "${a.d}"}], "d": 5, "m": "???", "n": None}, "s": "${a}"}
    )


def test_content_is_the_dict_or_list_of_child_nodes() -> None:
    cfg = sample()
    children = door.content(cfg.a)
    assert isinstance(children, dict) and set(children) == {"b", "d", "m", "n"}
    assert isinstance(door.content(children["b"]), list)
    assert door.content(DictConfig("???")) == "???"  # a missing container: the string
    assert door.content(DictConfig(None)) is None


def test_raw_value_is_the_value_before_interpolation() -> None:
    cfg = sample()
    assert door.raw_value(door.child(cfg.a, "d")) == 5
    leaf = door.content(door.content(cfg.a)["b"])[1]
    assert door.raw_value(door.child(leaf, "c")) == "${a.d}"
    assert door.raw_value(door.child(cfg.a, "m")) == "???"


def test_parent_and_root_of() -> None:
    cfg = sample()
    node = door.child(cfg.a, "d")
    assert door.parent(node) is door.child(cfg, "a")
    assert door.parent(cfg) is None
    assert door.root_of(node) is cfg
    assert door.root_of(cfg) is cfg
    in_list = door.child(door.content(door.content(cfg.a)["b"])[1], "c")
    assert door.root_of(in_list) is cfg is in_list._get_root()


def test_child_never_resolves_nor_raises() -> None:
    cfg = sample()
    assert door.child(cfg.a, "nope") is None
    assert door.child(door.child(cfg.a, "b"), 0) is not None
    assert door.child(door.child(cfg.a, "b"), 9) is None
    assert door.raw_value(door.child(cfg, "s")) == "${a}"  # returned unresolved


def test_dereference_follows_interpolations_and_resolvers() -> None:
    cfg = sample()
    leaf = door.content(door.content(cfg.a)["b"])[1]
    assert door.value(door.dereference(door.child(leaf, "c"))) == 5
    cfg2 = OmegaConf.create({"l": "${oc.decode:'[1, 2]'}"})
    assert door.value(door.dereference(door.child(cfg2, "l"))) == [1, 2]
    assert isinstance(door.dereference(door.child(cfg, "s")), DictConfig)


def test_is_missing_is_none_is_interpolation() -> None:
    cfg = sample()
    assert door.is_missing(door.child(cfg.a, "m"))
    assert door.is_none(door.child(cfg.a, "n"))
    assert door.is_interpolation(door.child(cfg, "s"))
    assert not door.is_interpolation(door.child(cfg.a, "d"))


def test_full_key_spells_list_indices_in_brackets() -> None:
    cfg = sample()
    leaf = door.content(door.content(cfg.a)["b"])[1]
    assert door.full_key(door.child(leaf, "c")) == "a.b[1].c"
    assert door.full_key(cfg.a, "d") == "a.d"
    assert door.full_key(cfg) == ""


def test_object_type_names_the_structured_class() -> None:
    cfg = OmegaConf.create({"p": OmegaConf.structured(Point), "q": {"x": 1}})
    assert door.object_type(cfg.p) is Point
    assert door.object_type(cfg.q) is None
    assert door.object_type(OmegaConf.create([1])) is None


def test_split_key_handles_both_spellings() -> None:
    assert door.split_key("a.b[0].c") == ["a", "b", "0", "c"]
    assert door.split_key("a") == ["a"]


def test_stash_lives_on_the_config_and_is_not_deep_copied() -> None:
    import copy

    cfg = sample()
    box = door.stash(cfg, "_hydra_cache_test", dict)
    box["x"] = 1
    assert door.stash(cfg, "_hydra_cache_test", dict) == {"x": 1}
    assert door.stash(copy.deepcopy(cfg), "_hydra_cache_test", dict) == {}


def test_register_resolver_is_silent_on_every_version_and_never_caches() -> None:
    calls = []

    def counter() -> int:
        calls.append(1)
        return len(calls)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        door.register_resolver("hc_door_counter", counter)
    cfg = OmegaConf.create({"v": "${hc_door_counter:}"})
    assert (cfg.v, cfg.v) == (1, 2)


def test_patched_reads_sees_leaf_reads_and_conversions_then_restores() -> None:
    from omegaconf.basecontainer import BaseContainer

    before = (BaseContainer._resolve_with_default, BaseContainer.__dict__["_to_content"])
    seen: list[tuple[str, object]] = []
    cfg = sample()
    with door.patched_reads(lambda c, k, n: seen.append((door.full_key(c, k), k))):
        _ = cfg.a.d
        _ = cfg.a.b[0]
        OmegaConf.to_container(cfg.a)
    assert ("a.d", "d") in seen and ("a.b[0]", 0) in seen and ("a", None) in seen
    assert (BaseContainer._resolve_with_default, BaseContainer.__dict__["_to_content"]) == before
    assert isinstance(cfg.a.b, ListConfig)


def test_bulk_readers_match_the_single_ones() -> None:
    cfg = sample()
    leaves = [door.child(cfg.a, "d"), door.child(cfg.a, "m"), door.child(cfg.a, "n")]
    slots = door.value_slots(leaves)
    assert list(door.slot_values(slots)) == [door.raw_value(n) for n in leaves]
    cfg.a.d = 7  # an assignment to a leaf sets its value in place: the slot sees it
    assert next(door.slot_values(slots)) == 7 == door.raw_value(door.child(cfg.a, "d"))
    containers = [cfg, cfg.a, door.child(cfg.a, "b")]
    assert door.contents_of(containers) == [door.content(c) for c in containers]
    values = door.raw_values(door.content(cfg.a))
    assert values[1:] == [7, "???", None] and values[0] is door.NOT_A_LEAF


def test_plain_leaf_values_reads_val_of_plain_leaves_only() -> None:
    @dataclass
    class Typed:
        i: int = 3
        f: float = 0.5
        b: bool = True
        s: str = "x"

    plain = OmegaConf.create({"a": 1, "b": "${a}", "c": "???", "d": None, "e": 2.5})
    assert door.plain_leaf_values(door.content(plain)) == [1, "${a}", "???", None, 2.5]
    typed = OmegaConf.structured(Typed)  # IntegerNode, FloatNode, BooleanNode, StringNode
    assert door.plain_leaf_values(door.content(typed)) == [3, 0.5, True, "x"]
    for node_class in door.PLAIN_LEAF_NODES:  # `_val` is a plain attribute, never computed
        assert "__getattr__" not in vars(node_class) and "_val" not in vars(node_class)
    # A container child, or a leaf kind whose value is not a plain `_val`: None (the caller
    # then reads each child on its own).
    assert door.plain_leaf_values(door.content(sample())) is None
    assert door.plain_leaf_values(door.content(OmegaConf.create({"p": {"x": 1}}))) is None

    @dataclass
    class WithBytes:
        i: int = 1
        u: bytes = b"x"

    assert door.plain_leaf_values(door.content(OmegaConf.structured(WithBytes))) is None


def test_plain_group_contents_takes_plain_dictconfigs_of_dicts_only() -> None:
    @dataclass
    class Section:
        x: int = 1

    cfg = OmegaConf.create(
        {"a": {"x": 1}, "b": {"y": "${a.x}"}, "n": None, "m": "???", "i": "${a}", "l": [1]}
    )
    groups = [cfg._get_node("a"), cfg._get_node("b")]
    found = door.plain_group_contents(groups)
    assert found is not None and [list(c) for c in found] == [["x"], ["y"]]
    assert found[0] is door.content(cfg.a)  # the content dicts themselves, not copies
    # Nodes across groups: plain_leaf_values takes a flat list of them too.
    assert door.plain_leaf_values([*found[0].values(), *found[1].values()]) == [1, "${a.x}"]
    for other in ("n", "m", "i", "l"):  # None, missing, an interpolation, a list
        assert door.plain_group_contents([groups[0], cfg._get_node(other)]) is None, other
    structured = OmegaConf.create({"s": Section})  # a dataclass joins the key by its class
    assert door.plain_group_contents([groups[0], structured._get_node("s")]) is None
    merged = OmegaConf.merge(OmegaConf.create({"p": {"x": 1}}), {"p": {"x": 2}})
    assert door.plain_group_contents([merged._get_node("p")]) is not None  # object_type dict
