"""Feature autoencoder: a frozen pretrained CNN encodes, a convolutional autoencoder reconstructs its features.

In the manner of DFR: the backbone's feature maps at strides 4, 8 and 16 (read from intensity-standardised
images) are brought to the stride-8 grid, concatenated and standardised per channel. A convolutional autoencoder
of 3x3 Conv2d + BatchNorm + LeakyReLU blocks squeezes them through a bottleneck at stride 32 (two strided blocks)
and restores them with upsampling blocks: each restored position is inferred from its neighbourhood, so a defect
that is small next to that neighbourhood is restored as the normal surface around it and stands out in the error.
The patch features the latent distance measures come from the same backbone pass (`patch_features_from`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anomaly.config import PRETRAINED_FEATURE_LEVELS, ModelConfig
from anomaly.models.blocks import DecoderBlock, EncoderBlock
from anomaly.models.intensity import standardise_intensity
from anomaly.models.outputs import AutoencoderOutput
from anomaly.models.pretrained.backbones import PretrainedBackbone

RECONSTRUCTED_GRID_LEVEL = 3  # the features are reconstructed on the stride-8 grid
BOTTLENECK_DOWNSAMPLINGS = 2  # strided blocks between the stride-8 grid and the code (stride 32)
HIDDEN_CHANNELS = 128  # width of the autoencoder's blocks around the code

BackboneMaps = dict[int, torch.Tensor]


def resize_to(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A feature map to the grid `size`: average-pooled when finer, bilinearly upsampled when coarser."""
    if features.shape[-2:] == size:
        return features
    if features.shape[-2] > size[0]:
        return F.avg_pool2d(features, features.shape[-2] // size[0])
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


class FeatureAutoencoder(nn.Module):
    """The AE whose encoder is a frozen pretrained CNN (model.encoder); `reconstruction` and `target` are
    feature maps (B, C, h, w) on the stride-8 grid, the target standardised per channel.

    One backbone pass (`backbone_maps`) serves both signals: `reconstruct` for the reconstruction error and
    `patch_features_from` for the latent distance; training reads cached backbone maps the same way.
    """

    def __init__(self, config: ModelConfig, channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = PretrainedBackbone(config.encoder, channels, max(PRETRAINED_FEATURE_LEVELS))
        feature_channels = sum(self.backbone.spec.channels[level] for level in PRETRAINED_FEATURE_LEVELS)
        # Per-channel standardisation of the target, its statistics a cumulative average over training batches
        # (momentum None): the levels' channels differ in scale, and each should count alike in the error.
        self.standardise = nn.BatchNorm2d(feature_channels, affine=False, momentum=None)
        widths = [feature_channels] + [HIDDEN_CHANNELS] * (BOTTLENECK_DOWNSAMPLINGS - 1) + [config.latent_dim]
        self.encoder = nn.Sequential(*(EncoderBlock(i, o, "stride") for i, o in zip(widths, widths[1:])))
        self.decoder = nn.Sequential(
            *(
                DecoderBlock(i, HIDDEN_CHANNELS, config.upsample)
                for i in [config.latent_dim] + [HIDDEN_CHANNELS] * (BOTTLENECK_DOWNSAMPLINGS - 1)
            ),
            nn.Conv2d(HIDDEN_CHANNELS, feature_channels, 1),
        )

    def backbone_maps(self, images: torch.Tensor) -> BackboneMaps:
        """The backbone's levels 2-4 for [0, 1] images, read from intensity-standardised images."""
        return self.backbone(standardise_intensity(images), PRETRAINED_FEATURE_LEVELS)

    def target(self, maps: BackboneMaps) -> torch.Tensor:
        """The reconstructed features: the levels on the stride-8 grid, concatenated, standardised."""
        grid = maps[RECONSTRUCTED_GRID_LEVEL].shape[-2:]
        return self.standardise(torch.cat([resize_to(maps[level], grid) for level in PRETRAINED_FEATURE_LEVELS], dim=1))

    def reconstruct(self, maps: BackboneMaps) -> AutoencoderOutput:
        """The autoencoder on backbone maps (from `backbone_maps`, or cached ones while training)."""
        target = self.target(maps)
        code = self.encoder(target)
        reconstruction = self.decoder(code)
        return AutoencoderOutput(reconstruction=reconstruction, latent=code.mean(dim=(2, 3)), target=target)

    @staticmethod
    def patch_features_from(maps: BackboneMaps, level: int) -> torch.Tensor:
        """PatchCore-style patch features at stride 2**level: that level and the next one upsampled to its grid,
        each averaged over 3x3 neighbouring positions so a patch sees a little context."""
        grid = maps[level].shape[-2:]
        pooled = [
            F.avg_pool2d(resize_to(maps[lvl], grid), 3, stride=1, padding=1, count_include_pad=False)
            for lvl in (level, level + 1)
        ]
        return torch.cat(pooled, dim=1)

    def patch_features(self, images: torch.Tensor, level: int) -> torch.Tensor:
        return self.patch_features_from(self.backbone(standardise_intensity(images), (level, level + 1)), level)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The `latent` of forward() (the pooled code) without decoding."""
        return self.encoder(self.target(self.backbone_maps(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        return self.reconstruct(self.backbone_maps(x))
