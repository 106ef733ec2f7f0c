"""A score's distribution under normality: empirical body, generalised-Pareto upper tail.

Below the tail threshold u (by default the 90th percentile of the calibration scores),
p-values are empirical (conformal style, (1 + #{x >= s}) / (n + 1) at the calibration scores,
linearly interpolated between them so that p-values do not tie): where there is plenty of
data, the data decides. Above u, p-values come from a generalised Pareto distribution fitted
to the exceedances over u (peaks over threshold), joined continuously at u. A decision at 1%
then rests on the whole top 10% of the sample rather than on the dozen scores above the
empirical 99th percentile: on simulated samples the realised false-positive rate of the
threshold varies about 15-20% less (tests/test_calibration.py). It also gives a
score far beyond anything seen a graded, non-zero p-value. The shape is kept >= 0
(exponential or heavier tail): a few samples cannot support a finite upper end point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

MIN_TAIL_SAMPLES = 5
MIN_FIT_SAMPLES = 2 * MIN_TAIL_SAMPLES


@dataclass(frozen=True)
class TailFittedDistribution:
    sample: np.ndarray  # sorted calibration scores
    tail_threshold: float
    shape: float
    scale: float

    @classmethod
    def fit(cls, scores: np.ndarray, tail_fraction: float = 0.1) -> TailFittedDistribution:
        sample = np.sort(np.asarray(scores, dtype=np.float64).ravel())
        if len(sample) < MIN_FIT_SAMPLES:
            raise ValueError(f"need at least {MIN_FIT_SAMPLES} calibration scores, got {len(sample)}")
        tail_count = max(MIN_TAIL_SAMPLES, int(round(len(sample) * tail_fraction)))
        threshold = float(sample[-tail_count - 1])
        excess = sample[sample > threshold] - threshold
        shape, scale = _fit_generalised_pareto(excess)
        return cls(sample=sample, tail_threshold=threshold, shape=shape, scale=scale)

    @property
    def _sample_pvalues(self) -> np.ndarray:
        count = len(self.sample)
        at_or_above = count - np.searchsorted(self.sample, self.sample, side="left")
        return (1 + at_or_above) / (count + 1)

    @property
    def _pvalue_at_tail_threshold(self) -> float:
        """The empirical p-value where the fitted tail takes over."""
        return float(np.interp(self.tail_threshold, self.sample, self._sample_pvalues))

    def pvalue(self, scores: np.ndarray | float) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        empirical = np.interp(scores, self.sample, self._sample_pvalues, left=1.0)
        excess = np.maximum(scores - self.tail_threshold, 0.0)
        tail = self._pvalue_at_tail_threshold * stats.genpareto.sf(excess, self.shape, scale=self.scale)
        return np.where(scores > self.tail_threshold, tail, empirical)

    def score_at_pvalue(self, alpha: float) -> float:
        """The score whose p-value is alpha: the decision threshold at false-positive rate alpha."""
        at_threshold = self._pvalue_at_tail_threshold
        if alpha >= at_threshold:
            return float(np.interp(alpha, self._sample_pvalues[::-1], self.sample[::-1]))
        return float(self.tail_threshold + stats.genpareto.isf(alpha / at_threshold, self.shape, scale=self.scale))

    def to_dict(self) -> dict[str, object]:
        return {
            "sample": self.sample.tolist(),
            "tail_threshold": self.tail_threshold,
            "genpareto_shape": self.shape,
            "genpareto_scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TailFittedDistribution:
        return cls(
            sample=np.asarray(data["sample"], dtype=np.float64),
            tail_threshold=float(data["tail_threshold"]),
            shape=float(data["genpareto_shape"]),
            scale=float(data["genpareto_scale"]),
        )


def _fit_generalised_pareto(excess: np.ndarray) -> tuple[float, float]:
    mean_excess = float(excess.mean()) if excess.size else 0.0
    fallback = (0.0, max(mean_excess, 1e-12))  # exponential tail
    if excess.size < MIN_TAIL_SAMPLES or np.ptp(excess) <= 0:
        return fallback
    shape, _, scale = stats.genpareto.fit(excess, floc=0.0)
    if not np.isfinite(shape) or not np.isfinite(scale) or shape < 0 or scale <= 0:
        return fallback
    return float(shape), float(scale)
