"""Fit a detector's latent statistics and its calibration, on normal images only.

Latent statistics come from the training split (the codes the model was fitted on); the
score distributions come from the calibration split, which was neither trained on nor used
for early stopping, and the latent distribution also from the training split's out-of-fold
distances (cross-fitting). Test images are never touched here.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from anomaly.calibration.artifact import Calibration
from anomaly.calibration.choice import choose_simplest
from anomaly.calibration.distribution import MIN_FIT_SAMPLES
from anomaly.calibration.fit import choose_combination, fit_calibration
from anomaly.calibration.scored import ScoredSet
from anomaly.config import Config
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.data.splits import contiguous_blocks
from anomaly.errors import AnomalyError
from anomaly.progress import progress
from anomaly.scoring.detector import AnomalyDetector, weights_checksum
from anomaly.scoring.latent import PatchNearestNeighbourDistance


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
def score_loader(
    detector: AnomalyDetector, loader: DataLoader, signal_maps: bool = False, description: str | None = None
) -> ScoredSet:
    """The detector's outputs over `loader`; with `signal_maps`, each signal's map too (what calibration mixes the
    heat map from). With a `description`, a progress bar on stderr."""
    detector.eval()
    batches = []
    for batch in progress(loader, description):
        output = detector(batch["image"])
        latent_maps = None if output.latent_map is None or not signal_maps else output.latent_map[:, 0].numpy()
        patch_maps = None if output.patch_map is None or not signal_maps else output.patch_map[:, 0].numpy()
        batches.append(
            ScoredSet(
                reconstruction_scores=output.reconstruction_score.numpy(),
                latent_distances=output.latent_distance.numpy(),
                latents=output.latent.numpy(),
                maps=output.anomaly_map[:, 0].numpy(),
                labels=np.asarray(batch["label"]),
                masks=batch["mask"][:, 0].numpy() > 0.5,
                categories=list(batch["category"]),
                names=list(batch["name"]),
                latent_maps=latent_maps,
                reconstruction_maps=output.reconstruction_map[:, 0].numpy() if signal_maps else None,
                patch_maps=patch_maps,
            )
        )
    return ScoredSet.concatenate(batches)


@torch.no_grad()
def training_latents(
    detector: AnomalyDetector, loader: DataLoader, folder: Path, description: str | None = None
) -> np.ndarray:
    """What the latent distance is fitted on, for every training image. Patch features are written batch by batch
    into a float32 file in `folder`, memory-mapped: 2,000 images at 640 x 256 are several GB of features, which the
    fit then reads position by position instead of holding at once."""
    detector.eval()
    if detector.patches is None:
        return np.concatenate(
            [detector.measured_features(batch["image"]).numpy() for batch in progress(loader, description)]
        )
    features: np.ndarray | None = None
    start = 0
    for batch in progress(loader, description):
        part = detector.measured_features(batch["image"]).numpy()
        if features is None:
            shape = (len(loader.dataset), *part.shape[1:])
            features = np.lib.format.open_memmap(
                folder / "training_features.npy", mode="w+", dtype=np.float32, shape=shape
            )
        features[start : start + len(part)] = part
        start += len(part)
    if features is None:
        raise AnomalyError("no training images to fit the latent distance on")
    features.flush()
    return features


MAP_SCALE_PIXELS = 100_000  # held-out heat-map pixels sampled for each map's spread


def map_scales(held_out: ScoredSet, seed: int) -> tuple[float, float]:
    """The spread (standard deviation) of each signal's map over held-out normal pixels, latent first (1 where the
    model has no latent map): the units in which the heat map adds them."""
    rng = np.random.default_rng(seed)

    def spread(maps: np.ndarray | None) -> float:
        if maps is None:
            return 1.0
        flat = maps.ravel()
        return float(flat[rng.choice(flat.size, size=min(flat.size, MAP_SCALE_PIXELS), replace=False)].std())

    return spread(held_out.latent_maps), spread(held_out.reconstruction_maps)


@dataclass
class FittedDetector:
    """A detector fitted and calibrated for one candidate setting, with its scores on the held-out normals (heat maps
    mixed) and on the labelled validation set."""

    detector: AnomalyDetector
    calibration: Calibration
    labelled: ScoredSet | None
    held_out: ScoredSet
    training_features: np.ndarray  # what the latent distance was fitted on (training_latents), for cross-fitting

    def validation_statistic(self) -> np.ndarray:
        """The combined statistic on the labelled validation set: what candidate settings are compared by."""
        return self.calibration.pvalues(self.labelled.reconstruction_scores, self.labelled.latent_distances).statistic


def level_label(detector: AnomalyDetector) -> str:
    """The patch level as a progress bar's name gives it, or nothing for the whole image's code."""
    return f" (patch level {detector.patches.level})" if detector.patches else ""


def fit_latent(detector: AnomalyDetector, datamodule: AnomalyDataModule, folder: Path) -> np.ndarray:
    """Fit the latent distance on the training split; return the training features it was fitted on (memory-mapped
    in `folder`), which cross-fitting reads again."""
    if len(datamodule.calibration_set) < MIN_FIT_SAMPLES:
        raise AnomalyError(
            f"calibration needs at least {MIN_FIT_SAMPLES} held-out normal images, got "
            f"{len(datamodule.calibration_set)}: add normal training images or raise data.calibration_fraction"
        )
    folder.mkdir(parents=True, exist_ok=True)
    features = training_latents(
        detector, datamodule.train_dataloader_for_fitting(), folder, f"training features{level_label(detector)}"
    )
    detector.latent_distance.fit(features)
    return features


@dataclass
class HeldOutScores:
    """A fitted detector's scores on the held-out normals and on the labelled validation set (None without one),
    with each signal's maps, as calibration reads them."""

    held_out: ScoredSet
    labelled: ScoredSet | None

    @classmethod
    def of(cls, detector: AnomalyDetector, datamodule: AnomalyDataModule) -> HeldOutScores:
        level = level_label(detector)
        held_out = score_loader(
            detector, datamodule.calibration_dataloader(), signal_maps=True, description=f"held-out normals{level}"
        )
        loader = datamodule.labelled_val_dataloader()
        return cls(held_out, None if loader is None else score_loader(detector, loader, True, f"validation{level}"))

    def with_line_run(self, image_distance: nn.Module) -> HeldOutScores:
        """The same scores with the latent distance read from the kept patch maps by another `image_distance`."""

        def rescored(scored: ScoredSet | None) -> ScoredSet | None:
            if scored is None:
                return None
            with torch.no_grad():
                distances = image_distance(torch.from_numpy(scored.patch_maps)[:, None]).numpy()
            return replace(scored, latent_distances=distances)

        return HeldOutScores(rescored(self.held_out), rescored(self.labelled))


