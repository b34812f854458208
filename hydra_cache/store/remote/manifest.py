"""The manifest: the record an entry is committed to the remote by, built from the local
entry's metadata, optionally signed, and checked before a byte of it is trusted.

Blob addresses are the SHA-256 of a file's whole content: exactly the hash the local metadata
records since integrity switched to SHA-256. Entries published before that (BLAKE2b records)
have their files hashed again with SHA-256 when pushed.

A manifest holds the entry's full digest, its redacted payload, its upstreams, every file
(path, size, sha256, mode), folder and symlink, the *tree digest* (one SHA-256 over that list,
to compare two builds of one key at a glance), build time, size and who built it (host,
user, time). It never holds a credential: the payload is already redacted, and the remote's
URL is not written into it at all.

Signing (``hydra_cache.remote.sign_key_env``) is an HMAC-SHA256 over the canonical JSON of
everything else: a reader that has the key refuses unsigned and badly signed manifests (a
writer without the key could otherwise poison the team's cache, as Nx's cache-poisoning CVE
showed).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import logging
import os
import posixpath
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra_cache.store.liveness import hostname, iso_time
from hydra_cache.store.remote import layout

log = logging.getLogger(__name__)

KIND = "hydra-cache-manifest"
SIGNATURE_ALGORITHM = "hmac-sha256"
_COPIED = ("digest", "config_key", "payload", "upstreams", "build_seconds", "created")


class ManifestProblem(ValueError):
    """A manifest that cannot be trusted or used; the message says why, in words."""


@dataclass(frozen=True)
class Manifest:
    namespace: str
    key: str
    files: dict[str, dict[str, Any]]
    tree: str
    size_bytes: int
    built_by: dict[str, Any]
    raw: dict[str, Any] = field(compare=False, repr=False)

    def blobs(self) -> dict[str, int]:
        """SHA-256 -> size of every distinct file content."""
        return {
            record["sha256"]: int(record["size"])
            for record in self.files.values()
            if "sha256" in record
        }


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def tree_digest(files: dict[str, dict[str, Any]]) -> str:
    """One SHA-256 over every path with its type, content hash, size, mode or target."""
    return hashlib.sha256(canonical(files)).hexdigest()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def sha256_of(path: Path) -> str:
    """A whole file's SHA-256: its blob's name on the remote."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def files_of(entry: Path, recorded: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The manifest's file list from the metadata's, with each file's permission bits (the
    metadata does not keep them; the executable bit matters for a built tool)."""
    files: dict[str, dict[str, Any]] = {}
    for name, record in sorted(recorded.items()):
        if record.get("dir"):
            files[name] = {"dir": True}
        elif "symlink" in record:
            files[name] = {"symlink": str(record["symlink"])}
        else:
            path = entry / name
            digest = record.get("sha256") or sha256_of(path)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            files[name] = {"size": int(record.get("size", 0)), "sha256": digest, "mode": mode}
    return files


def build(entry: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A manifest (unsigned) for the local entry at ``entry`` with metadata ``record``."""
    from hydra_cache import __version__

    files = files_of(entry, record.get("files") or {})
    manifest: dict[str, Any] = {
        "kind": KIND,
        "format": layout.FORMAT_VERSION,
        "namespace": record["namespace"],
        "key": record["key"],
        **{name: record.get(name) for name in _COPIED},
        "files": files,
        "tree": tree_digest(files),
        "size_bytes": sum(int(f.get("size", 0)) for f in files.values()),
        "built_by": {
            "host": record.get("host") or hostname(),
            "user": _user(),
            "time": record.get("published") or iso_time(time.time()),
        },
        "hydra_cache_version": __version__,
    }
    return manifest


