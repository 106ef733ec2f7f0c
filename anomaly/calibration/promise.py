"""What a calibration of n normal images can promise at a target false-positive rate (NumPy and SciPy only).

A threshold placed at the k-th largest of n exchangeable calibration scores, k = floor((n + 1) * target), lets
through a share of new normal images that is itself random, Beta(k, n + 1 - k) distributed (conformal prediction's
conditional coverage, Vovk 2012; Bates et al. 2023): that is the range of realised rates the calibration supports.
With k = 0 no calibration score lies beyond the target and only the fitted tail places the threshold: the target is
below what the calibration can resolve.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, floor
from typing import Any

from scipy import stats

INTERVAL_LEVEL = 0.95


def binomial_interval(count: int, rate: float, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """The central `level` range of the share of `count` normal images flagged when each is flagged with probability
    `rate`: where a realised false-positive rate measured on `count` test normals should fall."""
    tail = (1 - level) / 2
    low, high = stats.binom.ppf([tail, 1 - tail], count, rate)
    return float(low) / count, float(high) / count


def normals_to_resolve(target_fpr: float) -> int:
    """The fewest calibration normals n that resolve `target_fpr`: floor((n + 1) * target) >= 1."""
    return ceil(1 / target_fpr) - 1


@dataclass(frozen=True)
class Promise:
    """The target, the calibration behind it, and the range of realised rates that calibration supports."""

    target_fpr: float
    calibration_normals: int
    holdout: str | None
    realised_rate_range: tuple[float, float] | None  # None: the target is below what the calibration can resolve

    @classmethod
    def of(cls, target_fpr: float, calibration_normals: int, holdout: str | None) -> Promise:
        rank = floor((calibration_normals + 1) * target_fpr)
        if rank < 1:
            return cls(target_fpr, calibration_normals, holdout, None)
        tail = (1 - INTERVAL_LEVEL) / 2
        low, high = stats.beta.ppf([tail, 1 - tail], rank, calibration_normals + 1 - rank)
        return cls(target_fpr, calibration_normals, holdout, (float(low), float(high)))

    @property
    def smallest_resolvable_target(self) -> float:
        return 1 / (self.calibration_normals + 1)

    @property
    def warning(self) -> str | None:
        """Why the target is not a promise, in one sentence; None when it is."""
        if self.realised_rate_range is not None:
            return None
        return (
            f"the {self.target_fpr:.2%} false-positive target is below what {self.calibration_normals} calibration "
            f"normal images can resolve (at least {self.smallest_resolvable_target:.2%}): its threshold is "
            "extrapolated past every calibration score, so the realised rate can be several times the target; add "
            "normal images (anomaly calibrate --normals DIR) or ask for a larger target"
        )

    def to_dict(self) -> dict[str, Any]:
        supported = self.realised_rate_range
        return {
            "target_fpr": self.target_fpr,
            "calibration_normals": self.calibration_normals,
            "holdout": self.holdout,
            "interval_level": INTERVAL_LEVEL,
            "realised_fpr_low": None if supported is None else supported[0],
            "realised_fpr_high": None if supported is None else supported[1],
            "smallest_resolvable_target": self.smallest_resolvable_target,
            "warning": self.warning,
        }


def promise_lines(promise: Promise, held_out: int | None, cross_fitted: int) -> list[str]:
    """The promise as model-card lines: how the normals were held out, how many the decision rests on (`held_out`
    held-out images, `cross_fitted` training images scored out of fold), the range they support."""
    lines = [
        f"- held out as: {promise.holdout or 'not recorded'}",
        f"- the decision's distribution rests on {promise.calibration_normals} normal images: {held_out} held out, "
        f"{cross_fitted} training images scored out of fold",
    ]
    if promise.realised_rate_range is None:
        return [*lines, f"- warning: {promise.warning}"]
    low, high = promise.realised_rate_range
    return [
        *lines,
        f"- at the target {promise.target_fpr:.2%}, new normal parts like these are flagged at a rate between "
        f"{low:.2%} and {high:.2%} (95%); targets below {promise.smallest_resolvable_target:.2%} cannot be resolved",
    ]
