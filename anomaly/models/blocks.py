"""Building blocks shared by the AE, VAE and U-Net."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from anomaly.config import ModelConfig

NEGATIVE_SLOPE = 0.2


def activation() -> nn.Module:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


class EncoderBlock(nn.Sequential):
    """Halve the resolution: Conv2d + BatchNorm + LeakyReLU(0.2), by stride 2 or by max-pooling."""

    def __init__(self, in_channels: int, out_channels: int, downsample: Literal["stride", "pool"]) -> None:
        stride = 2 if downsample == "stride" else 1
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            activation(),
        ]
        if downsample == "pool":
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class DecoderBlock(nn.Module):
    """Double the resolution (bilinear or transposed conv), optionally concatenate a skip, then
    Conv2d + BatchNorm + LeakyReLU(0.2)."""

    def __init__(
        self, in_channels: int, out_channels: int, upsample: Literal["bilinear", "transposed"], skip_channels: int = 0
    ) -> None:
        super().__init__()
        self.up: nn.Module = (
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            if upsample == "bilinear"
            else nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2)
        )
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            activation(),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat((x, skip), dim=1)
        return self.conv(x)


def encoder_channels(config: ModelConfig) -> list[int]:
    """Output channels of each encoder block: base, 2*base, 4*base, ... capped at max_channels."""
    return [min(config.base_channels * 2**i, config.max_channels) for i in range(config.depth)]


def build_encoder(config: ModelConfig, in_channels: int) -> nn.ModuleList:
    widths = encoder_channels(config)
    inputs = [in_channels, *widths[:-1]]
    return nn.ModuleList(EncoderBlock(i, o, config.downsample) for i, o in zip(inputs, widths))


def reconstruction_head(in_channels: int, out_channels: int) -> nn.Module:
    """Map decoder features back to image channels in [0, 1]."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.Sigmoid())


def bottleneck_shape(config: ModelConfig, image_size: tuple[int, int]) -> tuple[int, int, int]:
    factor = 2**config.depth
    return encoder_channels(config)[-1], image_size[0] // factor, image_size[1] // factor


def code_projection(config: ModelConfig, feature_shape: tuple[int, int, int], code_size: int) -> nn.Module:
    """Features -> code: a Linear on the flattened map (dense) or a 1x1 conv (spatial)."""
    channels, height, width = feature_shape
    if config.bottleneck == "dense":
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, code_size))
    return nn.Conv2d(channels, code_size, 1)


def code_expansion(config: ModelConfig, feature_shape: tuple[int, int, int]) -> nn.Module:
    """Code -> features for the decoder: the inverse shape of `code_projection`."""
    channels, height, width = feature_shape
    if config.bottleneck == "dense":
        return nn.Sequential(
            nn.Linear(config.latent_dim, channels * height * width), nn.Unflatten(1, feature_shape), activation()
        )
    return nn.Sequential(nn.Conv2d(config.latent_dim, channels, 1), activation())


class MirroredDecoder(nn.Module):
    """Decoder blocks mirroring the encoder widths, then the reconstruction head."""

    def __init__(self, config: ModelConfig, out_channels: int, with_skips: bool = False) -> None:
        super().__init__()
        widths = encoder_channels(config)
        outputs = [*reversed(widths[:-1]), widths[0]]
        inputs = [widths[-1], *outputs[:-1]]
        # Skips come from encoder outputs at the same resolution; the full-resolution block gets none,
        # so the raw input never reaches the output by a shortcut.
        skips = [*reversed(widths[:-1]), 0] if with_skips else [0] * len(widths)
        self.blocks = nn.ModuleList(
            DecoderBlock(i, o, config.upsample, skip_channels=s) for i, o, s in zip(inputs, outputs, skips)
        )
        self.head = reconstruction_head(widths[0], out_channels)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if skips is not None and i < len(skips) else None)
        return self.head(x)
