"""MVTec AD folder layout: train/good, test/<category>, ground_truth/<category>/<stem>_mask.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomaly.data.imageset import NORMAL_CATEGORY, ImageSet, SourceData, normal_set
from anomaly.errors import AnomalyError
from anomaly.imageio import decode_image, image_files, load_mask, read_size

MASK_SUFFIX = "_mask"
CALIBRATION_FOLDER = "calibration"


def _decode_all(files: list[Path], size: tuple[int, int], channels: int) -> np.ndarray:
    return np.stack([decode_image(path, channels, size) for path in files])


def _mask_index(root: Path, test_files: dict[str, list[Path]]) -> dict[str, dict[str, Path]]:
    """Mask files per category by image stem, listed once; every mask must have its image."""
    truth = root / "ground_truth"
    index: dict[str, dict[str, Path]] = {}
    for category_dir in sorted(path for path in truth.iterdir() if path.is_dir()):
        stems = {path.stem for path in test_files.get(category_dir.name, [])}
        masks = {mask.stem.removesuffix(MASK_SUFFIX): mask for mask in image_files(category_dir)}
        for stem, mask in masks.items():
            if stem not in stems:
                raise AnomalyError(
                    f"mask {mask} has no image: expected {root / 'test' / category_dir.name}/{stem}.<ext>"
                )
        index[category_dir.name] = masks
    return index


def _mask_for(root: Path, index: dict[str, dict[str, Path]], category: str, image: Path) -> Path:
    mask = index.get(category, {}).get(image.stem)
    if mask is None:
        raise AnomalyError(
            f"image {image} has no mask: expected {root / 'ground_truth' / category}/{image.stem}{MASK_SUFFIX}.png"
        )
    return mask


def _load_test(root: Path, size: tuple[int, int], channels: int) -> ImageSet:
    test_dir = root / "test"
    categories = sorted(p.name for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
    files = {category: image_files(test_dir / category) for category in categories}
    index = _mask_index(root, files) if (root / "ground_truth").is_dir() else None
    ordered = [(category, path) for category in categories for path in files[category]]
    if not ordered:
        empty = np.zeros((0, *size, channels), dtype=np.uint8)
        return ImageSet(empty, np.zeros(0, dtype=np.int64), [], [])
    masks = None
    if index is not None:
        masks = np.zeros((len(ordered), *size), dtype=bool)
        for i, (category, path) in enumerate(ordered):
            if category != NORMAL_CATEGORY:
                masks[i] = load_mask(_mask_for(root, index, category, path), size)
    return ImageSet(
        images=_decode_all([path for _, path in ordered], size, channels),
        labels=np.array([int(category != NORMAL_CATEGORY) for category, _ in ordered], dtype=np.int64),
        categories=[category for category, _ in ordered],
        names=[str(path) for _, path in ordered],
        masks=masks,
    )


def _train_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise AnomalyError(f"data folder not found: {root}")
    train_dir = root / "train" / NORMAL_CATEGORY
    if not train_dir.is_dir():
        raise AnomalyError(f"data folder {root} has no train/{NORMAL_CATEGORY} folder of normal images")
    train_files = image_files(train_dir)
    if not train_files:
        raise AnomalyError(f"no training images in {train_dir}")
    return train_files


def _calibration_normals(root: Path, size: tuple[int, int], channels: int) -> ImageSet | None:
    """ROOT/calibration/good: normals a user holds out for calibration (say, parts made after the training images)."""
    folder = root / CALIBRATION_FOLDER / NORMAL_CATEGORY
    if not folder.is_dir():
        return None
    files = image_files(folder)
    if not files:
        raise AnomalyError(f"no images in {folder}: add normal images for calibration, or remove the folder")
    return normal_set(_decode_all(files, size, channels), [str(path) for path in files])


def load_folder(root: Path, size: tuple[int, int], channels: int) -> SourceData:
    """Load an MVTec-layout folder; every problem is reported as a one-line AnomalyError."""
    train_files = _train_files(root)
    train = normal_set(_decode_all(train_files, size, channels), [str(path) for path in train_files])
    return SourceData(
        train=train, test=_load_test(root, size, channels), calibration=_calibration_normals(root, size, channels)
    )


def native_folder_size(root: Path) -> tuple[int, int]:
    """Median (height, width) of the training images, read from the file headers only."""
    sizes = np.array([read_size(path) for path in _train_files(root)])
    return int(np.median(sizes[:, 0])), int(np.median(sizes[:, 1]))
