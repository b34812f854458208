"""The run manifest (``.hydra/cache.yaml``) and the sweep summary (``cache_summary.yaml``).

A manifest records, for one job, every cache dir of its config: where it was, how its key was
made (the redacted payload), what was on disk at job start and what the job did with it. The
sweep summary says which jobs shared which entries and how many builds the sweep paid for.
Both are written atomically (temporary file, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

MANIFEST_NAME = "cache.yaml"
SUMMARY_NAME = "cache_summary.yaml"
FORMAT = 1


def manifest_path(output_dir: str | Path, output_subdir: str | None) -> Path:
    """``<output_dir>/.hydra/cache.yaml``; ``<output_dir>/cache.yaml`` when
    ``hydra.output_subdir`` is null (Hydra then writes no ``.hydra`` folder, so neither do we)."""
    base = Path(output_dir)
    return base / output_subdir / MANIFEST_NAME if output_subdir else base / MANIFEST_NAME


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(OmegaConf.to_yaml(OmegaConf.create(data)), encoding="utf-8")
    os.replace(temporary, path)


def read_yaml(path: Path) -> dict[str, Any]:
    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(loaded, dict)
    return {str(k): v for k, v in loaded.items()}


def find_manifests(sweep_dir: Path) -> list[Path]:
    """Every job manifest under a sweep folder (either location)."""
    return sorted(
        {*sweep_dir.glob(f"**/.hydra/{MANIFEST_NAME}"), *sweep_dir.glob(f"*/{MANIFEST_NAME}")}
    )


def summarize(manifests: Iterable[dict[str, Any]], sweep_dir: str) -> dict[str, Any]:
    """Which jobs shared which entries, and how many builds the sweep paid for."""
    jobs = 0
    shared: dict[str, dict[str, Any]] = {}
    for manifest in manifests:
        jobs += 1
        job = str((manifest.get("job") or {}).get("num"))
        for record in manifest.get("entries") or []:
            entry = shared.setdefault(
                record["path"],
                {
                    "path": record["path"],
                    "config_key": record.get("config_key"),
                    "namespace": record.get("namespace"),
                    "key": record.get("key"),
                    "jobs": [],
                    "built_by": [],
                    "hit_by": [],
                    "waited": [],
                    "pulled_by": [],
                    "missing_in": [],
                },
            )
            entry["jobs"].append(job)
            status = record.get("status_at_end")
            bucket = {
                "built": "built_by",
                "hit": "hit_by",
                "ready": "hit_by",
                "waited": "waited",
                # Pulled from the team's remote: present, and not built by this sweep.
                "pulled": "pulled_by",
            }.get(str(status), "missing_in")
            entry[bucket].append(job)
    entries = sorted(shared.values(), key=lambda e: str(e["path"]))
    for entry in entries:
        entry["builds"] = len(entry["built_by"])
    return {
        "format": FORMAT,
        "sweep_dir": sweep_dir,
        "jobs": jobs,
        "builds": sum(e["builds"] for e in entries),
        "entries": entries,
    }
