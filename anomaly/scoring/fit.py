"""Fit a detector's latent statistics and its calibration, on normal images only.

Latent statistics come from the training split (the codes the model was fitted on); the
score distributions come from the calibration split, which was neither trained on nor used
for early stopping. Test images are never touched here.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from anomaly.calibration.artifact import Calibration
from anomaly.calibration.distribution import MIN_FIT_SAMPLES
from anomaly.calibration.fit import best_on_validation, fit_calibration
from anomaly.calibration.scored import ScoredSet
from anomaly.config import Config
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.errors import AnomalyError
from anomaly.scoring.detector import AnomalyDetector, weights_checksum


def preprocessing_spec(config: Config) -> dict[str, Any]:
    """What a caller must do to an image before the detector sees it (kept outside the graph)."""
    return {
        "image_size": list(config.data.image_size),
        "channels": config.data.channels,
        "resize": "bilinear (Pillow)",
        "scale": "uint8 / 255 -> [0, 1]",
        "layout": "NCHW float32",
    }


@torch.no_grad()
def score_loader(detector: AnomalyDetector, loader: DataLoader) -> ScoredSet:
    detector.eval()
    batches = []
    for batch in loader:
        output = detector(batch["image"])
        batches.append(ScoredSet(
            reconstruction_scores=output.reconstruction_score.numpy(),
            latent_distances=output.latent_distance.numpy(),
            latents=output.latent.numpy(),
            maps=output.anomaly_map[:, 0].numpy(),
            labels=np.asarray(batch["label"]),
            masks=batch["mask"][:, 0].numpy() > 0.5,
            categories=list(batch["category"]),
            names=list(batch["name"]),
        ))
    return ScoredSet.concatenate(batches)


@torch.no_grad()
def training_latents(detector: AnomalyDetector, loader: DataLoader, folder: Path) -> np.ndarray:
    """What the latent distance is fitted on, for every training image. Patch features are written batch by batch
    into a float32 file in `folder`, memory-mapped: 2,000 images at 640 x 256 are several GB of features, which the
    fit then reads position by position instead of holding at once."""
    detector.eval()
    if detector.patches is None:
        return np.concatenate([detector.measured_features(batch["image"]).numpy() for batch in loader])
    features: np.ndarray | None = None
    start = 0
    for batch in loader:
        part = detector.measured_features(batch["image"]).numpy()
        if features is None:
            shape = (len(loader.dataset), *part.shape[1:])
            features = np.lib.format.open_memmap(folder / "training_features.npy", mode="w+", dtype=np.float32, shape=shape)
        features[start : start + len(part)] = part
        start += len(part)
    if features is None:
        raise AnomalyError("no training images to fit the latent distance on")
    features.flush()
    return features


def fit_detector(detector: AnomalyDetector, datamodule: AnomalyDataModule) -> Calibration:
    """Fit latent statistics on the training split, then calibrate on the calibration split."""
    config = detector.config
    if len(datamodule.calibration_set) < MIN_FIT_SAMPLES:
        raise AnomalyError(
            f"calibration needs at least {MIN_FIT_SAMPLES} held-out normal images, got {len(datamodule.calibration_set)}: "
            "add normal training images or raise data.calibration_fraction"
        )
    with tempfile.TemporaryDirectory(prefix="anomaly-fit-") as folder:
        codes = training_latents(detector, datamodule.train_dataloader_for_fitting(), Path(folder))
        detector.latent_distance.fit(codes)
        fitted_images = len(codes)
        del codes  # the memory map must close before its folder goes
    labelled_loader = datamodule.labelled_val_dataloader()
    return fit_calibration(
        held_out=score_loader(detector, datamodule.calibration_dataloader()),
        scoring=config.scoring.model_dump(mode="json"),
        preprocessing=preprocessing_spec(config),
        model_checksum=weights_checksum(detector),
        seed=config.data.split_seed,
        labelled=None if labelled_loader is None else score_loader(detector, labelled_loader),
        sample_sizes={"latent_fit_images": fitted_images},
    )


def fit_chosen_detector(config: Config, model: nn.Module, datamodule: AnomalyDataModule) -> tuple[AnomalyDetector, Calibration]:
    """A detector for `model`, fitted and calibrated, with every auto choice resolved. With scoring.latent.level=auto,
    one per candidate level; the one whose combined image score ranks the labelled validation set best is kept, and
    its calibration records every candidate's AUROC (validation_auroc["patch_level_L"]). The choices end up once in
    the detector's config, which calibration.json and the model card then copy."""
    patches = config.scoring.patches
    levels = config.model.auto_patch_levels if patches is not None and patches.level == "auto" else (None,)
    fitted: dict[int | None, tuple[AnomalyDetector, Calibration]] = {}
    for level in levels:
        detector = AnomalyDetector(config.model_copy(update={"scoring": config.scoring.resolved(level=level)}), model)
        fitted[level] = (detector, fit_detector(detector, datamodule))
    detector, calibration = next(iter(fitted.values()))
    if len(fitted) > 1:
        aurocs = {level: calibration.validation_auroc["combined"] for level, (_, calibration) in fitted.items()}
        detector, calibration = fitted[best_on_validation(aurocs)]
        recorded = {**calibration.validation_auroc, **{f"patch_level_{level}": value for level, value in aurocs.items()}}
        calibration = replace(calibration, validation_auroc=recorded)
    scoring = detector.config.scoring.resolved(combine=calibration.combine_method)
    detector.config = detector.config.model_copy(update={"scoring": scoring})
    return detector, replace(calibration, scoring=scoring.model_dump(mode="json"))
