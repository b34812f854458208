"""The storage under a remote: read, write, list, and the one commit primitive, a conditional
create that never replaces what is there.

Two implementations sit behind :class:`Backend`:

- :class:`LocalBackend` (``file://``, a shared folder): a create writes a private temporary
  file, flushes it and ``link()``\\ s it to its name, which fails if the name exists, so a
  partial write is never visible and a second creator always loses.
- :class:`FsspecBackend` (``s3://``, ``gs://``, ``az://``): fsspec, imported when first used
  (it is an extra, never a hard dependency). On S3 a create is a ``PutObject`` with
  ``If-None-Match: *``. Any 412 answer to it means "lost the race": some servers (SeaweedFS)
  do not say which condition failed, and a retried request whose first attempt landed gets a
  412 too, so the object is then read back and compared with ours. After a create that
  reported success the object is read back as well: a server that checks and writes in two
  steps (moto's, under concurrent requests) can let two creates "succeed", and the last
  write is the one everybody reads. On GCS and Azure the create is fsspec's ``mode="create"``
  (a generation precondition on recent gcsfs); where a backend only checks existence first,
  two creators can both succeed, which the read-back turns into one winner in practice but
  not in theory: see the README's remote section.

Taking over a lease needs a compare-and-swap: S3's ``If-Match`` on the ETag read, a rename on a
local folder (only one of two renames of the same name succeeds), and a delete then create
elsewhere. Nothing's correctness depends on leases (see :mod:`.lease`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from hydra_cache.errors import HydraCacheError
from hydra_cache.store.layout import token
from hydra_cache.store.remote.config import RemoteSpec
from hydra_cache.store.remote.url import scrub

log = logging.getLogger(__name__)

#: Called with each transferred chunk's size in bytes.
OnBytes = Callable[[int], None]
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ObjectInfo:
    """An object as a listing shows it: its size, and when it was last written (Unix time)."""

    size: int
    modified: float


class RemoteError(HydraCacheError, OSError):
    """The remote cannot be used (a missing extra, an unreachable server); the message is
    scrubbed of credentials."""


class Backend(Protocol):
    """What the remote tier needs from storage; names are relative to the remote's prefix."""

    def read(self, name: str) -> bytes | None:
        """The object's bytes, or None when it does not exist (one request)."""

    def read_versioned(self, name: str) -> tuple[bytes, str] | None:
        """The bytes and an opaque version tag for :meth:`replace`, or None."""

    def exists(self, name: str) -> bool: ...

    def create(self, name: str, data: bytes) -> str | None:
        """Create the object only if it does not exist: its version tag, or None if it did."""

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        """Replace the object only if it is still at ``version``: the new tag, or None."""

    def delete(self, name: str) -> None: ...

    def put_file(self, local: Path, name: str, on_bytes: OnBytes) -> None:
        """Upload a file, replacing any object of that name (blobs: same content)."""

    def get_file(self, name: str, local: Path, on_bytes: OnBytes) -> None:
        """Download an object into a new local file; FileNotFoundError when it is missing."""

    def list(self, prefix: str) -> list[str]:
        """Names under ``prefix`` (relative to the remote), recursively."""

    def listing(self, prefix: str) -> dict[str, ObjectInfo]:
        """Names under ``prefix`` with their size and last write (one listing, no reads):
        what ``gc`` and ``verify --remote`` need to judge every object at once."""


def open_backend(spec: RemoteSpec) -> Backend:
    """The backend of a remote; fsspec backends are created now, so a missing extra is said
    once, at first use, in one line."""
    if spec.url.scheme == "file":
        return LocalBackend(Path(spec.url.path()))
    return FsspecBackend(spec)


