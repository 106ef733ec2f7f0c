"""Fitting a Calibration from score arrays: NumPy only, so ONNX Runtime outputs can be
calibrated without torch (the int8 model is recalibrated this way)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from anomaly.calibration.artifact import Calibration, ScorePValues, signal_scores
from anomaly.calibration.combine import AUTO_CANDIDATES, CombineMethod, combination_statistic
from anomaly.calibration.distribution import TailFittedDistribution
from anomaly.calibration.scored import ScoredSet
from anomaly.errors import AnomalyError


def _pixel_sample(maps: np.ndarray, size: int, seed: int) -> np.ndarray:
    flat = maps.ravel()
    if flat.size <= size:
        return flat
    return flat[np.random.default_rng(seed).choice(flat.size, size=size, replace=False)]


def f1_optimal_score(labelled: ScoredSet, pvalues: ScorePValues) -> float:
    """The anomaly-score threshold with the best F1 on labelled validation data (never test data)."""
    precision, recall, thresholds = precision_recall_curve(labelled.labels, pvalues.anomaly_score)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))])


def _aurocs(labelled: ScoredSet, scores: dict[str, np.ndarray], selected: np.ndarray) -> dict[str, float]:
    """Image AUROC of each signal, and the heat map's pixel AUROC where masks exist, over `selected`."""
    auroc = {name: float(roc_auc_score(labelled.labels[selected], values[selected])) for name, values in scores.items()}
    masks = labelled.masks[selected]
    if masks.any():
        auroc["pixel"] = float(roc_auc_score(masks.ravel(), labelled.maps[selected].ravel()))
    return auroc


def validation_auroc(labelled: ScoredSet, pvalues: ScorePValues) -> dict[str, float]:
    """Image AUROC of each signal on the labelled validation set (normals and synthetic anomalies),
    and the heat map's pixel AUROC against the synthetic anomalies' masks when there are any.

    With several kinds of anomaly, also each kind against the normals ("synthetic_line.latent"):
    pooled pixels are mostly the large blobs', and thin lines are what real cracks look like."""
    scores = signal_scores(labelled, pvalues)
    auroc = _aurocs(labelled, scores, np.ones(len(labelled.labels), dtype=bool))
    categories = np.asarray(labelled.categories)
    kinds = sorted(set(categories[labelled.labels == 1]))
    if len(kinds) > 1:
        for kind in kinds:
            selected = (labelled.labels == 0) | (categories == kind)
            auroc.update({f"{kind}.{name}": value for name, value in _aurocs(labelled, scores, selected).items()})
    return auroc


def combination_aurocs(
    reconstruction: TailFittedDistribution, latent: TailFittedDistribution, labelled: ScoredSet
) -> dict[CombineMethod, float]:
    """Image AUROC on the labelled validation set of each combination that scoring.combine=auto chooses from."""
    pvalues = (reconstruction.pvalue(labelled.reconstruction_scores), latent.pvalue(labelled.latent_distances))
    return {method: float(roc_auc_score(labelled.labels, combination_statistic(*pvalues, method))) for method in AUTO_CANDIDATES}


AUROC_TIE = 1e-9  # AUROCs closer than this are equal: they differ only in how the sums were rounded


def best_on_validation(aurocs: dict[Any, float]) -> Any:
    """The candidate with the highest validation AUROC; on a tie (within AUROC_TIE) the earliest listed, so the
    order of the candidates, not float rounding, decides between equals."""
    best = max(aurocs.values())
    return next(candidate for candidate, value in aurocs.items() if value >= best - AUROC_TIE)


# Heat-map pixels sampled for the pixel distribution.
PIXEL_SAMPLE_SIZE = 20_000


def fit_calibration(
    held_out: ScoredSet,
    scoring: dict[str, Any],
    preprocessing: dict[str, Any],
    model_checksum: str,
    seed: int,
    labelled: ScoredSet | None = None,
    sample_sizes: dict[str, int] | None = None,
    kept_reconstruction: TailFittedDistribution | None = None,
) -> Calibration:
    """Fit each signal's distribution, the combination's, and the pixels', on held-out normals. Scores from a graph
    without the reconstruction (its decision reads the latent distance alone) keep `kept_reconstruction`, the float
    model's distribution, so the calibration file keeps one shape."""
    if held_out.reconstruction_scores is None:
        if kept_reconstruction is None or scoring["combine"] != "latent":
            raise AnomalyError("scores without the reconstruction score calibrate only a decision on the latent distance")
        reconstruction = kept_reconstruction
    else:
        reconstruction = TailFittedDistribution.fit(held_out.reconstruction_scores)
    latent = TailFittedDistribution.fit(held_out.latent_distances)
    candidates: dict[CombineMethod, float] = {}
    if scoring["combine"] == "auto":
        if labelled is None:
            raise AnomalyError("scoring.combine=auto needs a labelled validation set: set data.synthetic_validation=true")
        candidates = combination_aurocs(reconstruction, latent, labelled)
        scoring = {**scoring, "combine": best_on_validation(candidates)}
    held_out_reconstruction = None if held_out.reconstruction_scores is None else reconstruction.pvalue(held_out.reconstruction_scores)
    statistic = combination_statistic(held_out_reconstruction, latent.pvalue(held_out.latent_distances), scoring["combine"])
    pixels = _pixel_sample(held_out.maps, PIXEL_SAMPLE_SIZE, seed)
    calibration = Calibration(
        model_checksum=model_checksum,
        preprocessing=preprocessing,
        scoring=scoring,
        distributions={
            "reconstruction": reconstruction,
            "latent": latent,
            "combined": TailFittedDistribution.fit(statistic),
            "pixel": TailFittedDistribution.fit(pixels),
        },
        target_fpr=scoring["target_fpr"],
        sample_sizes={**(sample_sizes or {}), "calibration_images": len(held_out.labels), "calibration_pixels": int(pixels.size)},
    )
    if labelled is None:
        return calibration
    pvalues = calibration.pvalues(labelled.reconstruction_scores, labelled.latent_distances)
    auroc = {**validation_auroc(labelled, pvalues), **{f"combine_{method}": value for method, value in candidates.items()}}
    return replace(calibration, f1_optimal_score=f1_optimal_score(labelled, pvalues), validation_auroc=auroc)
