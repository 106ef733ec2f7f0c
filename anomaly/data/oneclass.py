"""One-class protocol on torchvision classification sets: one class is normal, the rest anomalous."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torchvision

from anomaly.data.imageset import NORMAL_CATEGORY, ImageSet, SourceData, normal_set
from anomaly.errors import AnomalyError
from anomaly.imageio import conform_array

DATASETS = {
    "mnist": torchvision.datasets.MNIST,
    "fashion_mnist": torchvision.datasets.FashionMNIST,
    "cifar10": torchvision.datasets.CIFAR10,
}
CLASS_COUNT = 10


def _read(kind: str, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        dataset = DATASETS[kind](root=str(root), train=train, download=download)
    except RuntimeError as error:
        hint = "" if download else "; set data.download=true to fetch it"
        raise AnomalyError(f"{kind} not found under {root} ({error}){hint}") from None
    images = np.asarray(dataset.data)
    return images, np.asarray(dataset.targets, dtype=np.int64), list(dataset.classes)


def _conform_all(images: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    return np.stack([conform_array(image, channels, size) for image in images])


def load_oneclass(
    kind: str, root: Path, normal_class: int, download: bool, size: tuple[int, int], channels: int
) -> SourceData:
    """Train on the training images of `normal_class`; test on the whole test split."""
    if normal_class >= CLASS_COUNT:
        raise AnomalyError(f"data.normal_class must be below {CLASS_COUNT} for {kind}, got {normal_class}")
    train_images, train_targets, classes = _read(kind, root, train=True, download=download)
    test_images, test_targets, _ = _read(kind, root, train=False, download=download)
    normal_indices = np.flatnonzero(train_targets == normal_class)
    train = normal_set(
        _conform_all(train_images[normal_indices], size, channels),
        [f"{kind}/train/{index}" for index in normal_indices],
    )
    labels = (test_targets != normal_class).astype(np.int64)
    test = ImageSet(
        images=_conform_all(test_images, size, channels),
        labels=labels,
        categories=[NORMAL_CATEGORY if not label else classes[target] for label, target in zip(labels, test_targets)],
        names=[f"{kind}/test/{index}" for index in range(len(test_images))],
    )
    return SourceData(train=train, test=test)


def native_oneclass_size(kind: str, root: Path, download: bool) -> tuple[int, int]:
    """(height, width) of the data set's images, all one size."""
    images, _, _ = _read(kind, root, train=True, download=download)
    return int(images.shape[1]), int(images.shape[2])
