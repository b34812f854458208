"""The one door to OmegaConf's private internals.

Deriving a key must be cheaper than ``OmegaConf.to_container``, so the key walk reads
OmegaConf's containers and raw values directly instead of going through ``cfg[key]`` (which
validates, wraps and resolves on every access); the audit wraps two internal methods to see
reads. Those reaches are private API: each one lives here, as a small named function, and
``tests/test_omegaconf_door.py`` pins the behaviour each relies on, on every supported
OmegaConf version. Nothing else in hydra-cache touches an underscore name of OmegaConf.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import (
    AnyNode,
    BooleanNode,
    Container,
    DictConfig,
    FloatNode,
    IntegerNode,
    ListConfig,
    Node,
    OmegaConf,
    StringNode,
)
from omegaconf._utils import split_key as _split_key
from omegaconf.basecontainer import BaseContainer

__all__ = [
    "child",
    "content",
    "contents_of",
    "dereference",
    "full_key",
    "is_interpolation",
    "is_missing",
    "is_none",
    "object_type",
    "parent",
    "patched_reads",
    "plain_group_contents",
    "plain_leaf_values",
    "raw_value",
    "raw_values",
    "slot_values",
    "value_slots",
    "register_resolver",
    "root_of",
    "split_key",
    "stash",
    "value",
]


def content(container: Container) -> Any:
    """A container's children as OmegaConf stores them: a ``dict`` of key -> node, a
    ``list`` of nodes, ``None``, or a string (``???`` or an interpolation of the container)."""
    return container.__dict__["_content"]


def raw_value(node: Node) -> Any:
    """A leaf's stored value, before interpolation (``"${a.b}"`` stays a string)."""
    return node.__dict__["_val"]


#: Stands for "a container" in :func:`raw_values` (containers have no raw value).
NOT_A_LEAF: Any = object()


_LEAF_VALUE = operator.methodcaller("get", "_val", NOT_A_LEAF)
_CONTENT = operator.attrgetter("_content")


def raw_values(children: dict[Any, Node]) -> list[Any]:
    """Each child's raw value (:data:`NOT_A_LEAF` for containers), in order: one call per
    container instead of one per leaf, which is what the key walk's hot loop needs."""
    return list(map(_LEAF_VALUE, map(vars, children.values())))


#: The leaf node classes whose raw value is the plain attribute ``_val`` (no ``__getattr__``,
#: no property): what :func:`plain_leaf_values` may read with one C-level getter.
PLAIN_LEAF_NODES = frozenset({AnyNode, StringNode, IntegerNode, FloatNode, BooleanNode})
_VALUE_ATTRIBUTE = operator.attrgetter("_val")


def plain_leaf_values(children: dict[Any, Node] | list[Node]) -> list[Any] | None:
    """Each child's raw value when every child is a plain leaf node, else None (``children``:
    a container's content dict, or the nodes of many containers in one list).

    Twice as fast as :func:`raw_values` (no ``vars`` per node): the key walk asks this once
    per container, and most containers of a real config hold only plain leaves.
    """
    nodes = children.values() if type(children) is dict else children
    if not PLAIN_LEAF_NODES.issuperset(map(type, nodes)):
        return None
    return list(map(_VALUE_ATTRIBUTE, nodes))


_DICTCONFIG_ONLY = frozenset({DictConfig})
_DICT_ONLY = frozenset({dict})
#: What ``_metadata.object_type`` holds on a plain, not structured, DictConfig.
_UNSTRUCTURED = frozenset({None, dict})
_OBJECT_TYPE = operator.attrgetter("_metadata.object_type")


def plain_group_contents(containers: list[Container]) -> list[dict[Any, Node]] | None:
    """The content dicts of many sibling containers, when every one is a plain (not
    structured) DictConfig holding a dict of children; else None. Four C-level passes, for
    the key walk's batch of sibling groups (a ``data`` node of many small sections)."""
    if not _DICTCONFIG_ONLY.issuperset(map(type, containers)):
        return None
    if not _UNSTRUCTURED.issuperset(map(_OBJECT_TYPE, containers)):
        return None
    contents = list(map(_CONTENT, containers))
    if not _DICT_ONLY.issuperset(map(type, contents)):
        return None
    return contents


_VALUE_SLOT = operator.itemgetter("_val")


def value_slots(nodes: list[Node]) -> list[dict[str, Any]]:
    """Where each leaf keeps its raw value (its attribute dict, which OmegaConf never
    replaces), read later by :func:`slot_values` with no attribute lookup per leaf."""
    return list(map(vars, nodes))


def slot_values(slots: list[dict[str, Any]]) -> Iterator[Any]:
    """The raw value now in each of :func:`value_slots`: the memo's snapshot check, whose
    cost per leaf is what each upstream stage adds to a downstream derivation."""
    return map(_VALUE_SLOT, slots)


