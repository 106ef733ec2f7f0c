"""Decoder directions for the feature autoencoder, the reconstruction signal alone, on validation and test.

    uv run python -m benchmarks.run --sections decoder_directions

Each surface's Lite0 backbone maps (levels 2-4 of intensity-standardised images, at the folder default's input size)
are computed once per split; each direction's autoencoder is then trained on the cached training maps for EPOCHS
epochs (Adam, lr 1e-3, batch 8, early stopping off) and scored by its reconstruction error alone: the error map
upsampled to the input, smoothed (sigma 4 pixels), the image score the mean of its top 1% of pixels. Directions:

- pointwise: the previous release's decoder, 1x1 convolutions on the stride-8 grid (no neighbourhood).
- spatial: DFR-style, 3x3 convolutions through a strided bottleneck at stride 32 (anomaly.models.pretrained, the
  shipped one), squared error on per-channel standardised features.
- spatial_cosine (not in the default run; docs/pretrained-encoders.md has its first look): the same autoencoder
  measured by cosine distance over the concatenated features.
- reverse_distillation: a one-class bottleneck fusing the three levels at stride 32 and a decoder mirroring them
  (restoring levels 4, 3, 2 in turn), trained and measured by per-level cosine distance (Deng & Li, 2022).

Validation: held-out normals plus their synthetic anomalies (what choices are made on); test: the real test split.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from anomaly.config import load_config
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.data.imageset import ImageSet
from anomaly.data.sizing import resolve_image_size
from anomaly.models.blocks import DecoderBlock, EncoderBlock
from anomaly.models.pretrained.torch_model import FeatureAutoencoder
from anomaly.scoring.maps import GaussianBlur
from anomaly.training.train import pretrained_encoder
from benchmarks.kept import kept_row
from benchmarks.quality import PIPELINES

EPOCHS = 15
# The surfaces of a default run: KolektorSDD, whose reconstruction signal was weakest. BSData and ELPV are in
# surface_configs too; each adds about 20 minutes on 2 cores.
SURFACES = ("kolektorsdd",)
LEVELS = (2, 3, 4)
SPLITS = ("train", "val", "labelled_val", "test")
PIXEL_SAMPLE = 2_000_000
Maps = dict[int, torch.Tensor]


def block(inputs: int, outputs: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(outputs), nn.LeakyReLU(0.2)
    )


class Pointwise(nn.Module):
    """The previous release's decoder: 1x1 blocks on the standardised stride-8 concatenation."""

    def __init__(self, shipped: FeatureAutoencoder, latent: int = 128) -> None:
        super().__init__()
        self.target = shipped.target
        channels = shipped.standardise.num_features
        hidden = (channels + latent) // 2
        self.net = nn.Sequential(
            block(channels, hidden, kernel=1),
            block(hidden, latent, kernel=1),
            block(latent, hidden, kernel=1),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, maps: Maps) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        target = self.target(maps)
        return {3: (self.net(target), target)}


class Spatial(nn.Module):
    """The shipped autoencoder (anomaly.models.pretrained.FeatureAutoencoder.reconstruct)."""

    def __init__(self, shipped: FeatureAutoencoder) -> None:
        super().__init__()
        self.shipped = shipped

    def forward(self, maps: Maps) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        output = self.shipped.reconstruct(maps)
        return {3: (output.reconstruction, output.target)}


class ReverseDistillation(nn.Module):
    """One-class bottleneck over levels 2-4 at stride 32, then a decoder restoring level 4, 3 and 2 in turn."""

    def __init__(self, channels: dict[int, int], latent: int = 128) -> None:
        super().__init__()
        self.squeeze = nn.ModuleDict(
            {
                "2": nn.Sequential(block(channels[2], 48, 2), block(48, 96, 2)),
                "3": block(channels[3], 96, 2),
                "4": block(channels[4], 96),
            }
        )
        self.fuse = nn.Sequential(EncoderBlock(288, 2 * latent, "stride"), block(2 * latent, latent))
        widths = {4: 128, 3: 64, 2: 32}
        self.up = nn.ModuleDict(
            {
                str(level): nn.Sequential(
                    DecoderBlock(inputs, widths[level], "bilinear"), block(widths[level], widths[level])
                )
                for level, inputs in ((4, latent), (3, 128), (2, 64))
            }
        )
        self.heads = nn.ModuleDict({str(level): nn.Conv2d(widths[level], channels[level], 1) for level in LEVELS})

    def forward(self, maps: Maps) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        x = self.fuse(torch.cat([self.squeeze[str(level)](maps[level]) for level in LEVELS], dim=1))
        restored = {}
        for level in (4, 3, 2):
            x = self.up[str(level)](x)
            restored[level] = (self.heads[str(level)](x), maps[level])
        return restored


def error_maps(
    pairs: dict[int, tuple[torch.Tensor, torch.Tensor]], size: tuple[int, int], cosine: bool
) -> torch.Tensor:
    maps = []
    for reconstruction, target in pairs.values():
        error = (
            (1 - F.cosine_similarity(reconstruction, target, dim=1)).unsqueeze(1)
            if cosine
            else ((reconstruction - target) ** 2).mean(1, keepdim=True)
        )
        maps.append(F.interpolate(error, size=size, mode="bilinear", align_corners=False))
    return sum(maps) / len(maps)


