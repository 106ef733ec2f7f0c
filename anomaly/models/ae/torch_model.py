"""Convolutional autoencoder with a dense or spatial bottleneck."""

from __future__ import annotations

import torch
from torch import nn

from anomaly.config import ModelConfig
from anomaly.models.blocks import MirroredDecoder, bottleneck_shape, build_encoder, code_expansion, code_projection
from anomaly.models.outputs import AutoencoderOutput


class ConvAutoencoder(nn.Module):
    def __init__(self, config: ModelConfig, channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        feature_shape = bottleneck_shape(config, image_size)
        self.encoder = build_encoder(config, channels)
        self.to_code = code_projection(config, feature_shape, config.latent_dim)
        self.from_code = code_expansion(config, feature_shape)
        self.decoder = MirroredDecoder(config, channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.encoder:
            x = block(x)
        return self.to_code(x)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The `latent` of forward() without decoding (the round-trip latent encodes reconstructions)."""
        return self.encode(x).flatten(1)

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        code = self.encode(x)
        reconstruction = self.decoder(self.from_code(code))
        return AutoencoderOutput(reconstruction=reconstruction, latent=code.flatten(1))
