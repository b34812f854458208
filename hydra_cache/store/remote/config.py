"""The ``hydra_cache.remote`` setting, checked: a URL, or ``{url, mode, options, sign_key_env}``.

``$HYDRA_CACHE_REMOTE`` gives the URL when the config does not. The setting never joins a key
(a key is a team-wide address: where the team's copy lives does not change what it is), and
``options`` (handed to fsspec: ``endpoint_url``, ``profile``, ``anon``, even ``key``/``secret``)
are never shown: ``repr`` leaves them out and :meth:`RemoteSpec.secrets` lists every value a
message must be scrubbed of.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hydra_cache.errors import ConfigError
from hydra_cache.store.remote.url import RemoteURL, parse_url

ENV_REMOTE = "HYDRA_CACHE_REMOTE"
MODES = ("read-write", "read")
_FIELDS = ("url", "mode", "options", "sign_key_env")
_SETTING = "hydra_cache.remote"


@dataclass(frozen=True)
class RemoteSpec:
    """Where the team's cache is and how this process may use it."""

    url: RemoteURL
    mode: Literal["read-write", "read"] = "read-write"
    #: Keyword arguments of the fsspec filesystem; may hold credentials, so never shown.
    options: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)
    #: Name of the environment variable holding the HMAC key manifests are signed with.
    sign_key_env: str | None = None

    @property
    def writes(self) -> bool:
        return self.mode == "read-write"

    def sign_key(self) -> bytes | None:
        """The signing key, read from the environment each time (never stored)."""
        if not self.sign_key_env:
            return None
        value = os.environ.get(self.sign_key_env, "")
        return value.encode() if value else None

    def secrets(self) -> list[str]:
        """Every string a shown message must not contain."""
        found = [s for s in (self.url.username, self.url.password) if s]
        found.extend(_strings(self.options))
        key = self.sign_key()
        if key:
            found.append(key.decode(errors="replace"))
        return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in _strings(item)]
    return []


def _plain(value: Any, where: str) -> Any:
    """Options as plain Python values (a resolved config node may be a mapping subclass)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ConfigError(
        where,
        f"must be a plain value (string, number, true/false, list or mapping), not a "
        f"{type(value).__name__}",
        "write the fsspec option as YAML, e.g. hydra_cache.remote.options.endpoint_url=http://...",
    )


def parse_remote(value: Any, environ: Mapping[str, str] | None = None) -> RemoteSpec | None:
    """Check the setting; ``None`` when no remote is configured (nor in the environment)."""
    environ = os.environ if environ is None else environ
    from_env = environ.get(ENV_REMOTE) or None
    if value is None:
        return None if from_env is None else RemoteSpec(_url(from_env, f"${ENV_REMOTE}"))
    if isinstance(value, str):
        return RemoteSpec(_url(value, _SETTING))
    if not isinstance(value, Mapping):
        raise ConfigError(
            _SETTING,
            f"must be a URL or a mapping, not a {type(value).__name__}",
            "write e.g. hydra_cache.remote=s3://bucket/prefix or "
            "hydra_cache.remote={url: s3://bucket/prefix, mode: read}",
        )
    for name in value:
        if name not in _FIELDS:
            raise ConfigError(
                f"{_SETTING}.{name}",
                "is not a setting of the remote",
                f"use one of {', '.join(_FIELDS)}",
            )
    url_text = value.get("url") or from_env
    if url_text is None:
        raise ConfigError(
            f"{_SETTING}.url",
            "is missing",
            f"set hydra_cache.remote.url=s3://bucket/prefix, or ${ENV_REMOTE}",
        )
    mode = value.get("mode", "read-write")
    if mode not in MODES:
        raise ConfigError(
            f"{_SETTING}.mode",
            f"must be one of {', '.join(MODES)}, not {mode!r}",
            "e.g. hydra_cache.remote.mode=read (never writes to the remote)",
        )
    options = value.get("options") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"{_SETTING}.options",
            f"must be a mapping of fsspec options, not a {type(options).__name__}",
            "write e.g. hydra_cache.remote.options={endpoint_url: http://127.0.0.1:9000}",
        )
    sign = value.get("sign_key_env")
    if sign is not None and (not isinstance(sign, str) or not sign.isidentifier()):
        raise ConfigError(
            f"{_SETTING}.sign_key_env",
            "must name an environment variable (the key itself never goes in the config)",
            "write e.g. hydra_cache.remote.sign_key_env=HYDRA_CACHE_SIGN_KEY",
        )
    return RemoteSpec(
        _url(url_text, f"{_SETTING}.url" if value.get("url") else f"${ENV_REMOTE}"),
        mode,
        _plain(options, f"{_SETTING}.options"),
        sign,
    )


def _url(text: Any, where: str) -> RemoteURL:
    if not isinstance(text, str):
        raise ConfigError(where, f"must be a URL string, not a {type(text).__name__}", _EXAMPLE)
    try:
        return parse_url(text)
    except ValueError as error:
        raise ConfigError(where, str(error), _EXAMPLE) from None


_EXAMPLE = (
    "write e.g. s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///path"
)
