"""Differential property: a stage's key is unchanged exactly when everything its build reads is.

Hypothesis generates pipelines of 2 to 4 stages chained by references (``${s0.cache_dir}``),
with random leaves, an excluded knob, interpolations of shared parameters and input files
referenced from outside the hashed node. A stage's build reads its resolved node (but the
excluded knob and its own cache dir), its upstream entries (their builds' reads, recursively)
and the content of the input files it points at. After one random mutation, every stage's
key must have changed if and only if what its build reads changed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from conftest import report
from hydra_cache.resolver import register

register()

STRESS = int(os.environ.get("HYDRA_CACHE_TEST_STRESS", "1"))
EXAMPLES = 60 * STRESS
_ran = {"examples": 0, "stages": 0, "changed": 0, "kept": 0}

small_ints = st.integers(0, 3)
words = st.sampled_from(["a", "b", "c"])


@st.composite
def pipelines(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(2, 4))
    stages = []
    for i in range(count):
        stage: dict[str, Any] = {"a": draw(small_ints), "b": draw(words)}
        if draw(st.booleans()):
            stage["c"] = f"${{common.p{draw(st.integers(0, 1))}}}"
        if draw(st.booleans()):
            stage["w"] = draw(small_ints)  # excluded: never read by the build
        if i > 0 and draw(st.integers(0, 3)) > 0:
            up = draw(st.integers(0, i - 1))
            form = draw(st.sampled_from(["whole", "inside", "mixed"]))
            stage["src"] = {
                "whole": f"${{s{up}.cache_dir}}",
                "inside": f"${{s{up}.cache_dir}}/part.bin",
                "mixed": f"v${{s{up}.a}}-${{s{up}.cache_dir}}",
            }[form]
        if draw(st.booleans()):
            stage["path"] = f"${{inputs.f{draw(st.integers(0, 1))}}}"
        stages.append(stage)
    mutation = draw(
        st.sampled_from(["leaf", "excluded", "common", "input", "nothing", "upstream-form"])
    )
    return {
        "stages": stages,
        "common": {"p0": draw(small_ints), "p1": draw(words)},
        "files": [draw(st.binary(max_size=4)).hex(), draw(st.binary(max_size=4)).hex()],
        "mutation": mutation,
        "target": draw(st.integers(0, count - 1)),
        "value": draw(st.integers(10, 20)),
    }


def compose(spec: dict[str, Any], folder: Path) -> DictConfig:
    used = sorted(
        {int(s["path"][-2]) for s in spec["stages"] if "path" in s}
    )  # "${inputs.fN}" -> N
    config: dict[str, Any] = {
        "common": dict(spec["common"]),
        "inputs": {f"f{n}": str(folder / f"f{n}.bin") for n in range(2)},
        "hydra_cache": {
            "exclude": ["**.w"] if any("w" in s for s in spec["stages"]) else [],
            "inputs": [f"inputs.f{n}" for n in used],
            "input_mode": "sha256",
        },
    }
    for i, stage in enumerate(spec["stages"]):
        config[f"s{i}"] = {**stage, "cache_dir": "${cache_dir:}"}
    return OmegaConf.create(config)


def reads(cfg: DictConfig, i: int, folder: Path) -> Any:
    """What stage i's build reads, with upstream entries replaced by what *their* builds read."""
    node = cfg[f"s{i}"]
    seen: dict[str, Any] = {}
    for name in node:
        if name in ("cache_dir", "w"):
            continue
        if name == "src":
            raw = OmegaConf.to_container(node, resolve=False)["src"]  # type: ignore[index]
            up = int(re.findall(r"\$\{s(\d)\.cache_dir\}", raw)[0])
            text = re.sub(r"\$\{s\d\.cache_dir\}", "<UP>", raw)
            text = re.sub(r"\$\{s(\d)\.a\}", lambda m: str(cfg[f"s{m[1]}"].a), text)
            seen[name] = {"upstream": reads(cfg, up, folder), "text": text}
        elif name == "path":
            path = Path(node.path)
            seen[name] = [str(path), path.read_bytes().hex()]
        else:
            seen[name] = node[name]
    return seen


def keys(cfg: DictConfig) -> list[str]:
    return [Path(cfg[f"s{i}"].cache_dir).name for i in range(len(cfg) - 3)]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=pipelines())
def test_a_key_changes_exactly_when_what_its_build_reads_changes(
    spec: dict[str, Any], tmp_path_factory: Any
) -> None:
    folder = tmp_path_factory.mktemp("pipeline")
    os.environ["HYDRA_CACHE_ROOT"] = str(folder / "root")
    for n, data in enumerate(spec["files"]):
        (folder / f"f{n}.bin").write_bytes(bytes.fromhex(data))
    before_cfg = compose(spec, folder)
    before = (keys(before_cfg), [reads(before_cfg, i, folder) for i in range(len(spec["stages"]))])

    mutated = json.loads(json.dumps(spec))
    stage = mutated["stages"][mutated["target"]]
    kind = mutated["mutation"]
    if kind == "leaf":
        stage["a"] = mutated["value"]
    elif kind == "excluded" and "w" in stage:
        stage["w"] = mutated["value"]
    elif kind == "common":
        mutated["common"]["p0"] = mutated["value"]
    elif kind == "input":
        (folder / "f0.bin").write_bytes(bytes.fromhex(spec["files"][0]) + b"!")
    elif kind == "upstream-form" and "src" in stage and not stage["src"].startswith("v"):
        stage["src"] = stage["src"] + "/other"
    after_cfg = compose(mutated, folder)
    after = (keys(after_cfg), [reads(after_cfg, i, folder) for i in range(len(spec["stages"]))])

    for i in range(len(spec["stages"])):
        same_key = before[0][i] == after[0][i]
        same_reads = json.dumps(before[1][i], sort_keys=True) == json.dumps(
            after[1][i], sort_keys=True
        )
        assert same_key == same_reads, (i, kind, spec["stages"], before[1][i], after[1][i])
        _ran["stages"] += 1
        _ran["kept" if same_key else "changed"] += 1
    _ran["examples"] += 1


def test_zz_report_how_many_examples_ran() -> None:
    report("key property", **_ran)
    assert _ran["examples"] in (0, EXAMPLES) or _ran["examples"] >= EXAMPLES // 2
