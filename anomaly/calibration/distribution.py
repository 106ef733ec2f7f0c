"""A score's distribution under normality: empirical body, generalised-Pareto upper tail.

Up to the largest calibration score, p-values are empirical (conformal style,
(1 + #{x >= s}) / (n + 1) at the calibration scores, linearly interpolated between them so
that p-values do not tie): where there is data, the data decides. Beyond the largest score,
a generalised Pareto distribution fitted to the exceedances over the tail threshold u (by
default the 90th percentile) extrapolates, joined continuously at the maximum. So a score far
beyond anything seen still gets a graded, non-zero p-value. The shape is kept >= 0
(exponential or heavier tail): a few samples cannot support a finite upper end point.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    def maximum(self) -> float:
        return float(self.sample[-1])

    @property
    def _survival_at_maximum(self) -> float:
        """P(S > maximum | S > tail threshold) under the fitted tail: where it joins the data."""
        return float(stats.genpareto.sf(self.maximum - self.tail_threshold, self.shape, scale=self.scale))

    def _tail_survival(self, scores: np.ndarray | float) -> np.ndarray:
        """P(S > s | S > maximum) under the fitted tail."""
        return stats.genpareto.sf(np.asarray(scores) - self.tail_threshold, self.shape, scale=self.scale) / self._survival_at_maximum

    def pvalue(self, scores: np.ndarray | float) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        sample_pvalues = self._sample_pvalues
        empirical = np.interp(scores, self.sample, sample_pvalues, left=1.0)
        tail = sample_pvalues[-1] * self._tail_survival(np.maximum(scores, self.maximum))
        return np.where(scores > self.maximum, tail, empirical)

    def score_at_pvalue(self, alpha: float) -> float:
        """The score whose p-value is alpha: the decision threshold at false-positive rate alpha."""
        sample_pvalues = self._sample_pvalues
        if alpha >= sample_pvalues[-1]:
            return float(np.interp(alpha, sample_pvalues[::-1], self.sample[::-1]))
        survival = alpha / sample_pvalues[-1] * self._survival_at_maximum
        return float(self.tail_threshold + stats.genpareto.isf(survival, self.shape, scale=self.scale))

    def to_dict(self) -> dict[str, object]:
        return {
            "sample": self.sample.tolist(),
            "tail_threshold": self.tail_threshold,
            "genpareto_shape": self.shape,
            "genpareto_scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TailFittedDistribution:
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
