"""The benchmark harness runs (timings are never asserted: they are the benchmark's job)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO, clean_env, run


def test_quick_benchmark_runs_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run(
        [str(REPO / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        cwd=tmp_path,
        env=clean_env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("| case | ours | compared with |")
    report = json.loads(out.read_text())
    cases = {row["case"].split(",")[0] for row in report["rows"]}
    for expected in (
        "key derivation",
        "1",
        "hit: CacheEntry(path).get_or_build on a ready entry",
        "hydra-cache ls over 1",
    ):
        assert any(case.startswith(expected) for case in cases), (expected, cases)
    peers = {row["peer"] for row in report["rows"]}
    assert "to_container+json+sha256" in peers and "os.stat" in peers
    assert all(row["ours"] > 0 for row in report["rows"] if row["theirs"] is not None)