def calibrate_fitted(detector: AnomalyDetector, scores: HeldOutScores, features: np.ndarray) -> FittedDetector:
    """Choose the combination (scoring.combine=auto) on the labelled validation set, mix the heat map to match it,
    then calibrate on the held-out normals. `features`: the training features the latent distance was fitted on."""
    config = detector.config
    held_out, labelled = scores.held_out, scores.labelled
    combine, choices = config.scoring.combine, []
    if combine == "auto":
        choice = choose_combination(held_out, labelled, config.data.split_seed)
        combine = choice.chosen
        choices.append(choice.record("scoring.combine"))
    detector.mix_maps(combine, map_scales(held_out, config.data.split_seed))
    weights = tuple(float(weight) for weight in detector.map_weights)
    held_out = held_out.with_mixed_maps(weights)
    labelled = None if labelled is None else labelled.with_mixed_maps(weights)
    scoring = config.scoring.resolved(combine=combine)
    detector.config = config.model_copy(update={"scoring": scoring})
    calibration = fit_calibration(
        held_out=held_out,
        scoring=scoring.model_dump(mode="json"),
        preprocessing=preprocessing_spec(config),
        model_checksum=weights_checksum(detector),
        seed=config.data.split_seed,
        labelled=labelled,
        sample_sizes={"latent_fit_images": len(features)},
        choices=choices,
    )
    return FittedDetector(detector, calibration, labelled, held_out, features)


def chosen_among(candidates: dict[Any, FittedDetector], setting: str, seed: int) -> FittedDetector:
    """The candidate that the choice rule keeps (anomaly.calibration.choice), its choice recorded first in its
    calibration and each candidate's AUROC in validation_auroc as `<setting's last part>_<candidate>`."""
    fitted = next(iter(candidates.values()))
    if len(candidates) == 1:
        return fitted
    choice = choose_simplest(
        {name: candidate.validation_statistic() for name, candidate in candidates.items()}, fitted.labelled.labels, seed
    )
    fitted = candidates[choice.chosen]
    chosen = fitted.calibration
    prefix = {"scoring.latent.level": "patch_level", "scoring.latent.line_length": "line_length"}[setting]
    auroc = {**chosen.validation_auroc, **{f"{prefix}_{name}": value for name, value in choice.aurocs.items()}}
    fitted.calibration = replace(chosen, validation_auroc=auroc, choices=[choice.record(setting), *chosen.choices])
    return fitted