def contents_of(containers: list[Container]) -> list[Any]:
    """:func:`content` of many containers in one C-level pass (the memo's snapshot check)."""
    return list(map(_CONTENT, containers))


def parent(node: Node) -> Container | None:
    """The container holding ``node`` (``None`` at the root)."""
    return node.__dict__["_parent"]  # type: ignore[no-any-return]


def root_of(node: Node) -> Container:
    """The top of the tree ``node`` belongs to (each step reads ``_parent`` directly:
    ``_get_root`` asserts an ABC ``isinstance`` per level, and the resolver asks this on
    every access)."""
    found: Any = node
    above = found.__dict__["_parent"]
    while above is not None:
        found = above
        above = found.__dict__["_parent"]
    return found  # type: ignore[no-any-return]


def child(container: Container, key: str | int) -> Node | None:
    """The child node at ``key`` without validation or resolution (``None`` when absent)."""
    try:
        found = container._get_node(key, validate_access=False)
    except Exception:
        return None
    return found if isinstance(found, Node) else None


def dereference(node: Node) -> Node:
    """The node an interpolation points to (a new value node for resolver results)."""
    return node._dereference_node()


def is_missing(node: Node) -> bool:
    return node._is_missing()


def is_none(node: Node) -> bool:
    return node._is_none()


def is_interpolation(node: Node) -> bool:
    return node._is_interpolation()


def value(node: Node) -> Any:
    """A value node's Python value (resolver results included)."""
    return node._value()


def full_key(node: Node, key: Any = None) -> str:
    """The dotted key of ``node`` (or of its child ``key``), spelled as OmegaConf spells it:
    ``a.b[0].c``; ``""`` for the root."""
    return node._get_full_key(key)


def object_type(container: Container) -> type | None:
    """The dataclass or attrs class behind a structured config (``None`` for plain ones)."""
    if type(container) is not DictConfig and not isinstance(container, DictConfig):
        return None  # (the type test first: an ABC isinstance costs more than the rest)
    found = container.__dict__["_metadata"].object_type
    return found if isinstance(found, type) and found is not dict else None


def split_key(key: str) -> list[str]:
    """``a.b[0].c`` -> ``["a", "b", "0", "c"]``, as OmegaConf splits keys."""
    return _split_key(key)


def stash(root: Container, name: str, factory: Callable[[], Any]) -> Any:
    """Per-config state kept on the config object itself (it lives and dies with it; deep
    copies do not carry it, because OmegaConf copies its own fields only)."""
    found = root.__dict__.get(name)
    if found is None:
        found = root.__dict__[name] = factory()
    return found


def register_resolver(name: str, function: Callable[..., Any]) -> None:
    """Register a resolver without caching, on OmegaConf 2.3 and 2.4 alike, without a warning.

    2.4 deprecates ``register_new_resolver`` for ``register_resolver`` (which 2.3 uses for
    its legacy API) and validates annotations by default.
    """
    modern = getattr(OmegaConf, "register_resolver", None)
    if modern is not None and "annotation_validation" in _parameters(modern):
        modern(name, function, replace=True, use_cache=False, annotation_validation="off")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        OmegaConf.register_new_resolver(name, function, replace=True, use_cache=False)


def _parameters(function: Callable[..., Any]) -> tuple[str, ...]:
    import inspect

    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ()


#: A read hook: (container, key, node or value) for a leaf read, or (container, None, None)
#: when a whole subtree is converted (``to_container``, ``to_yaml``).
ReadHook = Callable[[Container, Any, Any], None]


@contextmanager
def patched_reads(hook: ReadHook) -> Iterator[None]:
    """Call ``hook`` on every leaf read and subtree conversion while the block runs.

    Wraps ``BaseContainer._resolve_with_default`` (every ``cfg.a``/``cfg["a"]``/iteration read
    goes through it) and ``BaseContainer._to_content`` (``to_container``/``to_yaml``). Not
    reentrant: the caller (the audit) serialises and nests recorders itself.
    """
    original_resolve = BaseContainer._resolve_with_default
    original_to_content = BaseContainer.__dict__["_to_content"]
    to_content = original_to_content.__func__

    def resolve_with_default(
        self: BaseContainer, key: Any, value: Any, *args: Any, **kwargs: Any
    ) -> Any:  # OmegaConf passes key= and value= by name
        hook(self, key, value)
        return original_resolve(self, key, value, *args, **kwargs)

    def traced_to_content(conf: Container, *args: Any, **kwargs: Any) -> Any:
        hook(conf, None, None)
        return to_content(conf, *args, **kwargs)

    BaseContainer._resolve_with_default = resolve_with_default  # type: ignore[method-assign]
    BaseContainer._to_content = staticmethod(traced_to_content)  # type: ignore[method-assign]
    try:
        yield
    finally:
        BaseContainer._resolve_with_default = original_resolve  # type: ignore[method-assign]
        BaseContainer._to_content = original_to_content  # type: ignore[method-assign]


CONTAINER_TYPES = (DictConfig, ListConfig)
