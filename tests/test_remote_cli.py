"""The remote's commands in real processes: ``push``, ``pull``, ``ls --remote``, ``why``,
``verify --remote``, ``gc --remote`` and ``diff``, against the moto S3 server (and a shared
folder where a scenario is cheap). Two "machines" share the remote as in test_remote.py.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from remotes import (
    Machine,
    Remote,
    cli,
    machines,
    moto_endpoint,  # noqa: F401  (a fixture)
    remote,  # noqa: F401  (a fixture)
    requests_logged,
    s3,  # noqa: F401  (a fixture)
    tree,
)

NO_REMOTE = {"HYDRA_CACHE_REMOTE": ""}


def conf(machine: Machine, *args: str) -> list[str]:
    return [*args, "-cd", str(machine.conf)]


def etags(remote: Remote) -> dict[str, str]:
    """Every object's name and ETag: what a write of any kind would change."""
    found = {}
    for page in remote.client.get_paginator("list_objects_v2").paginate(
        Bucket=remote.bucket, Prefix=remote.prefix
    ):
        for item in page.get("Contents", []):
            found[item["Key"]] = item["ETag"]
    return found


def test_push_a_sweep_then_pull_on_another_machine(tmp_path: Path, remote: Remote) -> None:
    a, b = machines(tmp_path, remote)
    for size in ("3", "4"):  # built on A with no remote: only push puts them there
        assert a.run(f"data.size={size}", **NO_REMOTE).outcome == "built"
    assert not remote.names("entries/")
    read_only = cli(a, *conf(a, "push", "+hydra_cache.remote.mode=read"))
    assert read_only.code == 2, read_only.output
    assert read_only.stderr.count("\n") == 1 and "fix: " in read_only.stderr
    pushed = cli(a, *conf(a, "push", "-m", "data.size=3,4"))
    assert pushed.code == 0, pushed.output
    assert "pushed 2 entries" in pushed.stdout
    assert len(remote.names("entries/")) == 2
    again = cli(a, *conf(a, "push", "data.size=3"))
    assert again.code == 0 and "1 already on the remote" in again.stdout, again.output

    pulled = cli(b, *conf(b, "pull", "-m", "data.size=3,4"))
    assert pulled.code == 0, pulled.output
    assert "pulled 2 entries" in pulled.stdout
    assert re.search(r"pulled data/[0-9a-f]{16} from .* files, .* in .* s \(.*/s\)", pulled.stderr)
    (a3, a4), (b3, b4) = a.entries(), b.entries()
    assert tree(a3) == tree(b3) and tree(a4) == tree(b4)
    noop = cli(b, *conf(b, "pull", "data.size=3"))
    assert noop.code == 0 and "already on this machine" in noop.stdout, noop.output

    listed = cli(b, *conf(b, "ls", "--remote", "--format", "json"))
    rows = json.loads(listed.stdout)
    assert {(r["namespace"], r["files"]) for r in rows} == {("data", 6)}
    assert all(r["built_by"]["host"] and r["size_bytes"] > 0 for r in rows), rows
    # A reader with a signing key refuses these unsigned manifests: ls says so (it crashed).
    keyed = conf(b, "ls", "--remote", "+hydra_cache.remote.sign_key_env=HCK")
    signed = cli(b, *keyed, HCK="k" * 32)
    assert signed.code == 0 and "Traceback" not in signed.output, signed.output
    assert signed.stdout.count("refused: it is not signed") == 2, signed.stdout


def test_pull_and_push_by_key(tmp_path: Path, s3: Remote) -> None:
    a, b = machines(tmp_path, s3)
    built = a.run(**NO_REMOTE)
    key = built.path.name
    pushed = cli(a, "push", key, "--root", str(a.root))
    assert pushed.code == 0 and "pushed 1 entry" in pushed.stdout, pushed.output
    missing = cli(b, "pull", "data/0123456789abcdef", "--root", str(b.root))
    assert missing.code == 1 and "not on the remote" in missing.stdout, missing.output
    pulled = cli(b, "pull", key, "--root", str(b.root))  # B's root does not exist yet
    assert pulled.code == 0 and "pulled 1 entry" in pulled.stdout, pulled.output
    assert tree(built.path) == tree(b.root / "data" / key)


