"""Pick the data source named by `data.kind` and load it into memory."""

from __future__ import annotations

from pathlib import Path

from anomaly.config import TORCHVISION_KINDS, DataConfig
from anomaly.data.imageset import SourceData

DEFAULT_TORCHVISION_ROOT = Path("data")


def load_source(config: DataConfig) -> SourceData:
    size, channels = config.image_size, config.channels
    if config.kind == "folder":
        from anomaly.data.folder import load_folder

        return load_folder(config.root, size, channels)
    if config.kind in TORCHVISION_KINDS:
        from anomaly.data.oneclass import load_oneclass

        root = config.root or DEFAULT_TORCHVISION_ROOT
        return load_oneclass(config.kind, root, config.normal_class, config.download, size, channels)
    from anomaly.data.elpv import load_elpv

    return load_elpv(
        config.elpv_anomaly_min_probability,
        config.elpv_module_type,
        config.elpv_test_fraction,
        config.split_seed,
        size,
        channels,
    )


def native_size(config: DataConfig) -> tuple[int, int]:
    """The (height, width) the source's training images have before any resizing."""
    if config.kind == "folder":
        from anomaly.data.folder import native_folder_size

        return native_folder_size(config.root)
    if config.kind in TORCHVISION_KINDS:
        from anomaly.data.oneclass import native_oneclass_size

        return native_oneclass_size(config.kind, config.root or DEFAULT_TORCHVISION_ROOT, config.download)
    from anomaly.data.elpv import native_elpv_size

    return native_elpv_size()
