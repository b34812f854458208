"""Remote URLs: where a remote is, and how it may be shown.

A URL may carry credentials (``s3://KEY:SECRET@bucket/prefix``) or a signed query string
(``?X-Amz-Signature=...``). Neither is ever shown: :meth:`RemoteURL.redacted` is the only form
that reaches a log line, an error, a manifest or an entry's metadata, and :func:`scrub` cleans
any text (an exception from a backend library, say) of URL userinfo and query strings before
it is shown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SCHEMES = ("s3", "gs", "az", "file")
#: Aliases fsspec accepts for the same backends.
_ALIASES = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az"}
_EXTRA = {"s3": "s3", "gs": "gcs", "az": "azure"}
#: ``scheme://user:password@`` or ``scheme://token@``, and any query string of a URL.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,30}://)[^/\s@]{1,512}@")
_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,30}://[^\s?#]{0,2048})\?[^\s'\"]*")
REDACTED = "<redacted>"


@dataclass(frozen=True)
class RemoteURL:
    """A parsed remote: scheme, bucket (empty for ``file``) and prefix (no slashes around).

    ``username``/``password`` are the URL's userinfo, if any; they are handed to the backend
    as credentials and never shown (``repr`` leaves them out).
    """

    scheme: str
    bucket: str
    prefix: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    has_query: bool = False

    @property
    def extra(self) -> str:
        """The pip extra that installs this scheme's backend."""
        return _EXTRA.get(self.scheme, self.scheme)

    def path(self, name: str = "") -> str:
        """The backend path of ``name`` under the remote (a local path for ``file``)."""
        parts = [p for p in (self.bucket, self.prefix, name) if p]
        joined = "/".join(parts)
        return "/" + joined if self.scheme == "file" else joined

    def redacted(self) -> str:
        """The URL as it may be shown: no credentials, no query string."""
        return f"{self.scheme}://{self.path()}" + (f"?{REDACTED}" if self.has_query else "")

    def __str__(self) -> str:
        return self.redacted()


def parse_url(text: str) -> RemoteURL:
    """Parse ``s3://bucket/prefix``, ``gs://``, ``az://`` or ``file:///path``.

    Raises ``ValueError`` with a message that shows the URL redacted only.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the remote URL is empty")
    text = text.strip()
    if "\x00" in text:
        raise ValueError("the remote URL contains a NUL byte")
    try:
        parts = urlsplit(text)
    except ValueError as error:
        raise ValueError(f"cannot parse the remote URL {scrub(text)!r}: {error}") from None
    scheme = _ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in SCHEMES:
        raise ValueError(
            f"the remote URL {scrub(text)!r} has scheme {parts.scheme or 'none'!r}; "
            f"supported are {', '.join(s + '://' for s in SCHEMES)}"
        )
    query = bool(parts.query)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"the remote URL {scrub(text)!r} names a host; a file:// remote is a folder "
                "(file:///shared/path)"
            )
        path = os.path.normpath(unquote(parts.path))
        if not os.path.isabs(path) or path == os.sep:
            raise ValueError(f"the remote URL {scrub(text)!r} must name an absolute folder")
        return RemoteURL("file", "", path.strip("/"), has_query=query)
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"the remote URL {scrub(text)!r} names no bucket")
    prefix = "/".join(p for p in unquote(parts.path).split("/") if p)
    if any(p in (".", "..") for p in prefix.split("/")):
        raise ValueError(f"the remote URL {scrub(text)!r} has '.' or '..' in its prefix")
    bucket = parts.netloc.rpartition("@")[2]
    return RemoteURL(
        scheme,
        bucket,
        prefix,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        query,
    )


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL userinfo, URL query strings and each of ``secrets`` (the values of a
    remote's options and credentials, say) replaced by ``<redacted>``."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _USERINFO.sub(lambda m: f"{m[1]}{REDACTED}@", text)
    return _QUERY.sub(lambda m: f"{m[1]}?{REDACTED}", text)