def fit_level(
    config: Config, model: nn.Module, datamodule: AnomalyDataModule, level: int | None, folder: Path
) -> FittedDetector:
    """A detector at one patch level (None: the configured latent distance), fitted once on training features kept in
    `folder`; with scoring.latent.line_length=auto, each line-run candidate reads the image's distance from the same
    patch maps."""
    patches = config.scoring.patches
    runs = patches.line_runs if patches is not None else (None,)
    first = AnomalyDetector(
        config.model_copy(update={"scoring": config.scoring.resolved(level=level, line_run=runs[0])}), model
    )
    features = fit_latent(first, datamodule, folder)
    scores = HeldOutScores.of(first, datamodule)
    fitted = copy.deepcopy(first.latent_distance)  # before calibration touches `first`
    candidates = {}
    for run in runs:
        detector = first
        if run != runs[0]:
            detector = AnomalyDetector(
                config.model_copy(update={"scoring": config.scoring.resolved(level=level, line_run=run)}), model
            )
            line_run = detector.latent_distance.image_distance
            detector.latent_distance = copy.deepcopy(fitted)  # the same bank and statistics, whatever their size
            detector.latent_distance.image_distance = line_run
        run_scores = scores if run == runs[0] else scores.with_line_run(detector.latent_distance.image_distance)
        candidates[run[0] if run else None] = calibrate_fitted(detector, run_scores, features)
    return chosen_among(candidates, "scoring.latent.line_length", config.data.split_seed)


def fold_without(features: np.ndarray, fold: np.ndarray) -> list[np.ndarray]:
    """The training features outside one run of consecutive images, as the (at most two) chunks around it."""
    return [part for part in (features[: fold[0]], features[fold[-1] + 1 :]) if len(part)]


@torch.no_grad()
def cross_fitted_distances(detector: AnomalyDetector, features: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each training image's latent distance from a copy of the detector's latent distance fitted without the run of
    consecutive images (fold) it belongs to: an honest score for every training normal, as a new part would get."""
    distances = []
    for fold in progress(contiguous_blocks(len(features), folds), f"cross-fitted latent distances ({folds} folds)"):
        distance = copy.deepcopy(detector.latent_distance)
        if isinstance(distance, PatchNearestNeighbourDistance):
            distance.fit_chunks(fold_without(features, fold), seed)
        else:
            distance.fit(np.concatenate(fold_without(features, fold)))
        for start in range(fold[0], fold[-1] + 1, CROSS_FIT_BATCH):
            batch = np.asarray(features[start : min(start + CROSS_FIT_BATCH, fold[-1] + 1)], dtype=np.float32)
            distances.append(distance(torch.from_numpy(batch)).numpy())
    return np.concatenate(distances)


CROSS_FIT_BATCH = 16  # training images scored at once by a fold's latent distance


def with_cross_fitted_latent(fitted: FittedDetector) -> FittedDetector:
    """The fitted detector recalibrated with the out-of-fold latent distances of its training normals (read from the
    features it was fitted on) added to the latent (and, for combine=latent, the combined) distribution
    (data.cross_fit_folds)."""
    detector, calibration = fitted.detector, fitted.calibration
    config = detector.config
    folds = config.data.cross_fit_folds
    if not folds or len(fitted.training_features) < 2 * folds:
        return fitted
    distances = cross_fitted_distances(detector, fitted.training_features, folds, seed=0)
    recalibrated = fit_calibration(
        held_out=fitted.held_out,
        scoring=calibration.scoring,
        preprocessing=calibration.preprocessing,
        model_checksum=calibration.model_checksum,
        seed=config.data.split_seed,
        labelled=fitted.labelled,
        sample_sizes={**calibration.sample_sizes, "cross_fit_folds": folds},
        choices=calibration.choices,
        cross_fitted_latent=distances,
    )
    auroc = (
        None
        if calibration.validation_auroc is None
        else {**calibration.validation_auroc, **recalibrated.validation_auroc}
    )
    return replace(fitted, calibration=replace(recalibrated, validation_auroc=auroc))


def fit_chosen_detector(
    config: Config, model: nn.Module, datamodule: AnomalyDataModule
) -> tuple[AnomalyDetector, Calibration]:
    """A detector for `model`, fitted and calibrated, with every auto choice resolved. With scoring.latent.level=auto,
    one per candidate level (cheapest first); within a level, the line-run candidates; within each, the combination.
    Each choice keeps a simpler candidate unless another ranks the labelled validation set better by more than noise
    (anomaly.calibration.choice). The choices end up once in the detector's config, which calibration.json and the
    model card then copy, and in the calibration's record."""
    patches = config.scoring.patches
    levels = config.model.auto_patch_levels if patches is not None and patches.level == "auto" else (None,)
    # Each level's training features stay on disk until the choice, so the chosen one's are cross-fitted without
    # running the encoder over the training images again.
    with tempfile.TemporaryDirectory(prefix="anomaly-fit-") as scratch:
        candidates = {
            level: fit_level(config, model, datamodule, level, Path(scratch) / f"level-{level}") for level in levels
        }
        chosen = chosen_among(candidates, "scoring.latent.level", config.data.split_seed)
        fitted = with_cross_fitted_latent(chosen)
        detector, calibration = fitted.detector, replace(fitted.calibration, holdout=datamodule.holdout_description)
        del candidates, chosen, fitted  # the memory maps close before their folder goes
    return detector, calibration