class LocalBackend:
    """A remote in a (shared) folder; every write is a private file linked or renamed into
    place, so a reader never sees a partial object."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / name

    def read(self, name: str) -> bytes | None:
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def _version(self, path: Path) -> str:
        status = os.lstat(path)
        return f"{status.st_ino}:{status.st_mtime_ns}:{status.st_size}"

    def read_versioned(self, name: str) -> tuple[bytes, str] | None:
        path = self._path(name)
        try:
            version = self._version(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        data = self.read(name)
        return None if data is None else (data, version)

    def exists(self, name: str) -> bool:
        return os.path.lexists(self._path(name))

    def _private_copy(self, path: Path, write: Callable[[int], None]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{token()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            write(fd)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        os.close(fd)
        return temporary

    def create(self, name: str, data: bytes) -> str | None:
        path = self._path(name)
        temporary = self._private_copy(path, lambda fd: _write_all(fd, data))
        try:
            os.link(temporary, path)
        except FileExistsError:
            return None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        _fsync_dir(path.parent)
        return self._version(path)

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        """Compare-and-swap: under a lock beside the object, replace it only if it is still
        at ``version``. The name never disappears meanwhile (a rename aside would let a
        third process create it in between, and two would then hold one lease)."""
        path = self._path(name)
        if not path.parent.is_dir():
            return None
        from filelock import FileLock

        with FileLock(str(path.with_name(f".{path.name}.cas-lock"))):
            try:
                if self._version(path) != version:
                    return None
            except FileNotFoundError:
                return None
            temporary = self._private_copy(path, lambda fd: _write_all(fd, data))
            os.replace(temporary, path)
            _fsync_dir(path.parent)
            return self._version(path)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))

    def put_file(self, local: Path, name: str, on_bytes: OnBytes) -> None:
        path = self._path(name)
        with open(local, "rb") as source:
            temporary = self._private_copy(path, lambda fd: _copy(source, fd, on_bytes))
        try:
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def get_file(self, name: str, local: Path, on_bytes: OnBytes) -> None:
        fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as source:
            out = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                _copy(source, out, on_bytes)
            finally:
                os.close(out)

    def list(self, prefix: str) -> list[str]:
        return sorted(self.listing(prefix))

    def listing(self, prefix: str) -> dict[str, ObjectInfo]:
        found: dict[str, ObjectInfo] = {}
        for top, _dirs, files in os.walk(self._path(prefix)):
            for file in files:
                if file.startswith("."):  # a private temporary file of a write in flight
                    continue
                path = os.path.join(top, file)
                try:
                    status = os.lstat(path)
                except FileNotFoundError:
                    continue
                found[os.path.relpath(path, self.root)] = ObjectInfo(
                    status.st_size, status.st_mtime
                )
        return dict(sorted(found.items()))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy(source: Any, fd: int, on_bytes: OnBytes) -> None:
    while chunk := source.read(_COPY_CHUNK):
        _write_all(fd, chunk)
        on_bytes(len(chunk))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _precondition_failed(error: BaseException) -> bool:
    """A 412 answer, however the client library wrapped it."""
    if isinstance(error, FileExistsError):
        return True
    seen: BaseException | None = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = response.get("Error", {}).get("Code")
            if status == 412 or code in ("PreconditionFailed", "412"):
                return True
        if getattr(seen, "status", None) == 412 or getattr(seen, "code", None) == 412:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class FsspecBackend:
    """A remote on object storage through fsspec (s3fs, gcsfs, adlfs)."""

    def __init__(self, spec: RemoteSpec) -> None:
        self.spec = spec
        self.url = spec.url
        self._local = threading.local()
        self._fs: Any = None
        self._pid = -1
        self._lock = threading.Lock()
        self.fs  # noqa: B018  (fail now, in one line, when the extra is missing)

    @property
    def fs(self) -> Any:
        """The filesystem, made once per process (an fsspec instance does not survive fork)."""
        with self._lock:
            if self._fs is None or self._pid != os.getpid():
                self._fs = self._open()
                self._pid = os.getpid()
            return self._fs

    def _open(self) -> Any:
        scheme = self.url.scheme
        try:
            import fsspec  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise RemoteError(
                f"{self.url}: a {scheme}:// remote needs fsspec; fix: "
                f"pip install 'hydra-cache-dir[{self.url.extra}]'"
            ) from None
        options: dict[str, Any] = dict(self.spec.options)
        if scheme == "s3":
            options.setdefault("use_listings_cache", False)
            if self.url.username:
                options.setdefault("key", self.url.username)
            if self.url.password:
                options.setdefault("secret", self.url.password)
        elif scheme == "az" and self.url.username:
            options.setdefault("account_name", self.url.username)
            if self.url.password:
                options.setdefault("account_key", self.url.password)
        try:
            return fsspec.filesystem(scheme, skip_instance_cache=True, **options)
        except ImportError:
            raise RemoteError(
                f"{self.url}: the {scheme}:// backend is not installed; fix: "
                f"pip install 'hydra-cache-dir[{self.url.extra}]'"
            ) from None
        except Exception as error:
            raise RemoteError(
                f"{self.url}: cannot open the remote: {self.scrub(error)}; fix: check "
                "hydra_cache.remote.options"
            ) from None

    def scrub(self, error: BaseException | str) -> str:
        return scrub(str(error), self.spec.secrets())

    def _p(self, name: str) -> str:
        return self.url.path(name)

    def read(self, name: str) -> bytes | None:
        # s3fs sends a HEAD before the GET to decide whether to download in parallel ranges;
        # max_concurrency=1 skips it, so a lookup is the one request the tier promises.
        extra = {"max_concurrency": 1} if self.url.scheme == "s3" else {}
        try:
            data: bytes = self.fs.cat_file(self._p(name), **extra)
        except FileNotFoundError:
            return None
        return data

    def read_versioned(self, name: str) -> tuple[bytes, str] | None:
        try:
            info = self.fs.info(self._p(name))
            data: bytes = self.fs.cat_file(self._p(name))
        except FileNotFoundError:
            return None
        return data, str(info.get("ETag") or info.get("generation") or info.get("etag") or "")

    def exists(self, name: str) -> bool:
        if self.url.scheme == "s3":
            # One HEAD. s3fs's exists() follows a 404 with a listing (is it a "directory"?),
            # which doubled the requests of a push's blob check and made it slower than the
            # upload itself; names here are objects, never directories.
            bucket, key, _ = self.fs.split_path(self._p(name))
            try:
                self.fs.call_s3("head_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return False
            return True
        return bool(self.fs.exists(self._p(name)))

    def create(self, name: str, data: bytes) -> str | None:
        try:
            out = self.fs.pipe_file(self._p(name), data, mode="create")
        except Exception as error:
            if not _precondition_failed(error):
                raise
            log.debug("create of %s answered 412; reading it back", name)
            return "" if self.read(name) == data else None  # our retried request landed?
        if self.read(name) != data:  # a server that checks and writes in two steps
            return None
        return str(out.get("ETag", "")) if isinstance(out, dict) else ""

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        if self.url.scheme == "s3" and version:
            try:
                out = self.fs.pipe_file(self._p(name), data, IfMatch=version)
            except FileNotFoundError:
                return None
            except Exception as error:
                if _precondition_failed(error):
                    return None
                raise
            if self.read(name) != data:
                return None
            return str(out.get("ETag", "")) if isinstance(out, dict) else ""
        self.delete(name)  # no compare-and-swap here: delete, then race to create
        return self.create(name, data)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._p(name))

    def put_file(self, local: Path, name: str, on_bytes: OnBytes) -> None:
        self.fs.put_file(str(local), self._p(name), callback=_callback(on_bytes))

    def get_file(self, name: str, local: Path, on_bytes: OnBytes) -> None:
        self.fs.get_file(self._p(name), str(local), callback=_callback(on_bytes))
        if not local.exists():  # some backends write nothing for an empty object
            local.touch()

    def list(self, prefix: str) -> list[str]:
        base = self.url.path()
        try:
            found = self.fs.find(self._p(prefix))
        except FileNotFoundError:
            return []
        return sorted(str(p)[len(base) :].lstrip("/") for p in found)

    def listing(self, prefix: str) -> dict[str, ObjectInfo]:
        base = self.url.path()
        try:
            found = self.fs.find(self._p(prefix), detail=True)
        except FileNotFoundError:
            return {}
        return {
            str(p)[len(base) :].lstrip("/"): ObjectInfo(int(info.get("size") or 0), _modified(info))
            for p, info in sorted(found.items())
            if info.get("type", "file") != "directory"
        }


def _modified(info: dict[str, Any]) -> float:
    """The last write of a listed object, however the backend names it (s3fs
    ``LastModified``, gcsfs ``updated``, adlfs ``last_modified``). When it says nothing the
    object counts as just written (infinity), so gc never takes it for an old leftover."""
    for name in ("LastModified", "last_modified", "updated", "mtime", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return math.inf


def _callback(on_bytes: OnBytes) -> Any:
    from fsspec.callbacks import Callback  # type: ignore[import-untyped,unused-ignore]

    class _Bytes(Callback):  # type: ignore[misc,unused-ignore]
        def relative_update(self, inc: int = 1) -> None:
            on_bytes(inc)

        def call(self, *args: Any, **kwargs: Any) -> None:
            return None

    return _Bytes()


def describe_error(error: BaseException, spec: RemoteSpec) -> str:
    """One line for a remote failure, scrubbed of every credential."""
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        text = "no space left on the local disk"
    return scrub(f"{type(error).__name__}: {text}", spec.secrets())
