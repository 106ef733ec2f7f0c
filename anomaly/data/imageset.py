"""An in-memory set of decoded images: what every data source produces.

Decoding everything up front validates every file before training starts (a corrupt image
fails at once, naming the file) and keeps the 2-core training loop free of JPEG decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMAL_CATEGORY = "good"


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,): 0 normal, 1 anomalous
    categories: list[str]  # per image: "good" or the defect type
    names: list[str]  # per image: file path or a stable identifier
    masks: np.ndarray | None = None  # bool (N, H, W) where pixel masks exist

    def __post_init__(self) -> None:
        count = len(self.images)
        if not (len(self.labels) == len(self.categories) == len(self.names) == count):
            raise ValueError("ImageSet fields must have one entry per image")
        if self.masks is not None and len(self.masks) != count:
            raise ValueError("ImageSet masks must have one entry per image")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> ImageSet:
        return ImageSet(
            images=self.images[indices],
            labels=self.labels[indices],
            categories=[self.categories[i] for i in indices],
            names=[self.names[i] for i in indices],
            masks=None if self.masks is None else self.masks[indices],
        )


def normal_set(images: np.ndarray, names: list[str]) -> ImageSet:
    count = len(images)
    return ImageSet(images, np.zeros(count, dtype=np.int64), [NORMAL_CATEGORY] * count, names)


@dataclass(frozen=True)
class SourceData:
    """Normal training images (to be split further), the labelled test set, and normals supplied for calibration
    alone (a folder's calibration/good), if any."""

    train: ImageSet
    test: ImageSet
    calibration: ImageSet | None = None
