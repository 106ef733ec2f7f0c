"""Choosing between candidate settings on the labelled validation set, without chasing its noise.

Every `auto` setting (the patch level, the line runs, the signals' combination) lists its candidates from the
simplest (cheapest, fewest parts) to the most elaborate. The validation set is a few dozen normals and their
synthetic anomalies, so two candidates' AUROCs differ by a few pairs of images from draw to draw: a simpler
candidate is kept unless another leads it by more than that noise, measured by a paired, stratified bootstrap of
the validation images (every candidate scored on the same resampled images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from scipy.stats import rankdata

Candidate = TypeVar("Candidate")

BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image AUROC by the Mann-Whitney U statistic (ties count half), as sklearn's roc_auc_score gives it."""
    positive = labels == 1
    positives, negatives = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _resampled_aurocs(labels: np.ndarray, scores: np.ndarray, resamples: np.ndarray) -> np.ndarray:
    """AUROC of `scores` on each row of `resamples` (indices into the images)."""
    return np.array([auroc(labels[rows], scores[rows]) for rows in resamples])


def stratified_resamples(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` bootstrap resamples (rows of image indices), each drawing normals from normals and anomalies from
    anomalies, so every resample keeps the validation set's balance and has both classes."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == value) for value in (0, 1)]
    return np.concatenate([rng.choice(group, size=(count, len(group))) for group in groups], axis=1)


@dataclass(frozen=True)
class Choice(Generic[Candidate]):
    """The chosen candidate, every candidate's validation AUROC, and the bootstrap interval of the best one's lead
    over the chosen one (both ends 0 when the best is chosen)."""

    chosen: Candidate
    aurocs: dict[Candidate, float]
    best: Candidate
    lead_interval: tuple[float, float]

    def record(self, name: str) -> dict[str, object]:
        """What the model card and calibration.json keep of the choice."""
        return {
            "setting": name,
            "chosen": self.chosen,
            "validation_auroc": {str(candidate): value for candidate, value in self.aurocs.items()},
            "best": self.best,
            "best_lead_interval": list(self.lead_interval),
            "rule": f"the first candidate not beaten beyond the {CONFIDENCE:.0%} paired bootstrap interval "
            f"({BOOTSTRAP_RESAMPLES} resamples of the validation images)",
        }


def choose_simplest(
    scores: dict[Candidate, np.ndarray], labels: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
) -> Choice[Candidate]:
    """The first candidate (in the order given: simplest first) whose validation AUROC the best candidate does not
    beat by more than noise: the lower end of the paired bootstrap interval of their AUROC difference is <= 0."""
    labels = np.asarray(labels)
    if len(set(labels.tolist())) != 2:
        raise ValueError("choosing on validation needs normal and anomalous images")
    aurocs = {candidate: auroc(labels, values) for candidate, values in scores.items()}
    best = max(aurocs, key=aurocs.__getitem__)  # the first of equals: the simplest
    rows = stratified_resamples(labels, resamples, seed)
    best_resampled = _resampled_aurocs(labels, scores[best], rows)
    tail = (1 - CONFIDENCE) / 2
    for candidate in scores:
        if candidate == best:
            return Choice(best, aurocs, best, (0.0, 0.0))
        lead = best_resampled - _resampled_aurocs(labels, scores[candidate], rows)
        low, high = (float(value) for value in np.quantile(lead, [tail, 1 - tail]))
        if low <= 0:
            return Choice(candidate, aurocs, best, (low, high))
    raise AssertionError("the best candidate is among the candidates")
