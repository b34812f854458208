"""Recipe: a Lightning DataModule whose ``prepare_data`` builds the entry once and whose
``setup`` reads it (needs ``pip install lightning``).

    python examples/recipes/train_lightning.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import lightning
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).parent))  # the recipe modules named by _target_

VERSION_BASE = {} if hydra.__version__.startswith("1.4") else {"version_base": "1.3"}


class Classifier(lightning.LightningModule):
    def __init__(self, inputs: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(inputs, 10)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@hydra.main(config_path="conf", config_name="lightning", **VERSION_BASE)
def main(cfg: DictConfig) -> None:
    datamodule = instantiate(cfg.data)
    side = int(cfg.data.preprocess.resize)
    trainer = lightning.Trainer(
        **cfg.trainer,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Classifier(side * side), datamodule=datamodule)


if __name__ == "__main__":
    main()
