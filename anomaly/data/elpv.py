"""ELPV solar cells (pip package `elpv-dataset`): defect probability 0 is normal."""

from __future__ import annotations

import numpy as np

from anomaly.data.imageset import ImageSet, SourceData, normal_set
from anomaly.errors import AnomalyError
from anomaly.imageio import conform_array


def _load_package() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        raise AnomalyError("data.kind 'elpv' needs the elpv-dataset package: pip install elpv-dataset") from None
    images, probabilities, types = load_dataset()
    return images, probabilities, types


def load_elpv(
    anomaly_min_probability: float,
    module_type: str | None,
    test_fraction: float,
    seed: int,
    size: tuple[int, int],
    channels: int,
) -> SourceData:
    """Normal cells are split into train and test (seeded); cells at or above the level are anomalous.

    Cells with 0 < probability < the level are left out: they are neither clearly normal nor
    clearly defective.
    """
    images, probabilities, types = _load_package()
    keep = np.ones(len(images), dtype=bool) if module_type is None else types == module_type
    normal = np.flatnonzero(keep & (probabilities == 0))
    anomalous = np.flatnonzero(keep & (probabilities >= anomaly_min_probability - 1e-9))
    shuffled = np.random.default_rng(seed).permutation(normal)
    test_count = int(round(len(shuffled) * test_fraction))
    train_indices, test_normal = np.sort(shuffled[test_count:]), np.sort(shuffled[:test_count])
    test_indices = np.concatenate([test_normal, anomalous])

    def conform(indices: np.ndarray) -> np.ndarray:
        return np.stack([conform_array(images[i], channels, size) for i in indices])

    labels = np.concatenate([np.zeros(len(test_normal)), np.ones(len(anomalous))]).astype(np.int64)
    return SourceData(
        train=normal_set(conform(train_indices), [f"elpv/{i}" for i in train_indices]),
        test=ImageSet(
            images=conform(test_indices),
            labels=labels,
            categories=["good" if not label else f"p>={anomaly_min_probability:.2f}" for label in labels],
            names=[f"elpv/{i}" for i in test_indices],
        ),
    )


def native_elpv_size() -> tuple[int, int]:
    """(height, width) of the cells, all one size in the package."""
    images, _, _ = _load_package()
    return int(images.shape[1]), int(images.shape[2])
