"""Lightning DataModule: loads a source once, splits the normals, serves every loader."""

from __future__ import annotations

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from anomaly.config import DataConfig
from anomaly.data.dataset import ImageSetDataset, build_augmentation
from anomaly.data.imageset import ImageSet
from anomaly.data.sources import load_source
from anomaly.data.splits import HoldoutSplit, split_normals
from anomaly.data.synthetic import synthetic_anomaly_set


class AnomalyDataModule(L.LightningDataModule):
    """train: normals to fit on; val: normals for early stopping; calibration: normals never
    seen in training, for the threshold distribution; test: labelled images for evaluation."""

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config
        self.split: HoldoutSplit | None = None
        self.train_set: ImageSet | None = None
        self.val_set: ImageSet | None = None
        self.calibration_set: ImageSet | None = None
        self.test_set: ImageSet | None = None
        self.synthetic_set: ImageSet | None = None
        self._normal_names: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        source = load_source(self.config)
        calibration_fraction = 0.0 if source.calibration is not None else self.config.calibration_fraction
        split = split_normals(
            len(source.train),
            self.config.val_fraction,
            calibration_fraction,
            self.config.split_seed,
            self.config.holdout,
        )
        self.split, self._normal_names = split, source.train.names
        self.train_set = source.train.subset(split.train)
        self.val_set = source.train.subset(split.val)
        self.calibration_set = (
            source.calibration if source.calibration is not None else source.train.subset(split.calibration)
        )
        self.test_set = source.test
        if self.config.synthetic_validation:
            self.synthetic_set = synthetic_anomaly_set(self.val_set, seed=self.config.split_seed)

    def labelled_validation_set(self) -> ImageSet | None:
        """Held-out normals plus their synthetic anomalies (data.synthetic_validation): what settings are chosen by and
        what ship decisions (champion, int8) compare models on. None without synthetic validation."""
        if self.synthetic_set is None:
            return None
        pair = (self.val_set, self.synthetic_set)
        masks = [
            np.zeros(part.images.shape[:3], dtype=bool) if part.masks is None else part.masks for part in pair
        ]  # normals: empty
        return ImageSet(
            np.concatenate([part.images for part in pair]),
            np.concatenate([part.labels for part in pair]),
            [c for part in pair for c in part.categories],
            [n for part in pair for n in part.names],
            np.concatenate(masks),
        )

    def split_record(self) -> dict[str, object]:
        record = self.split.record(self._normal_names)
        if not len(self.split.calibration):
            record["calibration"] = list(self.calibration_set.names)
        return record

    @property
    def holdout_description(self) -> str:
        """How the calibration normals were held out, in words for the model card and /model."""
        if not len(self.split.calibration):
            return "a calibration folder (calibration/good), apart from the training images"
        if self.split.scheme == "random":
            return "single images drawn at random from the training normals"
        return "whole runs of consecutive training normals in name order (data.holdout=blocks)"

    def _loader(self, dataset: Dataset, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = ImageSetDataset(self.train_set, build_augmentation(self.config.augment))
        # A last batch of one image would break BatchNorm in training mode.
        return self._loader(dataset, shuffle=True, drop_last=len(dataset) > self.config.batch_size)

    def train_dataloader_for_fitting(self) -> DataLoader:
        """The training split without augmentation or shuffling: for fitting latent statistics."""
        return self._loader(ImageSetDataset(self.train_set))

    def val_dataloader(self) -> DataLoader:
        return self._loader(ImageSetDataset(self.val_set))

    def calibration_dataloader(self) -> DataLoader:
        return self._loader(ImageSetDataset(self.calibration_set))

    def test_dataloader(self) -> DataLoader:
        return self._loader(ImageSetDataset(self.test_set))

    def labelled_val_dataloader(self) -> DataLoader | None:
        """Validation normals plus their synthetic anomalies, when `synthetic_validation` is on."""
        if self.synthetic_set is None:
            return None
        return self._loader(ImageSetDataset(self.labelled_validation_set()))
