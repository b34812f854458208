"""Remotes for the remote-tier tests: a real S3 server (moto's, started here on 127.0.0.1) and
shared folders, plus "machines": local roots with their own HOME and XDG folders sharing one
remote, each running the real Hydra app ``apps/remote_app.py`` in subprocesses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import TESTS, clean_env, write_config

APP = TESTS / "apps" / "remote_app.py"
#: Fake credentials: moto accepts any, and a real chain must never be reached from a test.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
CONFIG = """\
data:
  size: 3
  cache_dir: ${cache_dir:}
"""


@dataclass
class Remote:
    """One remote as the tests see it: its URL, the environment a child needs, its objects."""

    url: str
    env: dict[str, str]
    folder: Path | None = None
    client: Any = None
    bucket: str = ""
    prefix: str = ""

    def objects(self) -> dict[str, bytes]:
        if self.folder is not None:
            return {
                str(p.relative_to(self.folder)): p.read_bytes()
                for p in sorted(self.folder.rglob("*"))
                if p.is_file() and not p.name.startswith(".")
            }
        found: dict[str, bytes] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                body = self.client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"]
                found[name] = body.read()
        return found

    def names(self, under: str = "") -> list[str]:
        return sorted(n for n in self.objects() if n.startswith(under))

    def delete(self, name: str) -> None:
        if self.folder is not None:
            (self.folder / name).unlink()
        else:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)

    def put(self, name: str, data: bytes) -> None:
        if self.folder is not None:
            (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
            (self.folder / name).write_bytes(data)
        else:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 server (moto's) on 127.0.0.1 and a free port, for the whole session."""
    pytest.importorskip("s3fs", reason="the S3 tests need s3fs: pip install -e '.[test]'")
    server_module = pytest.importorskip("moto.server", reason="needs moto[server]")
    for name, value in FAKE_AWS.items():
        os.environ.setdefault(name, value)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str, **config: Any) -> Any:
    """A boto3 client of a test S3 server (``config``: botocore ``Config`` settings)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(**config) if config else None,
    )


def s3_remote(endpoint: str, *, prefix: str = "team/cache") -> Remote:
    bucket = f"hc-{secrets.token_hex(6)}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    env = {**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint}
    return Remote(f"s3://{bucket}/{prefix}", env, None, client, bucket, prefix + "/")


def file_remote(folder: Path) -> Remote:
    folder.mkdir(parents=True, exist_ok=True)
    return Remote(f"file://{folder}", {}, folder)


@pytest.fixture(params=["s3", "file"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    """The same scenario against the S3 server and a shared folder."""
    if request.param == "s3":
        return s3_remote(request.getfixturevalue("moto_endpoint"))
    return file_remote(tmp_path / "shared-remote")


@pytest.fixture
def s3(moto_endpoint: str) -> Remote:
    return s3_remote(moto_endpoint)


@dataclass
class Machine:
    """A machine: its own HOME, XDG folders and cache root; the remote is shared."""

    home: Path
    remote: Remote
    conf: Path
    build_log: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.home / "cache-root"

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_env(
            HOME=str(self.home),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_STATE_HOME=str(self.home / ".state"),
            HYDRA_CACHE_ROOT=str(self.root),
            HYDRA_CACHE_REMOTE=self.remote.url,
            BUILD_LOG=str(self.build_log),
            HYDRA_CACHE_PROGRESS_INTERVAL="0.5",
        )
        env.update(self.remote.env)
        env.update(self.extra)
        env.update(extra)
        return env

    def command(self, *overrides: str, name: str = "config") -> list[str]:
        return [
            sys.executable,
            str(APP),
            "--config-dir",
            str(self.conf),
            "--config-name",
            name,
            *overrides,
        ]

    def run(self, *overrides: str, name: str = "config", **env: str) -> Run:
        return self.finish(self.command(*overrides, name=name), **env)

    def finish(self, argv: list[str], **env: str) -> Run:
        """Run ``argv`` on this machine (its home, its environment) to the end."""
        done = subprocess.run(
            argv,
            cwd=self.home,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def spawn(self, *overrides: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*overrides),
            cwd=self.home,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def entries(self) -> list[Path]:
        return sorted(p.parent for p in self.root.rglob(".hydra-cache.json"))


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def outcome(self) -> str:
        for line in self.stdout.splitlines():
            if line.startswith("OUTCOME "):
                return line.split()[1]
        raise AssertionError(f"no outcome (exit {self.code}):\n{self.output[-3000:]}")

    @property
    def path(self) -> Path:
        for line in self.stdout.splitlines():
            if line.startswith("OUTCOME "):
                return Path(line.split()[2])
        raise AssertionError(f"no outcome (exit {self.code}):\n{self.output[-3000:]}")


def machines(tmp_path: Path, remote: Remote, count: int = 2, config: str = CONFIG) -> list[Machine]:
    conf = write_config(tmp_path / "conf", {"config.yaml": config})
    log = tmp_path / "builds.log"
    found = []
    for number in range(count):
        home = tmp_path / f"machine-{'abcdefgh'[number]}"
        home.mkdir(parents=True, exist_ok=True)
        found.append(Machine(home, remote, conf, log))
    return found


def builds(machine: Machine) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return machine.build_log.read_text().splitlines()
    return []


def tree(entry: Path) -> dict[str, tuple[str, Any]]:
    """Everything in an entry but its metadata: files' bytes and modes, links, folders."""
    found: dict[str, tuple[str, Any]] = {}
    for path in sorted(entry.rglob("*")):
        name = str(path.relative_to(entry))
        if name == ".hydra-cache.json":
            continue
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_dir():
            found[name] = ("dir", None)
        else:
            found[name] = ("file", (path.read_bytes(), path.stat().st_mode & 0o777))
    return found


class RequestLog(logging.Handler):
    """The requests moto's server answers, as its request log lines (``"GET /b/k HTTP/1.1"
    404 -``): how a test counts what a command asked of the remote, from any process."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def under(self, remote: Remote) -> list[str]:
        """The requests that named the remote's bucket."""
        return [line for line in self.lines if f"/{remote.bucket}" in line]


@contextlib.contextmanager
def requests_logged() -> Iterator[RequestLog]:
    server_log = logging.getLogger("werkzeug")
    handler, level = RequestLog(), server_log.level
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        server_log.removeHandler(handler)
        server_log.setLevel(level)


def cli(machine: Machine, *args: str, **env: str) -> Run:
    """``hydra-cache ARGS`` on ``machine``, in a real process, with its config folder."""
    return machine.finish([sys.executable, "-m", "hydra_cache", *args], **env)
