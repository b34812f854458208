"""The key: config node -> canonical payload -> digest. Pure: no Hydra, no disk.

- :mod:`~hydra_cache.key.walk`: the walk that decides what joins a key (chained stages,
  structured classes, ``relative_to``), with the snapshot that keeps a memoized key exact;
- :mod:`~hydra_cache.key.payload`: the canonical serialisation and digest, the schema version;
- :mod:`~hydra_cache.key.rules`: what is secret, per-run or machine-specific, by provenance;
- :mod:`~hydra_cache.key.patterns`: ``hydra_cache.exclude`` patterns;
- :mod:`~hydra_cache.key.refs`: plain references resolved without OmegaConf's grammar, and
  interpolation chains followed;
- :mod:`~hydra_cache.key.leafdiff`: the leaf diff that ``why``, ``diff`` and ``testing`` show.
"""

from __future__ import annotations

from hydra_cache.key.leafdiff import LeafChange, flatten, leaf_diff, payload_leaves
from hydra_cache.key.patterns import ExcludeRules
from hydra_cache.key.payload import (
    KEY_LENGTH,
    SCHEMA_VERSION,
    UNRESOLVED_PER_RUN,
    canonical_json,
    digest_of,
)
from hydra_cache.key.rules import (
    REDACTED,
    holds_credentials,
    is_redacted,
    is_secret_name,
    redact,
    scrub,
    shown_overrides,
)
from hydra_cache.key.walk import (
    ALWAYS_EXCLUDED,
    Context,
    DerivedKey,
    Identity,
    KnownEntries,
    Snapshot,
    Upstream,
    all_keys,
    child_path,
    config_values,
    derive,
    deriving,
    enter_entry,
    read_node,
    with_extra,
)

__all__ = [
    "ALWAYS_EXCLUDED",
    "KEY_LENGTH",
    "REDACTED",
    "SCHEMA_VERSION",
    "UNRESOLVED_PER_RUN",
    "Context",
    "DerivedKey",
    "ExcludeRules",
    "Identity",
    "KnownEntries",
    "LeafChange",
    "Snapshot",
    "Upstream",
    "all_keys",
    "canonical_json",
    "child_path",
    "config_values",
    "derive",
    "deriving",
    "digest_of",
    "enter_entry",
    "flatten",
    "holds_credentials",
    "is_redacted",
    "is_secret_name",
    "redact",
    "scrub",
    "shown_overrides",
    "leaf_diff",
    "payload_leaves",
    "read_node",
    "with_extra",
]
