"""Metrics agree with scikit-learn, and AUPRO with a direct computation."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

from anomaly.evaluation.metrics import aupro, decision_metrics, pixel_metrics, ranking_metrics


def test_ranking_and_decision_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = labels * 0.8 + rng.normal(size=400)
    assert ranking_metrics(labels, scores) == {
        "auroc": pytest.approx(roc_auc_score(labels, scores)),
        "aupr": pytest.approx(average_precision_score(labels, scores)),
    }
    decisions = scores > 0.5
    ours = decision_metrics(labels, decisions)
    assert ours["precision"] == pytest.approx(precision_score(labels, decisions))
    assert ours["recall"] == pytest.approx(recall_score(labels, decisions))
    assert ours["f1"] == pytest.approx(f1_score(labels, decisions))
    assert ours["fpr"] == pytest.approx(np.mean(decisions[labels == 0]))
    assert np.isnan(ranking_metrics(np.zeros(5), np.arange(5.0))["auroc"])


def reference_aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float) -> float:
    """Direct definition: for every distinct threshold, PRO averaged over regions vs FPR."""
    labelled = [ndimage.label(mask) for mask in masks]
    regions = [(i, labels == r) for i, (labels, count) in enumerate(labelled) for r in range(1, count + 1)]
    normal = maps[~masks]
    points = []
    for threshold in np.unique(maps)[::-1]:
        fpr = np.mean(normal > threshold)
        pro = np.mean([np.mean(maps[i][region] > threshold) for i, region in regions])
        points.append((fpr, pro))
    points = [(0.0, 0.0), *points]
    fprs, pros = map(np.array, zip(*points))
    cut = np.searchsorted(fprs, max_fpr, side="right")
    pro_at_max = np.interp(max_fpr, fprs, pros)
    x = np.append(fprs[:cut], max_fpr)
    y = np.append(pros[:cut], pro_at_max)
    return float(np.trapezoid(y, x) / max_fpr)


def test_aupro_matches_direct_computation():
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 24, 24), dtype=bool)
    masks[0, 2:6, 2:6] = True
    masks[0, 15:22, 10:20] = True
    masks[1, 5:9, 12:14] = True
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    assert aupro(masks, maps, 0.3) == pytest.approx(reference_aupro(masks, maps, 0.3), abs=0.01)


def test_perfect_and_pixel_metrics():
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[0, 3:5, 3:5] = True
    perfect = masks.astype(float)
    assert aupro(masks, perfect) == pytest.approx(1.0, abs=0.01)
    noisy = perfect + np.random.default_rng(2).normal(scale=0.6, size=masks.shape)
    assert pixel_metrics(masks, noisy)["auroc"] == pytest.approx(roc_auc_score(masks.ravel(), noisy.ravel()))
