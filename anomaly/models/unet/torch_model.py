"""U-Net autoencoder: skips at every resolution except the full one.

Skips make the identity easy to learn, so it is trained to repair synthetic anomalies
(see anomaly.training.corruption): the loss asks for the clean image from a corrupted one.
"""

from __future__ import annotations

import torch
from torch import nn

from anomaly.config import ModelConfig
from anomaly.models.blocks import MirroredDecoder, build_encoder
from anomaly.models.outputs import AutoencoderOutput


class UNetAutoencoder(nn.Module):
    def __init__(self, config: ModelConfig, channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.encoder = build_encoder(config, channels)
        self.decoder = MirroredDecoder(config, channels, with_skips=True)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every encoder block's output, full resolution first; the last is the bottleneck."""
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
        return features

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The `latent` of forward() (the pooled bottleneck) without decoding."""
        return self.encode(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        features = self.encode(x)
        bottleneck = features[-1]
        reconstruction = self.decoder(bottleneck, list(reversed(features[:-1])))
        return AutoencoderOutput(reconstruction=reconstruction, latent=bottleneck.mean(dim=(2, 3)))
