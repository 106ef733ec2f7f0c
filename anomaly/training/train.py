"""Train one model from a Config and record it in MLflow."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from anomaly.config import PRETRAINED_FEATURE_LEVELS, Config
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.data.sizing import resolve_image_size
from anomaly.models.outputs import AutoencoderOutput
from anomaly.models.pretrained.backbones import PretrainedBackbone
from anomaly.training.feature_cache import CachedMapsDataModule
from anomaly.training.module import AutoencoderModule
from anomaly.training.tracking import (
    GRID_IMAGES,
    create_logger,
    log_run_artifacts,
    reconstruction_grid,
    resolve_tracking_uri,
    tag_run,
)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    tracking_uri: str
    checkpoint: Path
    best_val_loss: float
    epochs: int
    is_global_zero: bool = True


def build_trainer(
    config: Config, logger: L.pytorch.loggers.Logger, output_dir: Path
) -> tuple[L.Trainer, ModelCheckpoint]:
    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints", filename="best", monitor="val_loss", mode="min", save_last=True
    )
    callbacks: list[L.Callback] = [checkpoint]
    if config.train.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=config.train.early_stopping_patience))
    trainer_config = config.trainer
    trainer = L.Trainer(
        max_epochs=config.train.max_epochs,
        min_epochs=config.train.min_epochs,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=output_dir,
        **trainer_config.model_dump(),
    )
    return trainer, checkpoint


def pretrained_encoder(config: Config) -> PretrainedBackbone:
    """The pretrained encoder with its weights loaded strictly and their checksum checked (one-line error if not)."""
    model = config.model
    encoder = PretrainedBackbone(model.encoder, config.data.channels, max(PRETRAINED_FEATURE_LEVELS))
    encoder.load_pretrained(model.encoder_weights, model.encoder_weights_sha256)
    return encoder


def trains_on_cached_maps(config: Config) -> bool:
    """A frozen pretrained encoder's maps are computed once before training, unless augmentation changes the images
    every epoch."""
    return config.model.pretrained and not config.data.augment.enabled


@torch.no_grad()
def sample_reconstructions(module: AutoencoderModule, datamodule: AnomalyDataModule) -> torch.Tensor:
    batch = next(iter(datamodule.val_dataloader()))["image"][:GRID_IMAGES].to(module.device)
    module.eval()
    output = module(batch)
    target = None if output.target is None else output.target.cpu()
    return reconstruction_grid(batch.cpu(), AutoencoderOutput(output.reconstruction.cpu(), output.latent.cpu(), target))


def train(config: Config, run_id: str | None = None) -> TrainResult:
    """Fit on the normal training split; early-stop on validation normals; log everything to MLflow.

    Data is loaded and validated before the MLflow run opens, so bad input leaves no empty run.
    With `run_id` (an existing MLflow run, e.g. a pipeline step), training logs into that run and
    resumes from its last epoch checkpoint if one exists, so an interrupted run continues where it
    stopped instead of logging its epochs twice. `data.image_size: auto` is resolved here, so the
    run's params, the checkpoint and everything built from it hold the concrete size.
    """
    config = resolve_image_size(config)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    datamodule = AnomalyDataModule(config.data)
    datamodule.setup("fit")
    resuming = run_id is not None and (config.output_dir / run_id / "checkpoints" / "last.ckpt").is_file()
    # A resumed run's checkpoint holds the encoder's weights; otherwise they are read and checked before the run opens.
    encoder = pretrained_encoder(config) if config.model.pretrained and not resuming else None
    logger = create_logger(config, run_id)
    module = AutoencoderModule(
        config.model_dump(mode="json"), mlflow_run_id=logger.run_id, tracking_uri=resolve_tracking_uri(config)
    )
    # Only rank 0 has an MLflow run; Lightning broadcasts rank 0's checkpoint folder to the others.
    output_dir = config.output_dir / (logger.run_id or "rank-local")
    trainer, checkpoint = build_trainer(config, logger, output_dir)
    last = output_dir / "checkpoints" / "last.ckpt"
    if resuming:
        print(f"resuming training from its last epoch checkpoint {last}", file=sys.stderr, flush=True)
    if encoder is not None:
        module.model.backbone.load_state_dict(encoder.state_dict())
        tag_run(logger, {"encoder": config.model.encoder, "encoder.weights_sha256": encoder.weights_checksum()})
    elif config.model.pretrained:  # resuming: the checkpoint's encoder is the one the cached maps must come from
        saved = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
        module.model.backbone.load_state_dict(
            {
                key.removeprefix("model.backbone."): value
                for key, value in saved.items()
                if key.startswith("model.backbone.")
            }
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="feature-cache-", dir=output_dir) as cache:
        training_data = datamodule
        if trains_on_cached_maps(config):
            training_data = CachedMapsDataModule(
                module.model, datamodule.train_set, datamodule.val_set, config.data, Path(cache)
            )
        trainer.fit(module, datamodule=training_data, ckpt_path=last if resuming else None)
        del training_data  # its memory maps must close before the folder goes
    best = Path(checkpoint.best_model_path)
    if trainer.is_global_zero:
        best_module = AutoencoderModule.load_from_checkpoint(best, map_location="cpu")
        grid = sample_reconstructions(best_module, datamodule)
        log_run_artifacts(logger, config, datamodule.split_record(), grid, best)
        logger.experiment.log_metric(logger.run_id, "best_val_loss", float(checkpoint.best_model_score))
    return TrainResult(
        run_id=logger.run_id,
        tracking_uri=resolve_tracking_uri(config),
        checkpoint=best,
        best_val_loss=float(checkpoint.best_model_score),
        epochs=trainer.current_epoch,
        is_global_zero=trainer.is_global_zero,
    )
