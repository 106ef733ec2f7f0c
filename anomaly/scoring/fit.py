"""Fit a detector's latent statistics and its calibration, on normal images only.

Latent statistics come from the training split (the codes the model was fitted on); the
score distributions come from the calibration split, which was neither trained on nor used
for early stopping. Test images are never touched here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import precision_recall_curve
from torch.utils.data import DataLoader

from anomaly.calibration.artifact import Calibration
from anomaly.calibration.combine import combination_statistic
from anomaly.calibration.distribution import MIN_FIT_SAMPLES, TailFittedDistribution
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.errors import AnomalyError
from anomaly.scoring.detector import AnomalyDetector, weights_checksum


@dataclass
class ScoredSet:
    """Detector outputs over a loader, as NumPy arrays."""

    reconstruction_scores: np.ndarray
    latent_distances: np.ndarray
    latents: np.ndarray
    maps: np.ndarray  # (N, H, W)
    labels: np.ndarray
    masks: np.ndarray  # (N, H, W) bool
    categories: list[str]
    names: list[str]


@torch.no_grad()
def score_loader(detector: AnomalyDetector, loader: DataLoader) -> ScoredSet:
    detector.eval()
    parts: dict[str, list] = {key: [] for key in ("rec", "lat_d", "lat", "maps", "labels", "masks", "cats", "names")}
    for batch in loader:
        output = detector(batch["image"])
        parts["rec"].append(output.reconstruction_score.numpy())
        parts["lat_d"].append(output.latent_distance.numpy())
        parts["lat"].append(output.latent.numpy())
        parts["maps"].append(output.anomaly_map[:, 0].numpy())
        parts["labels"].append(np.asarray(batch["label"]))
        parts["masks"].append(batch["mask"][:, 0].numpy() > 0.5)
        parts["cats"].extend(batch["category"])
        parts["names"].extend(batch["name"])
    return ScoredSet(
        reconstruction_scores=np.concatenate(parts["rec"]),
        latent_distances=np.concatenate(parts["lat_d"]),
        latents=np.concatenate(parts["lat"]),
        maps=np.concatenate(parts["maps"]),
        labels=np.concatenate(parts["labels"]),
        masks=np.concatenate(parts["masks"]),
        categories=parts["cats"],
        names=parts["names"],
    )


@torch.no_grad()
def training_latents(detector: AnomalyDetector, loader: DataLoader) -> np.ndarray:
    detector.eval()
    return np.concatenate([detector.model(batch["image"]).latent.numpy() for batch in loader])


def _pixel_sample(maps: np.ndarray, size: int, seed: int) -> np.ndarray:
    flat = maps.ravel()
    if flat.size <= size:
        return flat
    return flat[np.random.default_rng(seed).choice(flat.size, size=size, replace=False)]


def f1_optimal_score(calibration: Calibration, labelled: ScoredSet) -> float:
    """The anomaly-score threshold with the best F1 on labelled validation data (never test data)."""
    scores = calibration.pvalues(labelled.reconstruction_scores, labelled.latent_distances).anomaly_score
    precision, recall, thresholds = precision_recall_curve(labelled.labels, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))])


def fit_detector(detector: AnomalyDetector, datamodule: AnomalyDataModule) -> Calibration:
    """Fit latent statistics on the training split, then calibrate on the calibration split."""
    config = detector.config
    scoring = config.scoring
    if len(datamodule.calibration_set) < MIN_FIT_SAMPLES:
        raise AnomalyError(
            f"calibration needs at least {MIN_FIT_SAMPLES} held-out normal images, got {len(datamodule.calibration_set)}: "
            "add normal training images or raise data.calibration_fraction"
        )
    codes = training_latents(detector, datamodule.train_dataloader_for_fitting())
    detector.latent_distance.fit(codes)
    held_out = score_loader(detector, datamodule.calibration_dataloader())
    reconstruction = TailFittedDistribution.fit(held_out.reconstruction_scores, scoring.tail_fraction)
    latent = TailFittedDistribution.fit(held_out.latent_distances, scoring.tail_fraction)
    statistic = combination_statistic(
        [reconstruction.pvalue(held_out.reconstruction_scores), latent.pvalue(held_out.latent_distances)],
        scoring.combine,
    )
    pixels = _pixel_sample(held_out.maps, scoring.pixel_sample_size, config.data.split_seed)
    calibration = Calibration(
        model_checksum=weights_checksum(detector),
        preprocessing={
            "image_size": list(config.data.image_size),
            "channels": config.data.channels,
            "resize": "bilinear",
            "scale": "uint8 / 255 -> [0, 1]",
            "layout": "NCHW float32",
        },
        scoring=scoring.model_dump(mode="json"),
        distributions={
            "reconstruction": reconstruction,
            "latent": latent,
            "combined": TailFittedDistribution.fit(statistic, scoring.tail_fraction),
            "pixel": TailFittedDistribution.fit(pixels, scoring.tail_fraction),
        },
        target_fpr=scoring.target_fpr,
        sample_sizes={
            "latent_fit_images": len(codes),
            "calibration_images": len(held_out.labels),
            "calibration_pixels": int(pixels.size),
        },
    )
    labelled_loader = datamodule.labelled_val_dataloader()
    if labelled_loader is None:
        return calibration
    return Calibration(**{**calibration.__dict__, "f1_optimal_score": f1_optimal_score(calibration, score_loader(detector, labelled_loader))})
