"""hydra-cache against its peers and the floor, side by side in one run.

    python benchmarks/run.py            # the full run (a few minutes)
    python benchmarks/run.py --quick    # smaller sizes and fewer repeats (under 2 minutes)

Prints a table of medians and ratios and writes it as JSON (``--json``), plus a PNG chart of
the key-derivation and hit-path ratios (``--chart``, needs matplotlib). Peers come from the
``bench`` extra (``pip install -e ".[bench]"``); a peer that is not installed is skipped.
Only ratios measured in the same run are compared; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import hydra_plugins.hydra_cache_plugin  # noqa: F401  (registers ${cache_dir:})
from hydra_cache import CacheEntry
from hydra_cache.key import Context, derive
from hydra_cache.key.walk import Snapshot
from hydra_cache.resolver import resolve_cache_dir_leaf

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    """One comparison: our median against a peer's (or the floor's), as a ratio."""

    case: str
    ours: float
    peer: str
    theirs: float | None
    target: str = ""
    unit: str = "s"
    notes: str = ""
    met: bool | None = field(default=None)

    @property
    def ratio(self) -> float | None:
        return None if not self.theirs else self.ours / self.theirs


def median_time(fn: Callable[[], object], *, repeat: int, number: int = 1) -> float:
    """Median seconds per call over ``repeat`` batches of ``number`` calls."""
    fn()  # warm up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - started) / number)
    return statistics.median(samples)


def paired_times(
    ours: Callable[[], object], theirs: Callable[[], object], *, repeat: int, number: int = 1
) -> tuple[float, float]:
    """Median seconds per call of each, sampled in alternation, so that the drift of a shared
    machine (seen here: the same call 1.2 ms in one row, 1.75 ms in the next) hits both."""
    mine, other = alternated_times(ours, theirs, repeat=repeat, number=number)
    return mine, other


def alternated_times(*fns: Callable[[], object], repeat: int, number: int = 1) -> list[float]:
    """Median seconds per call of each of ``fns``, sampled in alternation."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, taken in zip(fns, samples):
            started = time.perf_counter()
            for _ in range(number):
                fn()
            taken.append((time.perf_counter() - started) / number)
    return [statistics.median(taken) for taken in samples]


