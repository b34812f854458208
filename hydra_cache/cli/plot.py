"""``hydra-cache ls --plot out.png``: what is in a root, as a picture.

Left, the bytes each namespace holds; right, each entry's build time against its size (the
entries worth keeping are up and to the left: slow to build, cheap to keep). matplotlib is an
optional extra (``pip install "hydra-cache-dir[plot]"``), imported only here.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra_cache.errors import ConfigError


def draw(rows: list[dict[str, Any]], out: Path, root: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "--plot",
            "needs matplotlib, which is not installed",
            'pip install "hydra-cache-dir[plot]"',
        ) from None
    sizes: dict[str, int] = defaultdict(int)
    for row in rows:
        sizes[row["namespace"]] += int(row["size_bytes"] or 0)
    names = sorted(sizes, key=lambda n: sizes[n], reverse=True)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.barh(names[::-1], [sizes[n] / 2**20 for n in names[::-1]], color="#4c72b0")
    left.set_xlabel("MiB")
    left.set_title("size by namespace")
    for name in names:
        points = [r for r in rows if r["namespace"] == name]
        right.scatter(
            [max(int(r["size_bytes"] or 0), 1) for r in points],
            [max(float(r["build_seconds"] or 0), 1e-3) for r in points],
            label=name,
            alpha=0.8,
        )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("size (bytes)")
    right.set_ylabel("build time (s)")
    right.set_title("build time against size, per entry")
    if names:
        right.legend(fontsize="small", loc="best")
    figure.suptitle(f"{len(rows)} entries under {root}", fontsize="medium")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
