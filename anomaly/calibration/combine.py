"""Combining the two signals' p-values into one test statistic.

Fisher's method assumes independent p-values; reconstruction error and latent distance are
correlated, so the combined statistic is not trusted as chi-square. Instead its own
distribution is fitted on the same held-out normal images (see calibration.fit), which keeps
the false-positive rate honest whatever the dependence.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

CombineMethod = Literal["fisher", "latent"]
# In order of preference on a tie: the one signal before the combination of two (simpler, and its graph need not
# run the decoder to decide).
AUTO_CANDIDATES: tuple[CombineMethod, ...] = ("latent", "fisher")
SMALLEST_P = 1e-300


def combination_statistic(reconstruction: np.ndarray | None, latent: np.ndarray, method: CombineMethod) -> np.ndarray:
    """Larger means more anomalous: Fisher's -2 (log p_reconstruction + log p_latent), or for `latent` -log p_latent
    alone: the decision then rests on the latent distance, and the exported graph need not compute the reconstruction
    at all (`reconstruction` may then be None)."""
    latent_log = np.log(np.clip(np.asarray(latent, dtype=np.float64), SMALLEST_P, 1.0))
    if method == "latent":
        return -latent_log
    if reconstruction is None:
        raise ValueError("Fisher's combination needs the reconstruction p-values")
    return -2.0 * (np.log(np.clip(np.asarray(reconstruction, dtype=np.float64), SMALLEST_P, 1.0)) + latent_log)
