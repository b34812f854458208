"""The remote tier with real processes: two "machines" (local roots with their own HOME and XDG
folders) share one remote, a real S3 server (moto's, on 127.0.0.1) or a shared folder, and run
the real Hydra app ``apps/remote_app.py``. Builds are counted by the lines the build appends.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from remotes import (
    Remote,
    Run,
    builds,
    cli,
    machines,
    moto_endpoint,  # noqa: F401  (a fixture)
    remote,  # noqa: F401  (a fixture)
    s3,  # noqa: F401  (a fixture)
    tree,
)


def manifests(remote: Remote) -> list[str]:
    return remote.names("entries/")


def test_machine_a_builds_and_b_pulls_with_no_build(tmp_path: Path, remote: Remote) -> None:
    a, b = machines(tmp_path, remote)
    first = a.run()
    assert first.outcome == "built", first.output
    assert len(manifests(remote)) == 1
    second = b.run()
    assert second.outcome == "pulled", second.output
    assert len(builds(a)) == 1  # B built nothing
    assert tree(first.path) == tree(second.path)  # bytes, modes, links, empty folders
    assert first.path.name == second.path.name  # the key is the team-wide address
    assert f"pulled data/{first.path.name} from {remote.url}" in second.output
    meta = json.loads((second.path / ".hydra-cache.json").read_text())
    assert meta["pulled_from"]["remote"] == remote.url
    # A hit never asks the remote again, and a third run on B is a plain hit.
    assert b.run().outcome == "hit"


def test_a_local_hit_never_touches_the_network(tmp_path: Path, s3: Remote) -> None:
    (a,) = machines(tmp_path, s3, 1)
    assert a.run().outcome == "built"
    unreachable = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "HYDRA_CACHE_REMOTE": "s3://gone/x",
        "AWS_MAX_ATTEMPTS": "1",
    }
    hit = a.run(**unreachable)
    assert hit.outcome == "hit", hit.output
    assert "cannot reach" not in hit.output
    # A miss with that remote is built here, saying why, and is not an error.
    missed = a.run("data.size=4", **unreachable)
    assert missed.outcome == "built", missed.output
    assert "cannot reach the remote s3://gone/x" in missed.output
    # Asked once per process: the job-start explanation's failure spares get_or_build's retry.
    asked = missed.output.count("cannot reach the remote") + missed.output.count("not asked again")
    assert missed.output.count("cannot reach the remote") <= 1 and asked >= 1, missed.output


def test_two_machines_four_processes_race_one_key_with_one_build(
    tmp_path: Path, s3: Remote
) -> None:
    a, b = machines(tmp_path, s3)
    start = tmp_path / "go"
    procs = [m.spawn(START_FILE=str(start), BUILD_SLEEP="1.5") for m in (a, b) for _ in range(4)]
    time.sleep(0.5)
    start.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    outcomes = []
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, out + err
        outcomes.append(next(line.split()[1] for line in out.splitlines() if "OUTCOME" in line))
    assert len(builds(a)) == 1, (builds(a), outcomes)
    assert sorted(outcomes).count("built") == 1
    assert "pulled" in outcomes  # the other machine got the team's copy
    assert len(manifests(s3)) == 1
    (entry_a,), (entry_b,) = a.entries(), b.entries()
    assert tree(entry_a) == tree(entry_b)
    assert not s3.names("leases/")  # released after the commit


@pytest.mark.parametrize("kill_at", ["blob", "manifest"])
def test_a_killed_uploader_leaves_no_manifest(tmp_path: Path, s3: Remote, kill_at: str) -> None:
    a, b = machines(tmp_path, s3)
    killed = a.run(KILL_AT=kill_at)
    assert killed.code == -9, killed.output
    assert not manifests(s3)  # nothing another machine could read as an entry
    if kill_at == "manifest":
        assert s3.names("blobs/")  # every blob was up, the commit never happened
    # B finds no manifest and a lease whose holder is gone: it builds, and commits.
    second = b.run()
    assert second.outcome == "built", second.output
    assert len(builds(a)) == 2
    assert len(manifests(s3)) == 1
    # A third machine pulls B's complete entry.
    (c,) = machines(tmp_path / "c", s3, 1)
    third = c.run()
    assert third.outcome == "pulled", third.output
    assert tree(third.path) == tree(second.path)


def test_a_deleted_blob_is_remote_torn_then_rebuilt_and_repaired(
    tmp_path: Path, remote: Remote
) -> None:
    a, b, c = machines(tmp_path, remote, 3)
    assert a.run().outcome == "built"
    blobs = remote.names("blobs/")
    remote.delete(blobs[0])
    torn = b.run()
    assert torn.outcome == "built", torn.output
    assert "remote-torn" in torn.output and "is missing" in torn.output
    assert "repaired data/" in torn.output
    journal = (b.root / ".hydra-cache" / "journal.jsonl").read_text()
    assert '"event": "remote-torn"' in journal
    assert remote.names("blobs/") == blobs  # the blob is back
    assert len(manifests(remote)) == 1  # and the manifest was not replaced
    pulled = c.run()
    assert pulled.outcome == "pulled", pulled.output
    assert tree(pulled.path) == tree(torn.path)


def test_a_corrupt_blob_is_remote_torn(tmp_path: Path, s3: Remote) -> None:
    a, b = machines(tmp_path, s3)
    assert a.run().outcome == "built"
    name = s3.names("blobs/")[0]
    s3.put(name, b"not what was built")
    torn = b.run()
    assert torn.outcome == "built", torn.output
    assert "remote-torn" in torn.output
    assert "corrupt" in torn.output or "bytes, not" in torn.output
    assert s3.objects()[name] != b"not what was built"  # repaired


def test_an_expired_lease_is_taken_over(tmp_path: Path, remote: Remote) -> None:
    a, b = machines(tmp_path, remote)
    assert a.run().outcome == "built"
    key = a.entries()[0].name
    lease = {
        "host": "other-host",
        "pid": 4242,
        "user": "someone",
        "since": time.time() - 30,
        "expires": time.time() + 300,
        "token": "feedfeed",
    }
    remote.put(f"leases/data/{key}", json.dumps(lease).encode())
    remote.delete(f"entries/data/{key}.json")  # as if other-host builds it now
    child = b.spawn()
    assert child.stdout is not None
    seen = []
    for line in child.stdout:  # B must wait while the lease lives, however slowly it started
        seen.append(line)
        if "waiting for other-host:4242 (user someone)" in line:
            lease["expires"] = time.time() - 1  # other-host died: its lease runs out
            remote.put(f"leases/data/{key}", json.dumps(lease).encode())
            break
    out, err = child.communicate(timeout=120)
    taken = Run(child.returncode, "".join(seen) + out, err)
    assert taken.outcome == "built", taken.output
    assert "waiting for other-host:4242 (user someone)" in taken.output
    assert "took over the lease" in taken.output and "(expired)" in taken.output
    assert len(manifests(remote)) == 1


def test_a_lease_that_is_never_refreshed_is_taken_over_whatever_its_clock_says(
    tmp_path: Path, s3: Remote
) -> None:
    """Found by a stranger's attack: a lease whose writer's clock ran ahead (expires in 1,157
    days) made every other machine wait forever. A live holder rewrites its lease every third
    of its length; one left unchanged for longer is dead."""
    a, b = machines(tmp_path, s3)
    assert a.run().outcome == "built"
    key = a.entries()[0].name
    lease = {"host": "ahead", "pid": 7, "user": "x", "since": time.time(), "token": "t0"}
    lease["expires"] = time.time() + 1e8
    s3.put(f"leases/data/{key}", json.dumps(lease).encode())
    s3.delete(f"entries/data/{key}.json")
    taken = b.run(HYDRA_CACHE_REMOTE_LEASE_SECONDS="2")
    assert taken.outcome == "built", taken.output
    assert "took over the lease" in taken.output and "(not refreshed)" in taken.output
    assert len(manifests(s3)) == 1


def test_a_manifest_copied_to_another_key_is_refused(tmp_path: Path, s3: Remote) -> None:
    """Found by a stranger's attack: on an unsigned remote, data.size=3's manifest copied to
    data.size=4's key (its name and digest edited) was pulled as size 4's entry."""
    a, b = machines(tmp_path, s3)
    three = a.run()
    four = a.run("data.size=4", "+hydra_cache.remote.mode=read")  # built here, never pushed
    assert three.outcome == four.outcome == "built"
    digest = json.loads((four.path / ".hydra-cache.json").read_text())["digest"]
    forged = json.loads(s3.objects()[f"entries/data/{three.path.name}.json"])
    forged.update(key=four.path.name, digest=digest)
    s3.put(f"entries/data/{four.path.name}.json", json.dumps(forged).encode())
    got = b.run("data.size=4")
    assert got.outcome == "built", got.output  # built here, not served size 3's files
    assert "its recorded parameters differ from this config's" in got.output
    assert tree(got.path) == tree(four.path)


def test_a_manifest_symlink_out_of_the_entry_is_refused(tmp_path: Path, s3: Remote) -> None:
    a, b = machines(tmp_path, s3)
    first = a.run()
    name = f"entries/data/{first.path.name}.json"
    planted = json.loads(s3.objects()[name])
    planted["files"]["escape"] = {"size": 0, "symlink": "../../../../etc/hostname"}
    from hydra_cache.store.remote.manifest import tree_digest

    planted["tree"] = tree_digest(planted["files"])
    s3.put(name, json.dumps(planted).encode())
    got = b.run()
    assert got.outcome == "built", got.output
    assert "its symlink 'escape' points outside the entry" in got.output
    assert not (got.path / "escape").exists()


def test_read_mode_writes_nothing(tmp_path: Path, s3: Remote) -> None:
    config = "data:\n  size: 3\n  cache_dir: ${cache_dir:}\nhydra_cache:\n  remote: {mode: read}\n"
    a, b, c = machines(tmp_path, s3, 3, config=config)
    writer = a.run("hydra_cache.remote.mode=read-write")
    assert writer.outcome == "built", writer.output
    before = s3.objects()
    assert b.run().outcome == "pulled"  # read mode reads
    assert b.run("data.size=9").outcome == "built"  # a miss is built here only
    s3.delete(next(n for n in before if n.startswith("blobs/")))
    before = s3.objects()
    torn = c.run()
    assert torn.outcome == "built" and "remote-torn" in torn.output, torn.output
    assert "repairing" not in torn.output
    assert s3.objects() == before  # no lease, blob, manifest or marker, even after a torn pull


def test_an_unsigned_manifest_is_refused_when_a_key_is_set(tmp_path: Path, s3: Remote) -> None:
    signed = (
        "data:\n  size: 3\n  cache_dir: ${cache_dir:}\n"
        "hydra_cache:\n  remote: {sign_key_env: HC_SIGN_KEY}\n"
    )
    a, b, c = machines(tmp_path, s3, 3, config=signed)
    unsigned = a.run("~hydra_cache")  # a writer without signing
    assert unsigned.outcome == "built", unsigned.output
    refused = b.run(HC_SIGN_KEY="team-key-1")
    assert refused.outcome == "built", refused.output
    assert "is not signed" in refused.output
    # Signed by a writer with the key: pulled by a reader with it, refused with another key.
    assert a.run("data.size=5", HC_SIGN_KEY="team-key-1").outcome == "built"
    assert b.run("data.size=5", HC_SIGN_KEY="team-key-1").outcome == "pulled"
    wrong = c.run("data.size=5", HC_SIGN_KEY="another-key")
    assert wrong.outcome == "built" and "signature does not match" in wrong.output
    # A writer whose key is missing does not push (readers would refuse it forever).
    keyless = a.run("data.size=6")
    assert "not pushing" in keyless.output and "HC_SIGN_KEY" in keyless.output
    assert len(manifests(s3)) == 2


def test_a_lost_race_keeps_the_winner_and_names_the_files_that_differ(
    tmp_path: Path, s3: Remote
) -> None:
    a, b = machines(tmp_path, s3)
    assert a.run(BUILD_NOISE="1").outcome == "built"
    (name,) = manifests(s3)
    winner = s3.objects()[name]
    s3.delete(name)  # B will find no manifest, and build
    pause = tmp_path / "pause"
    pause.mkdir()
    loser = b.spawn(BUILD_NOISE="1", PAUSE_BEFORE_COMMIT=str(pause))
    while not (pause / "at-commit").exists():
        assert loser.poll() is None, loser.communicate()
        time.sleep(0.02)
    s3.put(name, winner)  # A's manifest lands first
    (pause / "go-commit").touch()
    out, err = loser.communicate(timeout=60)
    assert loser.returncode == 0, out + err
    assert "the build is not deterministic, this file differs: noise.txt" in out + err
    assert s3.objects()[name] == winner  # never overwritten


def test_credentials_and_signed_urls_never_appear_in_logs_or_files(
    tmp_path: Path, s3: Remote
) -> None:
    """Canary: credentials in the URL's userinfo, a signed query string, the environment's
    secret key and the signing key; then every line printed, every file under the test's
    folder and every object on the remote is searched."""
    bucket = s3.bucket
    url = f"s3://AKIDCANARY71:CANARY72secret@{bucket}/team/cache?X-Amz-Signature=CANARY73sig"
    secret_env = {
        "HYDRA_CACHE_REMOTE": url,
        "AWS_SECRET_ACCESS_KEY": "CANARY74envsecret",
        "HC_SIGN_KEY": "CANARY75signkey",
    }
    config = (
        "data:\n  size: 3\n  cache_dir: ${cache_dir:}\n"
        "hydra_cache:\n  remote: {sign_key_env: HC_SIGN_KEY}\n"
    )
    a, b, c = machines(tmp_path, s3, 3, config=config)
    runs = [a.run(**secret_env), b.run(**secret_env)]
    assert [r.outcome for r in runs] == ["built", "pulled"], runs[0].output + runs[1].output
    assert f"s3://{bucket}/team/cache?<redacted>" in runs[1].output
    s3.delete(s3.names("blobs/")[0])
    runs.append(c.run(**secret_env))  # remote-torn, rebuilt, repaired: more messages
    gone = {**secret_env, "HYDRA_CACHE_REMOTE": url.replace(bucket, "no-such-bucket-x")}
    runs.append(c.run("data.size=8", **gone))  # errors from the server
    runs.append(
        c.run(
            "data.size=9", AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1", **secret_env
        )
    )  # an unreachable remote
    # The commands, on the same remote and with the same secrets, successes and failures.
    for args in (
        ["push", "-cd", str(c.conf), "data.size=9"],
        ["pull", "-cd", str(b.conf), "data.size=9"],
        ["pull", "-cd", str(b.conf), "data.size=10"],
        ["ls", "--remote"],
        ["why", "-cd", str(b.conf), "data.size=9"],
        ["verify", "--remote", "--deep"],
        ["gc", "--remote", "--older-than", "0s", "--dry-run"],
        ["push", "-cd", str(c.conf), "data.size=9", "+hydra_cache.remote.mode=read"],
    ):
        runs.append(cli(b if args[0] in ("pull", "why") else c, *args, **secret_env))
    runs.append(cli(c, "ls", "--remote", **gone))
    text = "".join(r.output for r in runs)
    assert "remote-torn" in text
    assert "pulled 1 entry" in text and "not on the remote" in text, text
    leaks = [line for line in text.splitlines() if "CANARY" in line]
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if b"CANARY" in data:
                leaks.append(f"{path}: {data[data.index(b'CANARY') - 60 :][:160]!r}")
    leaks += [name for name, data in s3.objects().items() if b"CANARY" in data]
    assert not leaks, "\n".join(leaks[:20])
