"""The main job: digits -> cached preprocessing -> cached PCA features -> classifier.

Run it twice: the first run builds the preprocessed arrays and the features into their
``${cache_dir:}``, the second finds them. Change a preprocessing value (``data.resize=4``) and
both stages are rebuilt beside the old entries (the features' key follows its upstream); change
a feature value (``features.components=16``) and only the features are; change a model value
(``model.C=0.1``) and both caches are reused.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from hydra_cache import CacheEntry

log = logging.getLogger(__name__)


def preprocess(data: DictConfig, staging: Path) -> None:
    """The expensive step: resize, normalise, split, and save the arrays into ``staging``."""
    digits = load_digits()
    images = digits.images.astype(np.float64)
    side = int(data.resize)
    if side != images.shape[1]:
        rows = np.linspace(0, images.shape[1] - 1, side).round().astype(int)
        images = images[:, rows][:, :, rows]
    features = images.reshape(len(images), -1)
    if data.normalize == "standard":
        features = (features - features.mean(0)) / (features.std(0) + 1e-9)
    elif data.normalize == "minmax":
        features = (features - features.min()) / (features.max() - features.min())
    elif data.normalize != "none":
        raise ValueError(f"data.normalize must be standard, minmax or none, not {data.normalize!r}")
    x_train, x_test, y_train, y_test = train_test_split(
        features, digits.target, test_size=data.test_size, random_state=data.split_seed
    )
    np.savez(
        staging / Path(data.arrays).name,
        x_train=x_train,
        x_test=x_test,
        y_train=y_train,
        y_test=y_test,
    )


def project(features: DictConfig, staging: Path) -> None:
    """The second stage: PCA of the preprocessed arrays (its upstream), fitted on train."""
    arrays = np.load(features.source)
    mean = arrays["x_train"].mean(0)
    _, _, components = np.linalg.svd(arrays["x_train"] - mean, full_matrices=False)
    basis = components[: int(features.components)].T
    np.savez(
        staging / Path(features.arrays).name,
        x_train=(arrays["x_train"] - mean) @ basis,
        x_test=(arrays["x_test"] - mean) @ basis,
        y_train=arrays["y_train"],
        y_test=arrays["y_test"],
    )


#: What ``hydra-cache build --app examples/train.py`` calls to pre-build a sweep's entries
#: (upstream stages first).
hydra_cache_builders = {"data": preprocess, "features": project}

# hydra-core 1.3 warns without version_base, 1.4 warns with it.
VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"}


@hydra.main(config_path="../conf", config_name="config", **VERSION_BASE)
def main(cfg: DictConfig) -> float:
    for stage, build in (("data", preprocess), ("features", project)):
        node = cfg[stage]
        entry = CacheEntry(node.cache_dir)
        started = time.perf_counter()
        entry.get_or_build(lambda staging, node=node, build=build: build(node, staging))
        log.info(
            "%s cache %s: %s (%.2fs)",
            stage,
            entry.last_outcome,
            entry.path,
            time.perf_counter() - started,
        )
    arrays = np.load(cfg.features.arrays)
    model = LogisticRegression(C=cfg.model.C, max_iter=cfg.model.max_iter)
    model.fit(arrays["x_train"], arrays["y_train"])
    accuracy = float(model.score(arrays["x_test"], arrays["y_test"]))
    log.info("accuracy %.4f (model.C=%s, data.resize=%s)", accuracy, cfg.model.C, cfg.data.resize)
    return accuracy


if __name__ == "__main__":
    main()