def optional(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


# ------------------------------------------------------------------------ 1. derivation


def make_config(leaves: int, interpolations: bool) -> DictConfig:
    """A ``data`` node of ``leaves`` leaves in groups of ten, of mixed types."""
    groups: dict[str, Any] = {}
    for number in range(leaves):
        group = groups.setdefault(f"g{number // 10}", {})
        kind = number % 4
        value: Any = [number, float(number) / 7, f"s{number}", number % 3 == 0][kind]
        if interpolations and number % 10 == 9:
            value = "${data.g0.k0}" if number % 20 == 9 else "pre_${data.g0.k2}"
        group[f"k{number % 10}"] = value
    return OmegaConf.create({"data": groups, "other": {"x": 1}})


def resolver_context() -> Context:
    """The context the resolver derives with: this machine's paths and a known root (so the
    walk checks every string for upstream paths and machine paths, as it does in an app)."""
    known = OmegaConf.create({"up": {"a": 1, "cache_dir": "${cache_dir:}"}})
    _ = known.up.cache_dir  # registers a root: strings are then checked for entry paths
    return Context(machine=((os.getcwd(), "launch"), (os.path.expanduser("~"), "home")))


def bench_derivation(leaves: int, interpolations: bool, repeat: int) -> list[Row]:
    cfg = make_config(leaves, interpolations)
    plain = OmegaConf.to_container(cfg.data, resolve=True)
    label = f"key derivation, {leaves:,} leaves{', interpolated' if interpolations else ''}"
    context = resolver_context()

    def ours_fn() -> object:
        return derive(cfg, ["data"], context=context)

    def row(peer: str, theirs_fn: Callable[[], object], target: str) -> Row:
        ours, theirs = paired_times(ours_fn, theirs_fn, repeat=repeat)
        return Row(label, ours, peer, theirs, target=target)

    def to_container_json() -> str:
        data = OmegaConf.to_container(cfg.data, resolve=True)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def floor() -> str:
        return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()

    rows = [
        row(
            "to_container+json+sha256",
            to_container_json,
            "<= 0.2x" if leaves == 5000 and not interpolations else "<= 1.0x",
        )
    ]
    joblib = optional("joblib")
    if joblib is not None:
        rows.append(
            row("joblib.hash", lambda: joblib.hash(plain), "<= 0.33x" if leaves == 5000 else "")
        )
    hashing = optional("datasets.fingerprint")
    if hashing is not None:
        rows.append(
            row(
                "datasets Hasher.hash",
                lambda: hashing.Hasher.hash(plain),
                "<= 0.33x" if leaves == 5000 else "",
            )
        )
    floor_row = row("floor: json+sha256 of a plain dict", floor, "")
    floor_row.notes = "how far from the floor"
    rows.append(floor_row)
    if leaves == 5000:

        def first_derivation() -> object:
            forget_memos()
            return derive(cfg, ["data"], context=context)

        first, theirs = paired_times(first_derivation, to_container_json, repeat=repeat)
        rows.append(
            Row(
                f"{label}, first in a process (memos cleared)",
                first,
                "to_container+json+sha256",
                theirs,
                notes="the rows above derive the same config again, as a sweep worker does",
            )
        )
    return rows


def forget_memos() -> None:
    """Clear the key code's memos of strings and names (what a new process starts without)."""
    from hydra_cache.key import refs, rules, walk

    for module in (refs, rules, walk):
        for name in dir(module):
            clear = getattr(getattr(module, name), "cache_clear", None)
            if clear is not None:
                clear()


def bench_chain(root: Path, leaves: int, depth: int, repeat: int) -> list[Row]:
    """A stage with ``depth`` stages upstream of it (memoized, as in an app) against the same
    stage whose source is a plain path: what chaining adds to one derivation."""
    os.environ["HYDRA_CACHE_ROOT"] = str(root)
    per_stage = make_config(leaves, False).data
    stages: dict[str, Any] = {}
    for i in range(depth + 1):
        source = f"${{s{i - 1}.cache_dir}}/arrays.npz" if i else "/datasets/raw"
        stages[f"s{i}"] = {"p": per_stage, "source": source, "cache_dir": "${cache_dir:}"}
    chained = OmegaConf.create(stages)
    for i in range(depth + 1):
        _ = chained[f"s{i}"].cache_dir  # every upstream derived once, as an app would
    alone = OmegaConf.create(
        {"s": {"p": per_stage, "source": "/datasets/raw/arrays.npz", "cache_dir": "${cache_dir:}"}}
    )
    _ = alone.s.cache_dir
    context = dataclasses.replace(resolver_context(), cache_dir_of=resolve_cache_dir_leaf)
    last = f"s{depth}"

    def unchecked() -> object:
        """The same derivation with every memo taken on trust: not exact (a config changed in
        place would keep its old keys), but what chaining would cost with a free check."""
        exact = Snapshot.is_current
        Snapshot.is_current = lambda self, identity: True  # type: ignore[method-assign]
        try:
            return derive(chained, [last], context=context)
        finally:
            Snapshot.is_current = exact  # type: ignore[method-assign]

    ours, floor, theirs = alternated_times(
        lambda: derive(chained, [last], context=context),
        unchecked,
        lambda: derive(alone, ["s"], context=context),
        repeat=repeat * 10,
    )
    case = f"key derivation with {depth} upstream stage{'s' if depth > 1 else ''}"
    return [
        Row(
            f"{case}, {leaves:,} leaves each",
            ours,
            "the same stage without upstreams",
            theirs,
            target=f"<= {1 + 0.1 * depth:.1f}x",
            notes="each upstream adds at most 10 %",
        ),
        Row(
            f"{case}, memos trusted (the floor)",
            floor,
            "the same stage without upstreams",
            theirs,
            notes="not exact (a config changed in place keeps its keys): the rest of the "
            "row above is the exactness check",
        ),
    ]


# --------------------------------------------------------------------- 2. repeated access


def bench_access(root: Path, accesses: int, repeat: int) -> list[Row]:
    os.environ["HYDRA_CACHE_ROOT"] = str(root)
    cfg = OmegaConf.create(
        {
            "data": {
                **{f"k{n}": n for n in range(10)},
                "source": "/data/digits",
                "cache_dir": "${cache_dir:}",
                "plain": "/data/cache/abc",
                "interp": "${.source}",
            }
        }
    )
    data = cfg.data

    def loop(key: str) -> Callable[[], None]:
        def run() -> None:
            for _ in range(accesses):
                data[key]

        return run

    ours = median_time(loop("cache_dir"), repeat=repeat)
    label = f"{accesses:,} accesses to cfg.data.cache_dir"
    return [
        Row(
            label,
            ours,
            "plain ${.source} interpolation",
            median_time(loop("interp"), repeat=repeat),
            target="<= 1.5x",
        ),
        Row(label, ours, "plain string value", median_time(loop("plain"), repeat=repeat)),
    ]


# ----------------------------------------------------------------------------- 3. hit


def bench_hit(root: Path, repeat: int) -> list[Row]:
    path = root / "data" / "0123456789abcdef"
    CacheEntry(path).get_or_build(lambda staging: (staging / "x.npy").write_bytes(b"0" * 4096))

    def hit() -> None:
        CacheEntry(path).get_or_build(lambda staging: None)

    ours = median_time(hit, repeat=repeat, number=2000)
    rows = [
        Row(
            "hit: CacheEntry(path).get_or_build on a ready entry",
            ours,
            "os.stat",
            median_time(lambda: os.stat(path), repeat=repeat, number=2000),
            target="<= 20x",
        )
    ]
    joblib = optional("joblib")
    if joblib is not None:
        memory = joblib.Memory(str(root / "joblib"), verbose=0)
        params = {f"p{n}": n for n in range(10)}
        cached = memory.cache(lambda cfg: b"0" * 4096)
        cached(params)
        rows.append(
            Row(
                "hit: CacheEntry(path).get_or_build on a ready entry",
                ours,
                "joblib.Memory hit, 10-key config",
                median_time(lambda: cached(params), repeat=repeat, number=200),
                target="<= 0.1x",
            )
        )
    return rows


# ----------------------------------------------------------------------- 3b. audit cost


def bench_audit(root: Path, repeat: int) -> list[Row]:
    """The demo's real preprocessing build, with the key-coverage audit off and on."""
    if optional("sklearn") is None:
        return []
    sys.path.insert(0, str(HERE.parent / "examples"))
    from train import preprocess  # the main job's build

    from hydra_cache import registry
    from hydra_cache.audit import recording

    os.environ["HYDRA_CACHE_ROOT"] = str(root)
    cfg = OmegaConf.load(HERE.parent / "conf" / "data" / "digits.yaml")
    cfg = OmegaConf.create({"data": cfg, "train": {"seed": 0}})
    path = str(cfg.data.cache_dir)
    info = registry.lookup(path)
    assert info is not None
    staging = root / "staging"
    staging.mkdir(parents=True, exist_ok=True)

    def plain() -> None:
        preprocess(cfg.data, staging)

    def audited() -> None:
        with recording(cfg, info.covered):
            preprocess(cfg.data, staging)

    # Interleaved, so that both see the same caches and the same machine load.
    samples: dict[str, list[float]] = {"on": [], "off": []}
    plain()
    for _ in range(repeat * 4):
        for name, build in (("off", plain), ("on", audited)):
            started = time.perf_counter()
            build()
            samples[name].append(time.perf_counter() - started)
    label = "build of the demo's preprocessing (digits)"
    return [
        Row(
            label + ", audit on",
            statistics.median(samples["on"]),
            "audit off",
            statistics.median(samples["off"]),
            target="<= 1.1x",
        )
    ]


# -------------------------------------------------------------------------- 4. startup

APP = """
import hydra
VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": None}

@hydra.main(config_path=None, config_name=None, **VERSION_BASE)
def main(cfg):
    pass

main()
"""

WRAPPER = """
import os, runpy, sys
if sys.argv[1] == "--without-plugin":
    import hydra_plugins.hydra_cache_plugin as plugin
    entry = os.path.dirname(os.path.dirname(os.path.dirname(plugin.__file__)))
    for name in [m for m in sys.modules if m.startswith(("hydra_plugins", "hydra_cache"))]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p) != entry]
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def bench_startup(work: Path, runs: int) -> list[Row]:
    import hydra_plugins.hydra_cache_plugin as plugin

    entry = Path(plugin.__file__).parent.parent.parent
    if "site-packages" in entry.parts:
        return [
            Row(
                "startup of a minimal @hydra.main app",
                0.0,
                "same app without the plugin",
                None,
                notes="skipped: measure from an editable install",
            )
        ]
    app, wrapper = work / "app.py", work / "wrapper.py"
    app.write_text(APP)
    wrapper.write_text(WRAPPER)
    times: dict[str, list[float]] = {"--with-plugin": [], "--without-plugin": []}
    args = [
        "hydra.run.dir=" + str(work / "run"),
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]
    for _ in range(runs):
        for variant, samples in times.items():
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, str(wrapper), variant, str(app), *args],
                check=True,
                capture_output=True,
            )
            samples.append(time.perf_counter() - started)
    with_plugin = statistics.median(times["--with-plugin"])
    without = statistics.median(times["--without-plugin"])
    return [
        Row(
            "startup of a minimal @hydra.main app (whole process)",
            with_plugin,
            "same app without the plugin",
            without,
            target="<= 1.05x",
        )
    ]


# ---------------------------------------------------------------------------- 5. sweep

SWEEP_APP = """
import json, os, time
from pathlib import Path
import hydra
from hydra_cache import CacheEntry
VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": None}

@hydra.main(config_path=".", config_name="sweep", **VERSION_BASE)
def main(cfg):
    started = time.time()
    def build(staging):
        time.sleep(cfg.build_seconds)
        (staging / "data").write_text("x")
    CacheEntry(cfg.data.cache_dir).get_or_build(build)
    time.sleep(cfg.task_seconds)
    Path(cfg.timing_dir, f"{os.getpid()}-{started}.json").write_text(
        json.dumps({"start": started, "end": time.time()}))

main()
"""


def bench_sweep(work: Path, build: float, task: float, jobs: int = 8) -> list[Row]:
    if optional("hydra_plugins.hydra_joblib_launcher") is None:
        return []
    workers = os.cpu_count() or 1
    (work / "sweep.yaml").write_text(
        textwrap.dedent(f"""
        build_seconds: {build}
        task_seconds: {task}
        timing_dir: ???
        data: {{source: digits, cache_dir: "${{cache_dir:}}"}}
    """)
    )
    (work / "sweep_app.py").write_text(SWEEP_APP)

    def sweep(name: str, *extra: str) -> float:
        timing = work / f"timing-{name}"
        timing.mkdir()
        env = {**os.environ, "HYDRA_CACHE_ROOT": str(work / f"root-{name}")}
        subprocess.run(
            [
                sys.executable,
                str(work / "sweep_app.py"),
                "-m",
                "hydra/launcher=joblib",
                f"hydra.launcher.n_jobs={workers}",
                f"hydra.sweep.dir={work / ('sweep-' + name)}",
                f"timing_dir={timing}",
                "+model=" + ",".join(map(str, range(jobs))),
                *extra,
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        spans = [json.loads(p.read_text()) for p in timing.iterdir()]
        return max(s["end"] for s in spans) - min(s["start"] for s in spans)

    shared = sweep("shared")
    own = sweep("own", "+hydra_cache.salt=${hydra:job.num}")
    ideal = build + jobs * task / workers
    label = f"{jobs}-job joblib sweep, {build:g} s shared build, {task:g} s task, {workers} workers"
    return [
        Row(
            label,
            shared,
            "ideal: build + jobs x task / workers",
            ideal,
            target="<= 1.15x",
            notes="first job start to last job end",
        ),
        Row(label, shared, "every job builds its own copy", own),
    ]


# ---------------------------------------------------------------- 5b. pre-built sweep

PREBUILD_APP = """
import os, time
from pathlib import Path
import hydra
from hydra_cache import CacheEntry


def build(data, staging):
    time.sleep(data.build_seconds)
    (staging / "data").write_text(str(data.key))


hydra_cache_builders = {"data": build}


@hydra.main(version_base=None, config_path=".", config_name="prebuild")
def main(cfg):
    entry = CacheEntry(cfg.data.cache_dir)
    entry.get_or_build(lambda staging: build(cfg.data, staging))
    time.sleep(cfg.task_seconds)
    Path(cfg.outcome_dir, f"{os.getpid()}-{time.time()}.txt").write_text(entry.last_outcome)


if __name__ == "__main__":
    main()
"""


def bench_prebuild(work: Path, build: float, task: float, workers: int = 2) -> list[Row]:
    """A 4-job, 2-key sweep on 2 joblib workers: ``hydra-cache build -j 2`` first, then the
    sweep (all hits), against the same sweep launched as is (both jobs of a key start together:
    one builds, the other holds a worker while it waits)."""
    if optional("hydra_plugins.hydra_joblib_launcher") is None:
        return []
    (work / "prebuild.yaml").write_text(
        textwrap.dedent(f"""
        task_seconds: {task}
        outcome_dir: ???
        data: {{key: 0, build_seconds: {build}, cache_dir: "${{cache_dir:}}"}}
    """)
    )
    (work / "prebuild_app.py").write_text(PREBUILD_APP)
    sweep_args = ["data.key=0,1", "+job=0,1"]

    def timed(name: str, prebuild: bool) -> tuple[float, list[str]]:
        outcomes = work / f"outcomes-{name}"
        outcomes.mkdir()
        env = {**os.environ, "HYDRA_CACHE_ROOT": str(work / f"root-{name}")}
        started = time.perf_counter()
        if prebuild:
            subprocess.run(
                [
                    *(sys.executable, "-m", "hydra_cache", "build", "--app", "prebuild_app.py"),
                    *("-j", str(workers), f"outcome_dir={outcomes}", *sweep_args),
                ],
                check=True,
                capture_output=True,
                env=env,
                cwd=work,
            )
        subprocess.run(
            [
                *(sys.executable, "prebuild_app.py", "-m", "hydra/launcher=joblib"),
                *(f"hydra.launcher.n_jobs={workers}", f"hydra.sweep.dir=sweep-{name}"),
                *(f"outcome_dir={outcomes}", *sweep_args),
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=work,
        )
        return time.perf_counter() - started, [p.read_text() for p in outcomes.iterdir()]

    plain, _ = timed("plain", False)
    prebuilt, outcomes = timed("prebuilt", True)
    label = (
        f"4-job 2-key joblib sweep on {workers} workers, {build:g} s build, {task:g} s task: "
        "hydra-cache build, then the sweep"
    )
    return [
        Row(
            label,
            prebuilt,
            "the same sweep, not pre-built",
            plain,
            notes="both include process start-up (the build command's own, and its "
            "-j workers', is the price of pre-building); after the build, "
            f"{outcomes.count('hit')} of {len(outcomes)} jobs hit",
        )
    ]


# ---------------------------------------------------------------------------- 6. scale


def populate(root: Path, entries: int) -> None:
    """``entries`` real entries in namespace data (fsync skipped: setup is not measured)."""
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]
    try:
        for number in range(entries):
            CacheEntry(root / "data" / f"{number:016x}").get_or_build(
                lambda staging, n=number: (staging / "x").write_text(str(n))
            )
    finally:
        os.fsync = real_fsync


def command_time(args: list[str], env: dict[str, str], cwd: Path, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, env=env, cwd=cwd)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def bench_scale(work: Path, entries: int, runs: int) -> list[Row]:
    root = work / "scale-root"
    populate(root, entries)
    conf = work / "scale-conf"
    conf.mkdir()
    (conf / "config.yaml").write_text('data: {resize: 8, cache_dir: "${cache_dir:}"}\n')
    env = {**os.environ, "HYDRA_CACHE_ROOT": str(root)}
    cli = [sys.executable, "-m", "hydra_cache"]
    rows = []
    for name, args, target in [
        ("ls", ["ls", "--format", "json"], "< 1 s"),
        ("why", ["why", "-cd", str(conf)], "< 1 s"),
        ("gc --dry-run", ["gc", "--max-size", "1", "--dry-run"], "< 2 s"),
    ]:
        seconds = command_time([*cli, *args], env, work, runs)
        limit = float(target.split()[1])
        rows.append(
            Row(
                f"hydra-cache {name} over {entries:,} entries",
                seconds,
                "absolute target",
                limit,
                target=target,
            )
        )
    keys = command_time([*cli, "keys", "-cd", str(conf)], env, work, runs)
    dvc = shutil.which("dvc") or (
        str(Path(sys.executable).parent / "dvc")
        if (Path(sys.executable).parent / "dvc").exists()
        else None
    )
    if dvc and shutil.which("git"):
        project = work / "dvc-project"
        project.mkdir()
        (project / "params.yaml").write_text("data:\n  resize: 8\n")
        (project / "dvc.yaml").write_text(
            textwrap.dedent("""
            stages:
              prepare:
                cmd: echo prepared > out.txt
                params: [data.resize]
                outs: [out.txt]
        """)
        )
        for step in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "repro", "-q"]):
            subprocess.run(step, cwd=project, check=True, capture_output=True)
        status = command_time([dvc, "status"], dict(os.environ), project, runs)
        rows.append(
            Row(
                "hydra-cache keys (one config)",
                keys,
                "dvc status (params-only stage)",
                status,
                target="<= 0.5x",
            )
        )
    return rows


# ---------------------------------------------------------------------------- publish


def _write_files(folder: Path, count: int, size: int, block: bytes) -> None:
    for number in range(count):
        with open(folder / f"part{number:05d}.bin", "wb") as handle:
            handle.write(number.to_bytes(8, "little"))
            handle.write(block[: size - 8])


def bench_publish(work: Path, count: int, size: int, repeat: int) -> list[Row]:
    """get_or_build of ``count`` files of ``size`` bytes against the durable floor: the same
    files written, then ``sync``. Every sample starts with nothing dirty in the page cache,
    and the two are interleaved so drift hits both alike. Nothing is deleted until the end:
    on this machine's disk, creating 20,000 files right after deleting 20,000 ran 3-10x
    slower than into a disk left alone, which made whichever side followed a delete lose."""
    block = os.urandom(size)
    total = count * size
    label = (
        f"{total / 1e9:.0f} GB in {count:,} files"
        if total >= 1e9
        else f"{count:,} files of {size // 1024} KiB"
        if size >= 1024
        else f"{count:,} files of {size} B"
    )
    floor_times: list[float] = []
    floor_writes: list[float] = []
    our_times: list[float] = []

    def floor_sample(sample: int) -> None:
        floor_dir = work / "root" / "floor" / f"{sample:016x}"  # as deep as an entry
        floor_dir.mkdir(parents=True)
        os.sync()
        started = time.perf_counter()
        _write_files(floor_dir, count, size, block)
        written = time.perf_counter()
        subprocess.run(["sync"], check=True)
        floor_times.append(time.perf_counter() - started)
        floor_writes.append(written - started)

    def our_sample(sample: int) -> None:
        path = work / "root" / "bench" / f"{sample:016x}"
        os.sync()
        started = time.perf_counter()
        CacheEntry(path).get_or_build(lambda staging: _write_files(staging, count, size, block))
        our_times.append(time.perf_counter() - started)

    for sample in range(repeat):  # alternate who goes first (a second write runs slower here)
        first, second = (
            (floor_sample, our_sample) if sample % 2 == 0 else (our_sample, floor_sample)
        )
        first(sample)
        second(sample)
        print(
            f"publish {label}: floor {floor_times[-1]:.2f} s (write {floor_writes[-1]:.2f} s), "
            f"ours {our_times[-1]:.2f} s",
            file=sys.stderr,
        )
    ours, floor = statistics.median(our_times), statistics.median(floor_times)
    rows = [
        Row(
            f"publish: get_or_build writing {label}",
            ours,
            "durable floor: same files written, then sync",
            floor,
            target="<= 1.3x",
        )
    ]
    entry = work / "root" / "bench" / f"{0:016x}"
    names = sorted(str(p) for p in entry.iterdir() if p.name.startswith("part"))
    from hydra_cache.store.verify import problems_of

    def ours_verify() -> None:
        assert problems_of(entry) == []

    listing = "\0".join(names).encode()

    def b2sum() -> None:  # xargs: 20,000 names do not fit on one command line
        subprocess.run(
            ["xargs", "-0", "b2sum"], input=listing, check=True, stdout=subprocess.DEVNULL
        )

    if shutil.which("b2sum"):
        ours_v = median_time(ours_verify, repeat=max(3, repeat))
        theirs_v = median_time(b2sum, repeat=max(3, repeat))
        rows.append(
            Row(
                f"verify: re-hash {label} (page cache warm)",
                ours_v,
                "b2sum over the same files",
                theirs_v,
                target="<= 1.25x",
                notes="time ratio; <= 1.25x is >= 0.8x b2sum's throughput",
            )
        )
    shutil.rmtree(work / "root")
    return rows


# ----------------------------------------------------------------------------- remote


class _MotoServer:
    """moto's S3 server in its own process on 127.0.0.1 (a server in this process would
    share the interpreter lock with the clients it serves), for every remote row alike."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        server = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _remote_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": endpoint,
    }


