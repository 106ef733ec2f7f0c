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

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
        skips = list(reversed(features[:-1]))
        reconstruction = self.decoder(x, skips)
        return AutoencoderOutput(reconstruction=reconstruction, latent=x.mean(dim=(2, 3)))
