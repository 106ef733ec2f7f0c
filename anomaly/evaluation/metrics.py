"""Detection and segmentation metrics as the anomaly-detection literature reports them."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

AUPRO_MAX_FPR = 0.3
AUPRO_STEPS = 300


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC and AUPR (average precision); NaN when only one class is present."""
    if len(np.unique(labels)) < 2:
        return {"auroc": float("nan"), "aupr": float("nan")}
    return {"auroc": float(roc_auc_score(labels, scores)), "aupr": float(average_precision_score(labels, scores))}


def decision_metrics(labels: np.ndarray, decisions: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and the realised false-positive rate of hard decisions."""
    labels, decisions = labels.astype(bool), decisions.astype(bool)
    true_pos = np.count_nonzero(labels & decisions)
    false_pos = np.count_nonzero(~labels & decisions)
    precision = true_pos / max(np.count_nonzero(decisions), 1)
    recall = true_pos / max(np.count_nonzero(labels), 1)
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / max(precision + recall, 1e-12)),
        "fpr": float(false_pos / max(np.count_nonzero(~labels), 1)),
    }


def aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = AUPRO_MAX_FPR) -> float:
    """Area under the per-region-overlap curve up to `max_fpr`, normalised to [0, 1].

    Each connected defect region counts equally whatever its size (Bergmann et al., MVTec AD).
    The FPR axis is sampled evenly; at each FPR f the threshold is the lowest normal-pixel
    quantile whose realised FPR is at most f, so tied scores cannot collapse the axis.
    """
    normal_scores = np.sort(maps[~masks])
    regions: list[np.ndarray] = []
    for mask, score_map in zip(masks, maps):
        labelled, count = ndimage.label(mask)
        regions.extend(np.sort(score_map[labelled == region]) for region in range(1, count + 1))
    if not regions or normal_scores.size == 0:
        return float("nan")
    fprs = np.linspace(0.0, max_fpr, AUPRO_STEPS + 1)
    thresholds = np.quantile(normal_scores, 1.0 - fprs, method="higher")
    overlap = np.mean(
        [1.0 - np.searchsorted(region, thresholds, side="right") / region.size for region in regions], axis=0
    )
    return float(np.trapezoid(overlap, fprs) / max_fpr)


def pixel_metrics(masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    flat_masks = masks.ravel()
    if flat_masks.all() or not flat_masks.any():
        return {"auroc": float("nan"), "aupro": float("nan")}
    return {"auroc": float(roc_auc_score(flat_masks, maps.ravel())), "aupro": aupro(masks, maps)}
