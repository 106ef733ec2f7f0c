"""The one inference contract every model returns, so scoring and export never branch on type.

Every model also has `latent(x)`: the same `latent` as its forward(), without decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AutoencoderOutput:
    reconstruction: torch.Tensor  # (B, C, H, W): the input image restored in [0, 1], or `target` restored
    latent: torch.Tensor  # (B, D): the embedding used for latent distance
    # What `reconstruction` restores when it is not the input image: a frozen pretrained encoder's features
    # (B, C, h, w). None for the models that reconstruct images.
    target: torch.Tensor | None = None


@dataclass(kw_only=True)
class VariationalOutput(AutoencoderOutput):
    mu: torch.Tensor  # posterior mean, shaped like the code (B, D) or (B, D, h, w)
    logvar: torch.Tensor  # posterior log-variance, same shape as mu