def sign(manifest: dict[str, Any], key: bytes) -> dict[str, Any]:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    value = hmac.new(key, canonical(body), hashlib.sha256).hexdigest()
    return {**body, "signature": {"algorithm": SIGNATURE_ALGORITHM, "value": value}}


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def parse(
    data: bytes,
    namespace: str,
    key: str,
    sign_key: bytes | None,
    *,
    expected: dict[str, Any] | None = None,
) -> Manifest:
    """Check a manifest read from the remote; :class:`ManifestProblem` says what is wrong.

    ``expected`` is the reader's own ``digest`` and redacted ``payload``, when it derived the
    path from a config: a manifest copied to another key (or forged with another key's name)
    then fails, instead of serving another config's files under this key. Without signing, a
    writer can still forge both; with ``sign_key_env`` nobody without the key can.
    """
    try:
        raw = json.loads(data)
    except ValueError:
        raise ManifestProblem("it is not JSON") from None
    if not isinstance(raw, dict) or raw.get("kind") != KIND:
        raise ManifestProblem("it is not a hydra-cache manifest")
    version = raw.get("format")
    if not isinstance(version, int) or version > layout.FORMAT_VERSION:
        raise ManifestProblem(
            f"it has format {version!r}, newer than this hydra-cache reads "
            f"({layout.FORMAT_VERSION}): upgrade hydra-cache-dir"
        )
    if raw.get("namespace") != namespace or raw.get("key") != key:
        raise ManifestProblem(
            f"it names {raw.get('namespace')!r}/{raw.get('key')!r}, not {namespace}/{key}"
        )
    if sign_key is not None:
        _check_signature(raw, sign_key)
    if expected is not None:
        if expected.get("digest") and raw.get("digest") != expected["digest"]:
            raise ManifestProblem("its full digest is not this config's (copied from another key?)")
        if expected.get("payload") is not None and canonical(raw.get("payload")) != canonical(
            expected["payload"]
        ):
            raise ManifestProblem(
                "its recorded parameters differ from this config's, though it names this key "
                "(copied from another entry, or forged): sign manifests with sign_key_env"
            )
    files = raw.get("files")
    if not isinstance(files, dict):
        raise ManifestProblem("it has no file list")
    for name, record in files.items():
        _check_file(name, record)
    if raw.get("tree") != tree_digest(files):
        raise ManifestProblem("its tree digest does not match its file list")
    found_by = raw.get("built_by")
    built_by: dict[str, Any] = found_by if isinstance(found_by, dict) else {}
    return Manifest(
        namespace,
        key,
        files,
        str(raw["tree"]),
        sum(int(f.get("size", 0)) for f in files.values()),
        built_by,
        raw,
    )


def _check_signature(raw: dict[str, Any], key: bytes) -> None:
    signature = raw.get("signature")
    if not isinstance(signature, dict) or "value" not in signature:
        raise ManifestProblem(
            "it is not signed, and this process has a signing key: an unsigned manifest may "
            "have been written by anybody with write access to the remote"
        )
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        raise ManifestProblem(f"it is signed with {signature.get('algorithm')!r}, not hmac-sha256")
    expected = sign(raw, key)["signature"]["value"]
    if not hmac.compare_digest(str(signature["value"]), expected):
        raise ManifestProblem(
            "its signature does not match this process's key (signed with another key, or "
            "changed after it was signed)"
        )


def _check_file(name: Any, record: Any) -> None:
    if not layout.safe_relative(name) or not isinstance(record, dict):
        raise ManifestProblem(f"it names a file outside the entry: {str(name)[:200]!r}")
    if record.get("dir") is True:
        return
    if isinstance(record.get("symlink"), str):
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), record["symlink"]))
        if record["symlink"].startswith("/") or target == ".." or target.startswith("../"):
            raise ManifestProblem(
                f"its symlink {name!r} points outside the entry ({record['symlink'][:200]!r})"
            )
        return
    size, digest, mode = record.get("size"), record.get("sha256"), record.get("mode", 0o644)
    if not isinstance(size, int) or size < 0 or not layout.is_sha256(digest):
        raise ManifestProblem(f"its record of {name!r} has no valid size and sha256")
    if not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ManifestProblem(f"its record of {name!r} has an invalid mode")


def differences(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]]) -> list[str]:
    """Paths whose record differs between two builds of one key (for the warning)."""
    return sorted(n for n in ours.keys() | theirs.keys() if ours.get(n) != theirs.get(n))
