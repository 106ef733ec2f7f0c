"""Evaluate a calibrated detector on the labelled test set."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from anomaly.calibration.artifact import Calibration, signal_scores
from anomaly.calibration.promise import binomial_interval
from anomaly.calibration.scored import ScoredSet
from anomaly.evaluation.metrics import decision_metrics, pixel_metrics, ranking_metrics


def _clean(value: Any) -> Any:
    """JSON has no NaN: undefined metrics (one class only) become null."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# Targets at which the realised false-positive rate on the test normals is read: the calibration plot's points.
CALIBRATION_TARGETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def calibration_curve(
    calibration: Calibration, combined_pvalues: np.ndarray, labels: np.ndarray
) -> list[dict[str, Any]]:
    """At each target, the share of test normals flagged and the 95% binomial range that share should fall in for
    that many normals if the promise holds."""
    normal_pvalues = combined_pvalues[labels == 0]
    count = len(normal_pvalues)
    curve = []
    for target in CALIBRATION_TARGETS:
        flagged = int(calibration.is_anomaly_pvalue(normal_pvalues, target).sum())
        low, high = binomial_interval(count, target) if count else (math.nan, math.nan)
        curve.append(
            {
                "target_fpr": target,
                "flagged": flagged,
                "normals": count,
                "realised_fpr": flagged / count if count else math.nan,
                "interval_low": low,
                "interval_high": high,
            }
        )
    return curve


def evaluate_scored(calibration: Calibration, scored: ScoredSet) -> dict[str, Any]:
    pvalues = calibration.pvalues(scored.reconstruction_scores, scored.latent_distances)
    signals = signal_scores(scored, pvalues)
    image = {name: ranking_metrics(scored.labels, scores) for name, scores in signals.items()}
    decisions = calibration.is_anomaly(pvalues)
    at_target = decision_metrics(scored.labels, decisions)
    metrics: dict[str, Any] = {
        "image_auroc": image["combined"]["auroc"],
        "image_aupr": image["combined"]["aupr"],
        "target_fpr": calibration.target_fpr,
        "test_fpr": at_target["fpr"],
        "threshold": 1.0 - calibration.target_fpr,
        "counts": {"normal": int((scored.labels == 0).sum()), "anomalous": int((scored.labels == 1).sum())},
        "image": image,
        "at_target_fpr": at_target,
    }
    if calibration.f1_optimal_score is not None:
        metrics["at_f1_optimal_threshold"] = {
            "threshold": calibration.f1_optimal_score,
            **decision_metrics(scored.labels, pvalues.anomaly_score >= calibration.f1_optimal_score),
        }
    if scored.masks[scored.labels == 1].any():
        pixel = pixel_metrics(scored.masks, scored.maps)
        threshold = calibration.pixel_threshold()
        pixel_decisions = decision_metrics(scored.masks.ravel(), scored.maps.ravel() > threshold)
        metrics["pixel_auroc"] = pixel["auroc"]
        metrics["pixel_aupro"] = pixel["aupro"]
        metrics["pixel"] = {**pixel, "threshold": threshold, "at_target_fpr": pixel_decisions}
        signal_maps = {"latent": scored.latent_maps, "reconstruction": scored.reconstruction_maps}
        metrics["pixel_auroc_by_signal"] = {
            name: float(roc_auc_score(scored.masks.ravel(), maps.ravel()))
            for name, maps in signal_maps.items()
            if maps is not None
        }
    metrics["categories"] = category_breakdown(scored, signals["combined"], decisions)
    metrics["calibration_curve"] = calibration_curve(calibration, pvalues.combined, scored.labels)
    metrics["promise"] = calibration.promise().to_dict()
    return _clean(metrics)


def category_breakdown(scored: ScoredSet, scores: np.ndarray, decisions: np.ndarray) -> dict[str, Any]:
    """Per defect category: AUROC against all test normals, and recall at the target FPR."""
    categories = np.asarray(scored.categories)
    normal = scored.labels == 0
    breakdown = {}
    for category in sorted(set(categories[~normal])):
        chosen = normal | (categories == category)
        breakdown[category] = {
            "count": int((categories == category).sum()),
            "auroc": ranking_metrics(scored.labels[chosen], scores[chosen])["auroc"],
            "recall_at_target_fpr": float(decisions[categories == category].mean()),
        }
    return breakdown