def bench_remote(work: Path, total: int, repeat: int) -> list[Row]:
    """Push and pull through the remote tier against raw s3fs ``put``/``get`` of the same
    objects, on the same moto server; the requests a lookup of a miss makes; and DVC's push
    and pull of the same data to the same server when ``dvc[s3]`` is installed."""
    s3fs = optional("s3fs")
    if s3fs is None or not Path(sys.executable).with_name("moto_server").exists():
        print("remote rows skipped: needs s3fs and moto[server]", file=sys.stderr)
        return []
    from hydra_cache.store.remote import ops, parse_remote
    from hydra_cache.store.remote.tier import RemoteTier

    server = _MotoServer()
    os.environ.update(_remote_env(server.endpoint))
    fs = s3fs.S3FileSystem(endpoint_url=server.endpoint, skip_instance_cache=True)
    fs.mkdir("bench")
    rows: list[Row] = []
    try:
        ours: dict[str, float] = {}
        for count in (1000, 1):
            found = _bench_transfer(work / f"remote-{count}", fs, total, count, repeat)
            if count == 1000:
                ours = {"push": found[0].ours, "pull": found[1].ours}
            rows += found
        spec = parse_remote("s3://bench/lookup")
        assert spec is not None
        ops.lookup(spec, "data", "0" * 16)  # opens the client: not part of a lookup
        backend = RemoteTier(spec, work / "x" / "data" / ("0" * 16), work).backend
        sent: list[str] = []
        backend.fs.s3.meta.events.register(
            "before-send", lambda **kw: sent.append(kw["request"].url)
        )  # type: ignore[attr-defined]
        assert ops.lookup(spec, "data", "1" * 16).status == "absent"
        rows.append(
            Row(
                "remote: lookup of a miss (HTTP requests)",
                float(len(sent)),
                "absolute target",
                1.0,
                target="<= 1",
                unit="requests",
                notes="counted by botocore's before-send hook: "
                + ", ".join(u.split("/", 3)[-1] for u in sent),
            )
        )
        rows += _bench_dvc(work / "dvc", server.endpoint, total, ours)
    finally:
        server.stop()
    return rows