def loss(pairs: dict[int, tuple[torch.Tensor, torch.Tensor]], cosine: bool) -> torch.Tensor:
    if cosine:
        return sum((1 - F.cosine_similarity(r, t, dim=1)).mean() for r, t in pairs.values()) / len(pairs)
    return sum(F.mse_loss(r, t) for r, t in pairs.values()) / len(pairs)


@torch.no_grad()
def cached_maps(shipped: FeatureAutoencoder, images: ImageSet) -> Maps:
    batches = [
        shipped.backbone_maps(torch.from_numpy(images.images[i : i + 16]).permute(0, 3, 1, 2).float() / 255)
        for i in range(0, len(images), 16)
    ]
    return {level: torch.cat([batch[level] for batch in batches]).half() for level in LEVELS}


def batches(maps: Maps, size: int, order: torch.Tensor) -> list[Maps]:
    return [{level: maps[level][order[i : i + size]].float() for level in LEVELS} for i in range(0, len(order), size)]


def measure_direction(
    name: str, shipped: FeatureAutoencoder, cached: dict[str, Maps], sets: dict[str, ImageSet]
) -> dict[str, Any]:
    torch.manual_seed(0)
    channels = {level: shipped.backbone.spec.channels[level] for level in LEVELS}
    model = {
        "pointwise": lambda: Pointwise(shipped),
        "spatial": lambda: Spatial(shipped),
        "spatial_cosine": lambda: Spatial(shipped),
        "reverse_distillation": lambda: ReverseDistillation(channels),
    }[name]()
    cosine = name in ("spatial_cosine", "reverse_distillation")
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    started = time.perf_counter()
    count = len(cached["train"][2])
    for _ in range(EPOCHS):
        model.train()
        for batch in batches(cached["train"], 8, torch.randperm(count)):
            if len(batch[2]) > 1:
                value = loss(model(batch), cosine)
                optimiser.zero_grad()
                value.backward()
                optimiser.step()
    seconds = time.perf_counter() - started
    model.eval()
    blur, row = GaussianBlur(4.0), {"train_seconds": round(seconds, 1)}
    with torch.no_grad():
        for split in ("labelled_val", "test"):
            scores, maps = [], []
            for batch in batches(cached[split], 16, torch.arange(len(cached[split][2]))):
                size = (batch[2].shape[-2] * 4, batch[2].shape[-1] * 4)
                error = blur(error_maps(model(batch), size, cosine))
                scores.append(error.flatten(1).topk(max(1, int(0.01 * size[0] * size[1])), dim=1).values.mean(1))
                maps.append(error[:, 0])
            labels = np.asarray(sets[split].labels)
            row[f"{split}_image_auroc"] = round(float(roc_auc_score(labels, torch.cat(scores).numpy())), 4)
            masks = sets[split].masks
            if masks is not None and masks.any():
                pixels = np.random.default_rng(0).choice(masks.size, min(PIXEL_SAMPLE, masks.size), replace=False)
                row[f"{split}_pixel_auroc"] = round(
                    float(roc_auc_score(masks.ravel()[pixels] > 0, torch.cat(maps).numpy().ravel()[pixels])), 4
                )
    return row


def surface_configs(datasets: Path) -> dict[str, tuple[str, list[str]]]:
    return {
        "kolektorsdd": ("folder.yaml", [f"data.root={datasets / 'kolektorsdd'}"]),
        "bsdata": ("folder.yaml", [f"data.root={datasets / 'bsdata'}"]),
        "elpv": ("elpv.yaml", []),
    }


def run(quick: bool, datasets: Path, scratch: Path, kept: Path) -> dict[str, Any]:
    torch.set_num_threads(2)
    rows: dict[str, Any] = {}
    directions = ("pointwise", "spatial") if quick else ("pointwise", "spatial", "reverse_distillation")
    for surface, (pipeline, overrides) in surface_configs(datasets).items():
        if surface not in SURFACES:
            continue
        config = resolve_image_size(load_config(PIPELINES / pipeline, [*overrides, f"output_dir={scratch}"]))
        data = AnomalyDataModule(config.data)
        data.setup()
        shipped = FeatureAutoencoder(config.model, config.data.channels, config.data.image_size)
        shipped.backbone.load_state_dict(pretrained_encoder(config).state_dict())
        sets = {
            "train": data.train_set,
            "val": data.val_set,
            "labelled_val": data.labelled_validation_set(),
            "test": data.test_set,
        }
        cached: dict[str, Maps] | None = None
        for direction in directions:

            def measure() -> dict[str, Any]:
                nonlocal cached
                cached = cached or {split: cached_maps(shipped, images) for split, images in sets.items()}
                return measure_direction(
                    direction,
                    FeatureAutoencoder(config.model, config.data.channels, config.data.image_size)
                    if direction != "spatial"
                    else shipped,
                    cached,
                    sets,
                )

            rows.setdefault(surface, {})[direction] = kept_row(kept, f"decoder-{surface}-{direction}", measure)
            print(surface, direction, rows[surface][direction], flush=True)
    return {"epochs": EPOCHS, "input_sizes": "folder default (auto)", "rows": rows}
