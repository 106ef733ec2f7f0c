"""Seeded split of the normal training images into train / validation / calibration.

The calibration hold-out is never trained on and never used for early stopping: the threshold
distribution is fitted on it, so its p-values are honest for unseen normal images. They are honest for a *new part*
only if the hold-out looks like one: on a line, neighbouring files in name order are usually photographs of the
same part or session, so a random hold-out leaves near-twins of every held-out image in training and its scores come
out lower than a new part's. The `blocks` scheme (the default) therefore holds out whole runs of consecutive files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from anomaly.errors import AnomalyError

MIN_NORMAL_IMAGES = 3
HOLDOUT_BLOCKS = 20  # runs of consecutive images the blocks scheme cuts the normals into: each a twentieth of them

HoldoutScheme = Literal["blocks", "random"]


@dataclass(frozen=True)
class HoldoutSplit:
    train: np.ndarray
    val: np.ndarray
    calibration: np.ndarray
    seed: int
    scheme: str

    def record(self, names: list[str]) -> dict[str, object]:
        """What gets logged to MLflow, so a run's calibration set can always be reconstructed."""
        return {
            "seed": self.seed,
            "scheme": self.scheme,
            **{part: [names[i] for i in getattr(self, part)] for part in ("train", "val", "calibration")},
        }


def contiguous_blocks(count: int, blocks: int) -> list[np.ndarray]:
    """range(count) cut into at most `blocks` runs of consecutive indices, as equal as can be."""
    return [block for block in np.array_split(np.arange(count), min(blocks, count)) if len(block)]


def holdout_order(count: int, scheme: HoldoutScheme, seed: int) -> np.ndarray:
    """The normals' indices in the order the hold-outs are taken from the front: a seeded permutation of single
    images (random) or of whole blocks of consecutive images (blocks)."""
    rng = np.random.default_rng(seed)
    if scheme == "random":
        return rng.permutation(count)
    blocks = contiguous_blocks(count, HOLDOUT_BLOCKS)
    return np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])


def split_normals(
    count: int, val_fraction: float, calibration_fraction: float, seed: int, scheme: HoldoutScheme = "blocks"
) -> HoldoutSplit:
    """Train, validation and calibration indices; calibration_fraction 0 when calibration normals come from elsewhere
    (a calibration folder)."""
    needed = MIN_NORMAL_IMAGES if calibration_fraction else MIN_NORMAL_IMAGES - 1
    if count < needed:
        raise AnomalyError(
            f"need at least {needed} normal training images (train, validation, calibration), found {count}"
        )
    order = holdout_order(count, scheme, seed)
    val_count = max(1, int(round(count * val_fraction)))
    calibration_count = max(1, int(round(count * calibration_fraction))) if calibration_fraction else 0
    return HoldoutSplit(
        train=np.sort(order[val_count + calibration_count :]),
        val=np.sort(order[:val_count]),
        calibration=np.sort(order[val_count : val_count + calibration_count]),
        seed=seed,
        scheme=scheme,
    )
