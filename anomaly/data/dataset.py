"""Torch view of an ImageSet: float images in [0, 1], masks, labels, and optional augmentation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from anomaly.config import AugmentConfig
from anomaly.data.imageset import ImageSet

Sample = dict[str, torch.Tensor | int | str]


def build_augmentation(config: AugmentConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torchvision transforms for training images only; None when nothing is enabled."""
    if not config.enabled:
        return None
    steps: list[v2.Transform] = []
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if config.vflip:
        steps.append(v2.RandomVerticalFlip())
    if config.rotation_degrees:
        steps.append(v2.RandomRotation(config.rotation_degrees))
    if config.brightness or config.contrast:
        steps.append(v2.ColorJitter(brightness=config.brightness, contrast=config.contrast))
    return v2.Compose(steps)


class ImageSetDataset(Dataset[Sample]):
    def __init__(self, images: ImageSet, augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.images = images
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        image = torch.from_numpy(np.ascontiguousarray(self.images.images[index])).permute(2, 0, 1).float() / 255.0
        if self.augment is not None:
            image = self.augment(image).clamp(0.0, 1.0)
        masks = self.images.masks
        mask = torch.zeros(1, *image.shape[1:]) if masks is None else torch.from_numpy(masks[index])[None].float()
        return {
            "image": image,
            "mask": mask,
            "label": int(self.images.labels[index]),
            "category": self.images.categories[index],
            "name": self.images.names[index],
        }
