"""Variational autoencoder: Gaussian posterior, reparameterisation trick in training, mu at inference."""

from __future__ import annotations

import torch
from torch import nn

from anomaly.config import ModelConfig
from anomaly.models.blocks import MirroredDecoder, bottleneck_shape, build_encoder, code_expansion, code_projection
from anomaly.models.outputs import VariationalOutput


class VariationalAutoencoder(nn.Module):
    def __init__(self, config: ModelConfig, channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        feature_shape = bottleneck_shape(config, image_size)
        self.encoder = build_encoder(config, channels)
        self.to_posterior = code_projection(config, feature_shape, 2 * config.latent_dim)
        self.from_code = code_expansion(config, feature_shape)
        self.decoder = MirroredDecoder(config, channels)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.encoder:
            x = block(x)
        mu, logvar = self.to_posterior(x).chunk(2, dim=1)
        return mu, logvar

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The `latent` of forward() (the posterior mean) without decoding."""
        return self.posterior(x)[0].flatten(1)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_code(code))

    def forward(self, x: torch.Tensor) -> VariationalOutput:
        mu, logvar = self.posterior(x)
        # Sampling only while training: inference (and the exported graph) is deterministic.
        code = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return VariationalOutput(reconstruction=self.decode(code), latent=mu.flatten(1), mu=mu, logvar=logvar)