def _bench_transfer(work: Path, fs: Any, total: int, count: int, repeat: int) -> list[Row]:
    from hydra_cache.store.remote import ops, parse_remote
    from hydra_cache.store.remote.tier import RemoteTier

    source = work / "source"
    source.mkdir(parents=True)
    block = os.urandom(total // count)
    _write_files(source, count, total // count, block)
    label = f"{total / 1e9:g} GB as {count:,} file{'s' if count > 1 else ''}"
    entry = work / "root" / "data" / ("a" * 16)
    CacheEntry(entry).get_or_build(
        lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True)
    )
    record = CacheEntry(entry).metadata()
    assert record is not None
    names = sorted(p.name for p in source.iterdir())
    ours_push: list[float] = []
    raw_put: list[float] = []
    ours_pull: list[float] = []
    raw_get: list[float] = []
    for sample in range(repeat):
        prefix = f"bench/{count}-{sample}"
        spec = parse_remote(f"s3://{prefix}/ours")
        assert spec is not None
        # The tier pushes after its lookup of the manifest, so its client is made by then
        # (as s3fs's is here): make it before timing.
        assert ops.lookup(spec, "data", "a" * 16).status == "absent"
        started = time.perf_counter()
        RemoteTier(spec, entry, work / "root").commit(record)
        ours_push.append(time.perf_counter() - started)
        started = time.perf_counter()
        fs.put([str(source / n) for n in names], [f"{prefix}/raw/{n}" for n in names])
        raw_put.append(time.perf_counter() - started)
        target = work / f"pulled-{sample}" / "data" / ("a" * 16)
        os.sync()
        started = time.perf_counter()
        moved = ops.pull(spec, target)
        ours_pull.append(time.perf_counter() - started)
        assert moved.outcome == "pulled", moved
        local = work / f"raw-{sample}"
        local.mkdir()
        blobs = sorted(fs.find(f"{prefix}/ours/blobs"))
        os.sync()
        started = time.perf_counter()
        fs.get(blobs, [str(local / b.rpartition("/")[2]) for b in blobs])
        raw_get.append(time.perf_counter() - started)
        shutil.rmtree(local)
        shutil.rmtree(target.parent.parent)
        fs.rm(prefix, recursive=True)
        print(
            f"remote {label}: push {ours_push[-1]:.2f} s (s3fs put {raw_put[-1]:.2f} s), "
            f"pull {ours_pull[-1]:.2f} s (s3fs get {raw_get[-1]:.2f} s)",
            file=sys.stderr,
        )
    shutil.rmtree(work)
    notes = "time ratio; <= 1.11x is >= 0.9x the throughput"
    return [
        Row(
            f"remote: push {label}",
            statistics.median(ours_push),
            "raw s3fs put of the same files",
            statistics.median(raw_put),
            target="<= 1.11x",
            notes=notes,
        ),
        Row(
            f"remote: pull {label} (verified, published)",
            statistics.median(ours_pull),
            "raw s3fs get of the same objects",
            statistics.median(raw_get),
            target="<= 1.11x",
            notes=notes + "; ours also hashes every file and makes the entry durable",
        ),
    ]


def _bench_dvc(work: Path, endpoint: str, total: int, ours: dict[str, float]) -> list[Row]:
    """``dvc push``/``dvc pull`` of the 1,000 files to the same server, once each (DVC takes
    seconds per command): skipped, with the reason in the row's notes, when DVC is not
    installed or does not run."""
    dvc = Path(sys.executable).with_name("dvc")
    label = f"{total / 1e9:g} GB as 1,000 files"
    if not dvc.exists():
        why = "dvc not installed (pip install 'dvc[s3]')"
        return [Row(f"remote: push {label}", ours["push"], "dvc push", None, notes=why)]
    repo = work / "repo"
    (repo / "data").mkdir(parents=True)
    _write_files(repo / "data", 1000, total // 1000, os.urandom(total // 1000))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def run(*args: str) -> float:
        started = time.perf_counter()
        done = subprocess.run(
            [str(dvc), *args], cwd=repo, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"dvc {' '.join(args)}: {done.stderr.strip()[-300:]}")
        return time.perf_counter() - started

    try:
        run("init", "--no-scm", "-q")
        run("remote", "add", "-d", "store", "s3://bench/dvc")
        run("remote", "modify", "store", "endpointurl", endpoint)
        run("add", "data")
        push = run("push")
        shutil.rmtree(repo / ".dvc" / "cache")
        shutil.rmtree(repo / "data")
        os.sync()
        pull = run("pull")
    except (RuntimeError, OSError) as error:
        note = f"dvc did not run: {error}"
        return [Row(f"remote: push {label}", ours["push"], "dvc push", None, notes=note)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run(
        [str(dvc), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    notes = f"dvc {version}, one run each; dvc pull also checks out the files"
    return [
        Row(f"remote: push {label}", ours["push"], "dvc push", push, target="< 1x", notes=notes),
        Row(f"remote: pull {label}", ours["pull"], "dvc pull", pull, target="< 1x", notes=notes),
    ]


# ---------------------------------------------------------------------------- report


def check(row: Row) -> None:
    if not row.target or row.theirs is None:
        return
    operator, value = row.target.split()[:2]
    measured = row.ours if row.peer == "absolute target" else row.ratio
    limit = float(value.rstrip("xs"))
    assert measured is not None
    row.met = measured < limit if operator == "<" else measured <= limit


def show(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} us"


def table(rows: list[Row]) -> str:
    lines = [
        "| case | ours | compared with | theirs | ratio | target | met |",
        "| --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        ratio = "" if row.peer == "absolute target" or row.ratio is None else f"{row.ratio:.2f}x"
        theirs = "" if row.theirs is None else show(row.theirs)
        ours = show(row.ours)
        if row.unit != "s":  # a count (requests), not a time
            ours, theirs = f"{row.ours:g} {row.unit}", ""
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(
            f"| {row.case} | {ours} | {row.peer} | {theirs} | {ratio} | {row.target} | {met} |"
        )
    return "\n".join(lines)


def chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = [r for r in rows if r.ratio and (r.case.startswith(("key derivation", "hit")))]
    labels = [
        f"{r.case.replace('key derivation, ', '').replace('key derivation ', '')}\nvs {r.peer}"
        for r in picked
    ]
    figure, axis = plt.subplots(figsize=(10, 0.45 * len(picked) + 1.5))
    floors = ("floor", "os.stat")
    colors = [
        "#999"
        if r.peer.startswith(floors) or "the floor" in r.case
        else "#2a7"
        if (r.ratio or 0) <= 1
        else "#c55"
        for r in picked
    ]
    axis.barh(range(len(picked)), [r.ratio for r in picked], color=colors)
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_yticks(range(len(picked)), labels, fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel("hydra-cache time / compared time (log scale; < 1 is faster; grey: floors)")
    axis.set_title("hydra-cache key derivation and hit path, ratios measured in one run")
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")  # (long labels stay whole)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and fewer (< 2 min)")
    parser.add_argument(
        "--json",
        type=Path,
        help="where to write the results (default: results/latest.json, or "
        "results/latest-quick.json with --quick, so a quick run never overwrites a full one)",
    )
    parser.add_argument("--chart", type=Path, help="write a PNG chart (needs matplotlib)")
    parser.add_argument("--replot", type=Path, help="only redraw --chart from a saved --json")
    parser.add_argument(
        "--only",
        choices=["publish", "remote", "key"],
        help="run only this group of rows (and print them)",
    )
    args = parser.parse_args()
    if args.replot:
        saved = json.loads(args.replot.read_text())["rows"]
        fields = set(Row.__dataclass_fields__)
        chart([Row(**{k: v for k, v in r.items() if k in fields}) for r in saved], args.chart)
        return 0
    quick = args.quick
    if args.json is None:
        args.json = HERE / "results" / ("latest-quick.json" if quick else "latest.json")
    repeat = 5 if quick else 15
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hydra-cache-bench-", dir=HERE) as scratch:
        work = Path(scratch)
        # The benchmark's roots are temporary: keep them out of the user's list of roots
        # ($XDG_STATE_HOME/hydra-cache/roots.json), here and in every child process.
        os.environ["XDG_STATE_HOME"] = str(work / "state")
        publish_sizes = (
            [(32, 256 << 10, 1), (500, 1024, 1)]
            if quick
            else [(1000, 1_000_000, 3), (20_000, 1024, 5)]
        )
        remote_bytes = 100_000_000 if quick else 1_000_000_000
        if args.only:
            rows = _group(args.only, work, publish_sizes, remote_bytes)
        else:
            rows = _all_groups(work, quick, repeat, publish_sizes, remote_bytes)
    for row in rows:
        check(row)
    print(table(rows))
    if args.only:  # a group's rows go beside the full run's, never over them
        args.json = args.json.with_name(args.json.stem + f"-{args.only}.json")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "quick": quick,
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
            },
            indent=1,
        )
    )
    if args.chart:
        chart(rows, args.chart)
    return 0


def _group(
    name: str, work: Path, publish_sizes: list[tuple[int, int, int]], remote_bytes: int
) -> list[Row]:
    """The rows of one group (``--only``)."""
    rows: list[Row] = []
    if name == "publish":
        for count, size, times in publish_sizes:
            rows += bench_publish(work / f"publish-{count}", count, size, times)
    elif name == "key":
        for interpolated in (False, True):
            rows += bench_derivation(5000, interpolated, 15)
        for depth in (1, 3):
            rows += bench_chain(work / "chain-root", 1000, depth, 15)
    else:
        rows += bench_remote(work / "remote", remote_bytes, 3)
    return rows


def _all_groups(
    work: Path,
    quick: bool,
    repeat: int,
    publish_sizes: list[tuple[int, int, int]],
    remote_bytes: int,
) -> list[Row]:
    rows: list[Row] = []
    for leaves in (50, 5000) if quick else (50, 5000, 50000):
        for interpolated in (False, True):
            rows += bench_derivation(leaves, interpolated, 3 if leaves > 5000 else repeat)
    for depth in (1, 3):
        rows += bench_chain(work / "chain-root", 1000, depth, repeat)
    rows += bench_access(work / "access-root", 1000, repeat)
    rows += bench_hit(work / "hit-root", repeat)
    rows += bench_audit(work / "audit-root", repeat)
    startup_dir = work / "startup"
    startup_dir.mkdir()
    rows += bench_startup(startup_dir, 5 if quick else 15)
    sweep_dir = work / "sweep"
    sweep_dir.mkdir()
    rows += bench_sweep(sweep_dir, 1.0 if quick else 2.0, 0.25 if quick else 0.5)
    prebuild_dir = work / "prebuild"
    prebuild_dir.mkdir()
    rows += bench_prebuild(prebuild_dir, 1.0 if quick else 2.0, 0.25 if quick else 0.5)
    scale_dir = work / "scale"
    scale_dir.mkdir()
    rows += bench_scale(scale_dir, 1000 if quick else 10000, 1 if quick else 3)
    for count, size, times in publish_sizes:
        rows += bench_publish(work / f"publish-{count}", count, size, times)
    rows += bench_remote(work / "remote", remote_bytes, 3)
    return rows


if __name__ == "__main__":
    sys.exit(main())
