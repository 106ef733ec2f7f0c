"""Fitting a Calibration from score arrays: NumPy only, so ONNX Runtime outputs can be
calibrated without torch (the int8 model is recalibrated this way)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from anomaly.calibration.artifact import Calibration, ScorePValues, signal_scores
from anomaly.calibration.choice import Choice, choose_simplest
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


def combination_statistics(held_out: ScoredSet, labelled: ScoredSet) -> dict[CombineMethod, np.ndarray]:
    """Each candidate combination's statistic on the labelled validation set, the signals' p-values read from their
    distributions on the held-out normals: what scoring.combine=auto chooses by."""
    reconstruction = TailFittedDistribution.fit(held_out.reconstruction_scores)
    latent = TailFittedDistribution.fit(held_out.latent_distances)
    pvalues = (reconstruction.pvalue(labelled.reconstruction_scores), latent.pvalue(labelled.latent_distances))
    return {method: combination_statistic(*pvalues, method) for method in AUTO_CANDIDATES}


def choose_combination(held_out: ScoredSet, labelled: ScoredSet, seed: int) -> Choice[CombineMethod]:
    """scoring.combine=auto: the simplest combination that no other beats on validation by more than noise."""
    return choose_simplest(combination_statistics(held_out, labelled), labelled.labels, seed)


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
    choices: list[dict[str, Any]] | None = None,
    cross_fitted_latent: np.ndarray | None = None,
) -> Calibration:
    """Fit each signal's distribution, the combination's, and the heat map pixels', on held-out normals. `scoring`
    has its choices made (combine is not auto); `choices` records how (Choice.record), for the model card.
    `cross_fitted_latent`: the training normals' out-of-fold latent distances, added to the latent distribution and,
    when the decision reads the latent distance alone, to the combined one (a fisher combination needs both signals of
    one image, and only the hold-out has an honest reconstruction error)."""
    if scoring["combine"] == "auto":
        raise AnomalyError("scoring.combine=auto is chosen before calibration (anomaly.scoring.fit)")
    extra = np.zeros(0) if cross_fitted_latent is None else np.asarray(cross_fitted_latent, dtype=np.float64)
    latent_scores = np.concatenate([held_out.latent_distances, extra])
    reconstruction = TailFittedDistribution.fit(held_out.reconstruction_scores)
    latent = TailFittedDistribution.fit(latent_scores)
    if scoring["combine"] == "latent":  # the reconstruction's p-value is not read: every honest latent score counts
        statistic = combination_statistic(np.ones_like(latent_scores), latent.pvalue(latent_scores), "latent")
    else:
        statistic = combination_statistic(
            reconstruction.pvalue(held_out.reconstruction_scores),
            latent.pvalue(held_out.latent_distances),
            scoring["combine"],
        )
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
        sample_sizes={
            **(sample_sizes or {}),
            "calibration_images": len(held_out.labels),
            "cross_fitted_images": len(extra),
            "calibration_pixels": int(pixels.size),
        },
        choices=choices or [],
    )
    if labelled is None:
        return calibration
    pvalues = calibration.pvalues(labelled.reconstruction_scores, labelled.latent_distances)
    return replace(
        calibration,
        f1_optimal_score=f1_optimal_score(labelled, pvalues),
        validation_auroc=validation_auroc(labelled, pvalues),
    )
