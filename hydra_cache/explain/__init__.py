"""Explanations: why an entry is missing (:mod:`.why`), and which caches a config or code
change invalidates, at what cost (:mod:`.diff`)."""

from __future__ import annotations

from hydra_cache.explain.why import Explanation, explain

__all__ = ["Explanation", "explain"]
