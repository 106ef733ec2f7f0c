"""Combining the two signals' p-values into one test statistic.

Fisher's method assumes independent p-values; reconstruction error and latent distance are
correlated, so the combined statistic is not trusted as chi-square. Instead its own
distribution is fitted on the same held-out normal images (see calibration.fit), which keeps
the false-positive rate honest whatever the dependence.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

CombineMethod = Literal["fisher", "min_p", "latent"]
# In order of preference on a tie: the one signal before the combination of two (simpler, and its graph need not
# run the decoder to decide).
AUTO_CANDIDATES: tuple[CombineMethod, ...] = ("latent", "fisher")
SMALLEST_P = 1e-300


def combination_statistic(pvalues: list[np.ndarray], method: CombineMethod) -> np.ndarray:
    """Larger means more anomalous: Fisher's -2 sum(log p), -log of Bonferroni's k * min(p), or for `latent`
    -log of the last p-value alone (callers pass [reconstruction, latent]): the decision then rests on the
    latent distance, and the reconstruction p-value is only reported."""
    stacked = np.clip(np.stack([np.asarray(p, dtype=np.float64) for p in pvalues]), SMALLEST_P, 1.0)
    if method == "fisher":
        return -2.0 * np.log(stacked).sum(axis=0)
    if method == "latent":
        return -np.log(stacked[-1])
    return -np.log(np.minimum(stacked.min(axis=0) * len(pvalues), 1.0))
