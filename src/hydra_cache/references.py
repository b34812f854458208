"""Resolve simple node-reference interpolations without OmegaConf's grammar parser.

OmegaConf parses every interpolation with an ANTLR grammar, which costs about 100 us each in
Python; a config with thousands of ``${model.dim}``-style references spends nearly all of its
key derivation there. Most interpolations in real configs are plain references to another
value (``${a.b}``, ``${.x}``, ``${..x}``, or such references inside a string). These are
resolved here by walking the config's containers, with exactly OmegaConf's semantics: a whole
reference yields the value itself, references inside a string are joined with ``str()``.
Anything else (resolvers, escapes, typed nodes, references to containers, lists or to other
interpolations) returns :data:`NOT_SIMPLE` and is left to OmegaConf.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import AnyNode, DictConfig, ListConfig, Node

NOT_SIMPLE: Any = object()
_PLAIN = frozenset({str, int, float, bool, type(None)})
_REF = r"\$\{(\.*)([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}"
_WHOLE = re.compile(f"^{_REF}$")
_PART = re.compile(_REF)


def resolve_simple(node: Node, raw: str) -> Any:
    """The value of the interpolation ``raw`` held by ``node``, or :data:`NOT_SIMPLE`."""
    if type(node) is not AnyNode or "\\" in raw:
        return NOT_SIMPLE
    whole = _WHOLE.match(raw)
    if whole:
        return _target(node, whole[1], whole[2])
    pieces: list[str] = []
    last = 0
    for match in _PART.finditer(raw):
        value = _target(node, match[1], match[2])
        text = raw[last : match.start()]
        if value is NOT_SIMPLE or "${" in text:
            return NOT_SIMPLE
        pieces += (text, str(value))
        last = match.end()
    rest = raw[last:]
    if not pieces or "${" in rest:
        return NOT_SIMPLE
    return "".join(pieces) + rest


def _target(node: Node, dots: str, dotted: str) -> Any:
    base: Any = node
    if dots:
        for _ in range(len(dots)):
            base = base.__dict__["_parent"]
            if base is None:
                return NOT_SIMPLE
    else:
        while base.__dict__["_parent"] is not None:
            base = base.__dict__["_parent"]
    for part in dotted.split("."):
        if type(base) is not DictConfig:
            return NOT_SIMPLE
        content = base.__dict__["_content"]
        if type(content) is not dict:
            return NOT_SIMPLE
        base = content.get(part)
        if base is None:
            return NOT_SIMPLE
    if type(base) in (DictConfig, ListConfig):
        return NOT_SIMPLE
    value = base.__dict__.get("_val", NOT_SIMPLE)
    if type(value) not in _PLAIN or (type(value) is str and ("${" in value or value == "???")):
        return NOT_SIMPLE
    return value
