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

import functools
import re
from typing import Any

from omegaconf import AnyNode, DictConfig, ListConfig, Node

NOT_SIMPLE: Any = object()
_PLAIN = frozenset({str, int, float, bool, type(None)})
_REF = r"\$\{(\.*)([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}"
_WHOLE = re.compile(f"^{_REF}$")
_PART = re.compile(_REF)


#: Text before a reference, the reference's leading dots, and its dotted parts ((): no reference).
Piece = tuple[str, int, tuple[str, ...]]


@functools.lru_cache(maxsize=16384)
def _plan(raw: str) -> tuple[bool, tuple[Piece, ...]] | None:
    """How to resolve ``raw``: (is one whole reference, pieces), or None when not simple."""
    if "\\" in raw:
        return None
    whole = _WHOLE.match(raw)
    if whole:
        return True, (("", len(whole[1]), tuple(whole[2].split("."))),)
    pieces: list[Piece] = []
    last = 0
    for match in _PART.finditer(raw):
        text = raw[last : match.start()]
        if "${" in text:
            return None
        pieces.append((text, len(match[1]), tuple(match[2].split("."))))
        last = match.end()
    if not pieces or "${" in raw[last:]:
        return None
    pieces.append((raw[last:], 0, ()))
    return False, tuple(pieces)


def resolve_simple(node: Node, raw: str) -> Any:
    """The value of the interpolation ``raw`` held by ``node``, or :data:`NOT_SIMPLE`."""
    if type(node) is not AnyNode:
        return NOT_SIMPLE
    plan = _plan(raw)
    if plan is None:
        return NOT_SIMPLE
    whole, pieces = plan
    if whole:
        _text, dots, parts = pieces[0]
        return _target(node, dots, parts)
    joined: list[str] = []
    for text, dots, parts in pieces:
        joined.append(text)
        if parts:
            value = _target(node, dots, parts)
            if value is NOT_SIMPLE:
                return NOT_SIMPLE
            joined.append(str(value))
    return "".join(joined)


def _target(node: Node, dots: int, parts: tuple[str, ...]) -> Any:
    base: Any = node
    if dots:
        for _ in range(dots):
            base = base.__dict__["_parent"]
            if base is None:
                return NOT_SIMPLE
    else:
        while base.__dict__["_parent"] is not None:
            base = base.__dict__["_parent"]
    for part in parts:
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
