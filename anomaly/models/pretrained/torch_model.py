"""Feature autoencoder: a frozen pretrained CNN encodes, a convolutional autoencoder reconstructs its features.

In the manner of DFR: the backbone's feature maps at strides 4, 8 and 16 are brought to the stride-8 grid
and concatenated; an autoencoder of 1x1 Conv2d + BatchNorm + LeakyReLU blocks squeezes them through a
`latent_dim`-channel code and restores them. Its per-position error in feature space is the reconstruction
signal; the patch features the latent distance measures come from the same backbone (`patch_features`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anomaly.config import PRETRAINED_FEATURE_LEVELS, ModelConfig
from anomaly.models.blocks import activation
from anomaly.models.outputs import AutoencoderOutput
from anomaly.models.pretrained.backbones import PretrainedBackbone

RECONSTRUCTED_GRID_LEVEL = 3  # the features are reconstructed on the stride-8 grid


def resize_to(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A feature map to the grid `size`: average-pooled when finer, bilinearly upsampled when coarser."""
    if features.shape[-2:] == size:
        return features
    if features.shape[-2] > size[0]:
        return F.avg_pool2d(features, features.shape[-2] // size[0])
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


def pointwise_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), activation())


class FeatureAutoencoder(nn.Module):
    """The AE whose encoder is a frozen pretrained CNN (model.encoder); `reconstruction` and `target` are
    feature maps (B, C, h, w) on the stride-8 grid, the target standardised per channel."""

    def __init__(self, config: ModelConfig, channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = PretrainedBackbone(config.encoder, channels, max(PRETRAINED_FEATURE_LEVELS))
        feature_channels = sum(self.backbone.spec.channels[level] for level in PRETRAINED_FEATURE_LEVELS)
        hidden = max(config.latent_dim, (feature_channels + config.latent_dim) // 2)
        # Per-channel standardisation of the target, its statistics a cumulative average over training batches
        # (momentum None): the levels' channels differ in scale, and each should count alike in the error.
        self.standardise = nn.BatchNorm2d(feature_channels, affine=False, momentum=None)
        self.encoder = nn.Sequential(pointwise_block(feature_channels, hidden), pointwise_block(hidden, config.latent_dim))
        self.decoder = nn.Sequential(pointwise_block(config.latent_dim, hidden), nn.Conv2d(hidden, feature_channels, 1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstructed features: the backbone's levels 2-4 on the stride-8 grid, concatenated, standardised."""
        maps = self.backbone(images, PRETRAINED_FEATURE_LEVELS)
        grid = maps[RECONSTRUCTED_GRID_LEVEL].shape[-2:]
        return self.standardise(torch.cat([resize_to(maps[level], grid) for level in PRETRAINED_FEATURE_LEVELS], dim=1))

    def patch_features(self, images: torch.Tensor, level: int) -> torch.Tensor:
        """PatchCore-style patch features at stride 2**level: that level and the next one upsampled to its grid,
        each averaged over 3x3 neighbouring positions so a patch sees a little context."""
        maps = self.backbone(images, (level, level + 1))
        grid = maps[level].shape[-2:]
        pooled = [F.avg_pool2d(resize_to(maps[lvl], grid), 3, stride=1, padding=1, count_include_pad=False)
                  for lvl in (level, level + 1)]
        return torch.cat(pooled, dim=1)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The `latent` of forward() (the pooled code) without decoding."""
        return self.encoder(self.features(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        target = self.features(x)
        code = self.encoder(target)
        return AutoencoderOutput(reconstruction=self.decoder(code), latent=code.mean(dim=(2, 3)), target=target)
