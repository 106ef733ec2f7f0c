"""Training a feature autoencoder on cached backbone maps: the frozen encoder runs once per image, not once per epoch.

The backbone is frozen and (without augmentation) each image's maps never change, so they are computed once into
float16 files in a folder, memory-mapped, and every epoch reads them back: a larger normal set than RAM still
trains, and the epochs cost only the autoencoder's own passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from anomaly.config import DataConfig
from anomaly.data.dataset import ImageSetDataset
from anomaly.data.imageset import ImageSet
from anomaly.models.pretrained.torch_model import FeatureAutoencoder
from anomaly.progress import progress

FEATURES_KEY = "features"


class CachedMaps(Dataset):
    """One image's backbone maps per item ({"features": {level: (C, h, w) float32}}), read from memory-mapped files."""

    def __init__(self, maps: dict[int, np.ndarray]) -> None:
        self.maps = maps

    def __len__(self) -> int:
        return len(next(iter(self.maps.values())))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            FEATURES_KEY: {
                level: torch.from_numpy(np.asarray(maps[index], dtype=np.float32)) for level, maps in self.maps.items()
            }
        }


@torch.no_grad()
def cache_maps(
    model: FeatureAutoencoder, images: ImageSet, batch_size: int, folder: Path, description: str
) -> CachedMaps:
    """`model.backbone_maps` of every image, written batch by batch into `folder/level_L.npy` (float16)."""
    folder.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(ImageSetDataset(images), batch_size=batch_size)
    maps: dict[int, np.ndarray] = {}
    start = 0
    for batch in progress(loader, description):
        for level, values in model.backbone_maps(batch["image"]).items():
            if level not in maps:
                shape = (len(images), *values.shape[1:])
                maps[level] = np.lib.format.open_memmap(
                    folder / f"level_{level}.npy", mode="w+", dtype=np.float16, shape=shape
                )
            maps[level][start : start + len(values)] = values.numpy()
        start += len(batch["image"])
    for values in maps.values():
        values.flush()
    return CachedMaps(maps)


class CachedMapsDataModule(L.LightningDataModule):
    """The training and validation splits as cached backbone maps: what AutoencoderModule trains a feature
    autoencoder on when the encoder is frozen and the images are not augmented."""

    def __init__(
        self, model: FeatureAutoencoder, train: ImageSet, val: ImageSet, config: DataConfig, folder: Path
    ) -> None:
        super().__init__()
        self.config = config
        self.train_maps = cache_maps(model, train, config.batch_size, folder / "train", "encoding training images")
        self.val_maps = cache_maps(model, val, config.batch_size, folder / "val", "encoding validation images")

    def train_dataloader(self) -> DataLoader:
        # A last batch of one image would break BatchNorm in training mode.
        return DataLoader(
            self.train_maps,
            batch_size=self.config.batch_size,
            shuffle=True,
            drop_last=len(self.train_maps) > self.config.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_maps, batch_size=self.config.batch_size)
