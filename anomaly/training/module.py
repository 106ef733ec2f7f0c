"""LightningModule: the training logic around any of the plain model families."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from anomaly.config import Config, upgrade_stored_config
from anomaly.data.synthetic import synthesize_anomalies
from anomaly.models import AutoencoderOutput, build_model
from anomaly.training.feature_cache import FEATURES_KEY
from anomaly.training.losses import AutoencoderLoss


def batch_size(batch: dict[str, Any]) -> int:
    """Images in a batch of images or of cached maps."""
    if FEATURES_KEY in batch:
        return len(next(iter(batch[FEATURES_KEY].values())))
    return len(batch["image"])


def uses_corruption(config: Config) -> bool:
    """'auto' corrupts inputs for the U-Net only, whose skips would otherwise learn the identity."""
    if config.train.corruption == "auto":
        return config.model.architecture == "unet"
    return config.train.corruption == "synthetic"


class AutoencoderModule(L.LightningModule):
    """Trains to reconstruct clean normal images, optionally from synthetically corrupted inputs.

    The resolved config and the MLflow run are stored in the checkpoint, so a checkpoint alone
    rebuilds the model and later steps (evaluation) log into the same run.
    """

    def __init__(
        self, config: dict[str, Any], mlflow_run_id: str | None = None, tracking_uri: str | None = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = Config.model_validate(upgrade_stored_config(config))
        data = self.config.data
        self.model = build_model(self.config.model, data.channels, data.image_size)
        self.loss = AutoencoderLoss(self.config.loss)
        self.corrupt = uses_corruption(self.config)
        self.corruption_generator = torch.Generator()

    def forward(self, images: torch.Tensor) -> AutoencoderOutput:
        return self.model(images)

    def on_fit_start(self) -> None:
        self.corruption_generator.manual_seed(self.config.train.seed + self.global_rank)

    def objective(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Loss terms for a batch of images (corrupting the inputs first for a repairing U-Net), or of a frozen
        encoder's cached maps (anomaly.training.feature_cache), which the feature autoencoder restores."""
        if FEATURES_KEY in batch:
            return self.loss(self.model.reconstruct(batch[FEATURES_KEY]), None)
        images = batch["image"]
        inputs = images
        if self.corrupt:
            inputs, _ = synthesize_anomalies(images, generator, self.config.train.corruption_probability)
        return self.loss(self.model(inputs), images)

    def _log_terms(self, stage: str, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        for name, value in terms.items():
            key = f"{stage}_loss" if name == "loss" else f"{stage}_{name}"
            self.log(
                key, value, on_step=False, on_epoch=True, prog_bar=name == "loss", batch_size=batch_size, sync_dist=True
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        terms = self.objective(batch, self.corruption_generator)
        self._log_terms("train", terms, batch_size(batch))
        return terms["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # The same corruption each epoch, so validation losses are comparable across epochs.
        generator = torch.Generator().manual_seed(self.config.train.seed + 10_000 + batch_idx)
        self._log_terms("val", self.objective(batch, generator), batch_size(batch))

    def configure_optimizers(self) -> Any:
        train = self.config.train
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        if train.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=train.lr, momentum=0.9, weight_decay=train.weight_decay)
        else:
            optimizer = optimizers[train.optimizer](self.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        if train.scheduler == "none":
            return optimizer
        if train.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.max_epochs)
        elif train.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=train.step_size, gamma=train.gamma)
        else:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=train.gamma, patience=2)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