def test_why_names_the_remote_with_one_request_and_no_write(tmp_path: Path, s3: Remote) -> None:
    a, b = machines(tmp_path, s3)
    assert a.run().outcome == "built"
    before = etags(s3)
    with requests_logged() as seen:
        why = cli(b, *conf(b, "why"))
    assert why.code == 0, why.output
    assert f"not on this machine, but on the remote {s3.url}, built by host" in why.stdout
    assert "it will be pulled" in why.stdout
    assert len(seen.under(s3)) == 1, seen.under(s3)  # the one lookup of the manifest
    assert etags(s3) == before
    assert not b.root.exists()  # nor a write here

    # Refused: a reader with a signing key and an unsigned manifest.
    refused = cli(b, *conf(b, "why", "+hydra_cache.remote.sign_key_env=HC_KEY"), HC_KEY="k1")
    assert "its manifest is refused: it is not signed" in refused.stdout, refused.output

    # Torn: a pull here found a blob missing (journaled); why says so, with the blob.
    s3.delete(s3.names("blobs/")[0])
    failed = cli(b, *conf(b, "pull"))
    assert failed.code == 1 and "remote-torn" in failed.output, failed.output
    torn = cli(b, *conf(b, "why"))
    assert "remote-torn: on the remote" in torn.stdout and "is missing" in torn.stdout, torn.output


def test_verify_remote_finds_torn_entries(tmp_path: Path, s3: Remote) -> None:
    (a,) = machines(tmp_path, s3, 1)
    assert a.run().outcome == "built"
    assert a.run("data.size=5").outcome == "built"
    intact = cli(a, "verify", "--remote", "--deep")
    assert intact.code == 0 and "all 2 remote entries" in intact.stdout, intact.output
    blobs = s3.names("blobs/")
    s3.delete(blobs[0])
    s3.put(blobs[1], b"not what was built")
    shallow = cli(a, "verify", "--remote")
    assert shallow.code == 1, shallow.output
    assert "is missing" in shallow.stdout and "bytes, not" in shallow.stdout
    s3.put(blobs[1], b"x" * len(s3.objects()[blobs[2]]))  # right size, wrong content
    deep = cli(a, "verify", "--remote", "--deep", "--format", "json")
    problems = [p for row in json.loads(deep.stdout) for p in row["problems"]]
    assert any("SHA-256 differs" in p or "bytes, not" in p for p in problems), problems


def test_gc_remote_manifests_first_then_old_unreferenced_blobs(tmp_path: Path, s3: Remote) -> None:
    (a,) = machines(tmp_path, s3, 1)
    assert a.run().outcome == "built"
    now = time.time()
    live = {"host": "h", "pid": 1, "since": now, "expires": now + 3600, "token": "a"}
    dead = {"host": "h", "pid": 2, "since": 0, "expires": 1.0, "token": "b"}
    s3.put("leases/data/00000000000000aa", json.dumps(live).encode())
    s3.put("leases/data/00000000000000bb", json.dumps(dead).encode())
    before = etags(s3)
    dry = cli(a, "gc", "--remote", "--older-than", "0s", "--grace", "0s", "--dry-run")
    assert dry.code == 0 and "would remove 1 manifest" in dry.stdout, dry.output
    assert etags(s3) == before  # --dry-run wrote nothing
    first = cli(a, "gc", "--remote", "--older-than", "0s")  # default grace: 1h
    assert "removed 1 manifest, 0 blobs" in first.stdout, first.output
    assert "younger than --grace" in first.stdout
    assert not s3.names("entries/") and s3.names("blobs/")
    # A live lease: its build started after these blobs were written (give or take a
    # minute of clock skew), so they may be its upload, whose manifest is still to come.
    second = cli(a, "gc", "--remote", "--older-than", "0s", "--grace", "0s")
    assert second.code == 0, second.output
    assert s3.names("blobs/") and "or than a live lease" in second.stdout
    assert s3.names("leases/") == ["leases/data/00000000000000aa"]  # the live one stays
    s3.delete("leases/data/00000000000000aa")  # that build ended
    third = cli(a, "gc", "--remote", "--older-than", "0s", "--grace", "0s")
    assert re.search(r"removed 0 manifests, [1-9] blobs", third.stdout), third.output
    assert not s3.names("blobs/")
    assert s3.names() == ["hydra-cache-remote.json"]  # the format marker stays


def test_diff_reads_the_cost_from_the_remote(tmp_path: Path, s3: Remote) -> None:
    import subprocess

    a, ci = machines(tmp_path, s3)
    assert a.run(BUILD_SLEEP="0.3").outcome == "built"  # the team built the base's entry
    repo = tmp_path / "repo"
    (repo / "conf").mkdir(parents=True)
    (repo / "conf" / "config.yaml").write_text((a.conf / "config.yaml").read_text())

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=T", "-c", "user.email=t@x", *args],
            cwd=repo,
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "base")
    config = repo / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("size: 3", "size: 4"))
    done = cli(ci, "diff", "--base", "main", "-cd", str(repo / "conf"), "--format", "markdown")
    assert done.code == 0, done.output
    assert "1 cache invalidated, ~" in done.stdout and "unknown" not in done.stdout, done.stdout
    assert f"read from the team's remote `{s3.url}`" in done.stdout
