"""Seeded split of the normal training images into train / validation / calibration.

The calibration hold-out is never trained on and never used for early stopping: the threshold
distribution is fitted on it, so its p-values are honest for unseen normal images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomaly.errors import AnomalyError

MIN_NORMAL_IMAGES = 3


@dataclass(frozen=True)
class HoldoutSplit:
    train: np.ndarray
    val: np.ndarray
    calibration: np.ndarray
    seed: int

    def record(self, names: list[str]) -> dict[str, object]:
        """What gets logged to MLflow, so a run's calibration set can always be reconstructed."""
        return {
            "seed": self.seed,
            **{part: [names[i] for i in getattr(self, part)] for part in ("train", "val", "calibration")},
        }


def split_normals(count: int, val_fraction: float, calibration_fraction: float, seed: int) -> HoldoutSplit:
    if count < MIN_NORMAL_IMAGES:
        raise AnomalyError(
            f"need at least {MIN_NORMAL_IMAGES} normal training images (train, validation, calibration), found {count}"
        )
    order = np.random.default_rng(seed).permutation(count)
    val_count = max(1, int(round(count * val_fraction)))
    calibration_count = max(1, int(round(count * calibration_fraction)))
    return HoldoutSplit(
        train=np.sort(order[val_count + calibration_count :]),
        val=np.sort(order[:val_count]),
        calibration=np.sort(order[val_count : val_count + calibration_count]),
        seed=seed,
    )
