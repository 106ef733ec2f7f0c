"""Reconstruction losses (MSE, L1, SSIM and weighted sums) and the full training objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from anomaly.config import LossConfig
from anomaly.models import AutoencoderOutput, VariationalOutput
from anomaly.models.vae.loss import kl_divergence


def ssim_loss(reconstruction: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    ssim = structural_similarity_index_measure(reconstruction, target, data_range=1.0, sigma=sigma)
    return 1.0 - ssim


class AutoencoderLoss(nn.Module):
    """Weighted reconstruction terms; for a VAE, plus kl_weight * KL.

    The KL sum is divided by the number of pixel values so that it sits on the same per-pixel
    scale as the mean reconstruction terms: kl_weight then acts as the beta of a beta-VAE.
    """

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, output: AutoencoderOutput, target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """`target` is the clean image; a feature autoencoder is compared with its own target features instead
        (`target` may then be None)."""
        reconstruction = output.reconstruction
        if output.target is not None:
            target = output.target
        terms: dict[str, torch.Tensor] = {}
        for name, weight in self.config.terms.items():
            if weight == 0:
                continue
            if name == "mse":
                terms[name] = F.mse_loss(reconstruction, target)
            elif name == "l1":
                terms[name] = F.l1_loss(reconstruction, target)
            else:
                terms[name] = ssim_loss(reconstruction, target, self.config.ssim_sigma)
        total = sum(self.config.terms[name] * value for name, value in terms.items())
        if isinstance(output, VariationalOutput):
            terms["kl"] = kl_divergence(output.mu, output.logvar) / target[0].numel()
            total = total + self.config.kl_weight * terms["kl"]
        terms["loss"] = total
        return terms
