"""Combining the two signals' p-values into one test statistic.

Fisher's method assumes independent p-values; reconstruction error and latent distance are
correlated, so the combined statistic is not trusted as chi-square. Instead its own
distribution is fitted on the same held-out normal images (see calibration.fit), which keeps
the false-positive rate honest whatever the dependence.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

CombineMethod = Literal["latent", "reconstruction", "fisher"]
# What scoring.combine=auto chooses from, simplest first: one signal, then the other, then both. A later candidate
# must lead an earlier one by more than the validation set's noise (anomaly.calibration.choice).
AUTO_CANDIDATES: tuple[CombineMethod, ...] = ("latent", "reconstruction", "fisher")
SMALLEST_P = 1e-300


def _minus_log(pvalues: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(np.asarray(pvalues, dtype=np.float64), SMALLEST_P, 1.0))


def combination_statistic(reconstruction: np.ndarray, latent: np.ndarray, method: CombineMethod) -> np.ndarray:
    """Larger means more anomalous: -log p of one signal (latent, reconstruction), or Fisher's
    -2 (log p_reconstruction + log p_latent)."""
    if method == "latent":
        return _minus_log(latent)
    if method == "reconstruction":
        return _minus_log(reconstruction)
    return 2.0 * (_minus_log(reconstruction) + _minus_log(latent))
