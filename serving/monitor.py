"""Is the calibration still honest on today's traffic? A sliding window of served p-values (NumPy and SciPy only).

Two tests over the last WINDOW images a worker scored, each as a p-value:
- the flagged share at the calibrated target against that target (one-sided binomial test): more normal parts are
  stopped than promised;
- uniformity of the normal-looking part of the traffic: under the calibration, a normal image's combined p-value is
  uniform on [0, 1], so the p-values of the images not flagged at the target, rescaled to [0, 1], are uniform too
  whatever share of flagged anomalies the traffic holds. A Kolmogorov-Smirnov test against the uniform catches a
  shift of the normal images (lighting, raw material, a moved camera) before it shows as flagged parts.
The alarm is raised when either test's p-value falls below ALARM_P, once the window holds MIN_IMAGES images. The tests
run after every request on the sliding window, so ALARM_P is strict, to keep repeated testing from raising false
alarms on calibrated traffic (how quickly a shift is caught: docs/serving.md).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy import stats

WINDOW = 200
MIN_IMAGES = 50
ALARM_P = 1e-4


@dataclass(frozen=True)
class MonitorState:
    """What /metrics exports and /model shows for one worker's window."""

    images: int
    flagged_share: float
    target_fpr: float
    flagged_test_p: float  # one-sided binomial test: flagged share above the target
    uniformity_test_p: float  # KS test: the normal-looking p-values are uniform
    alarm: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "window_images": self.images,
            "flagged_share": self.flagged_share,
            "target_fpr": self.target_fpr,
            "flagged_test_p": self.flagged_test_p,
            "uniformity_test_p": self.uniformity_test_p,
            "alarm": self.alarm,
            "window": WINDOW,
            "min_images": MIN_IMAGES,
            "alarm_p": ALARM_P,
        }


class PValueMonitor:
    """The last `window` combined p-values one worker served, and the tests over them."""

    def __init__(self, target_fpr: float, window: int = WINDOW) -> None:
        self.target_fpr = target_fpr
        self.pvalues: deque[float] = deque(maxlen=window)
        self.lock = threading.Lock()

    def observe(self, combined_pvalues: list[float]) -> MonitorState:
        with self.lock:
            self.pvalues.extend(float(p) for p in combined_pvalues)
            values = np.array(self.pvalues)
        return self.state_of(values)

    def state(self) -> MonitorState:
        with self.lock:
            values = np.array(self.pvalues)
        return self.state_of(values)

    def state_of(self, values: np.ndarray) -> MonitorState:
        count = len(values)
        flagged = int((values < self.target_fpr).sum())
        flagged_p = uniformity_p = 1.0
        if count >= MIN_IMAGES:
            flagged_p = float(stats.binomtest(flagged, count, self.target_fpr, alternative="greater").pvalue)
            normal_looking = values[values >= self.target_fpr]
            if len(normal_looking) >= MIN_IMAGES // 2:
                rescaled = (normal_looking - self.target_fpr) / (1 - self.target_fpr)
                uniformity_p = float(stats.kstest(rescaled, "uniform").pvalue)
            else:  # hardly any image looks normal any more: that is drift too
                uniformity_p = 0.0
        return MonitorState(
            count,
            flagged / count if count else 0.0,
            self.target_fpr,
            flagged_p,
            uniformity_p,
            min(flagged_p, uniformity_p) < ALARM_P,
        )
