"""Per-pixel anomaly maps and their reduction to an image score.

Written with plain conv2d / pooling ops (no torchmetrics here) because this code runs inside
the exported ONNX graph: evaluation and serving compute maps with the very same operations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anomaly.config import ReconstructionSignal

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
SSIM_SIGMA = 1.5


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


class GaussianBlur(nn.Module):
    """Separable Gaussian blur of a (B, C, H, W) tensor, reflect-padded; identity for sigma 0."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.register_buffer("kernel", gaussian_kernel(sigma) if sigma > 0 else torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.kernel.numel()
        if size == 1:
            return x
        channels, pad = x.shape[1], size // 2
        horizontal = self.kernel.view(1, 1, 1, size).expand(channels, 1, 1, size)
        vertical = self.kernel.view(1, 1, size, 1).expand(channels, 1, size, 1)
        x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), horizontal, groups=channels)
        return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), vertical, groups=channels)


class AnomalyMap(nn.Module):
    """(input, reconstruction[, target]) -> smoothed per-pixel anomaly map (B, 1, H, W).

    With `target` (a pretrained encoder's features, which the reconstruction restores) the error is measured in
    feature space, averaged over channels and upsampled bilinearly to the input's size before smoothing.
    """

    def __init__(self, config: ReconstructionSignal) -> None:
        super().__init__()
        self.kind = config.map
        self.ssim_window = GaussianBlur(SSIM_SIGMA)
        self.smooth = GaussianBlur(config.smoothing_sigma)

    def _dissimilarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        window = self.ssim_window
        mu_x, mu_y = window(x), window(y)
        var_x = window(x * x) - mu_x**2
        var_y = window(y * y) - mu_y**2
        cov = window(x * y) - mu_x * mu_y
        ssim = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
            (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
        )
        return (1 - ssim) / 2

    def forward(
        self, images: torch.Tensor, reconstruction: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        if target is not None:
            error = ((target - reconstruction) ** 2).mean(dim=1, keepdim=True)
            return self.smooth(F.interpolate(error, size=images.shape[-2:], mode="bilinear", align_corners=False))
        if self.kind == "ssim":
            per_channel = self._dissimilarity(images, reconstruction)
        else:
            per_channel = (images - reconstruction) ** 2
        return self.smooth(per_channel.mean(dim=1, keepdim=True))


class MapReduction(nn.Module):
    """Anomaly map -> image score: the mean of its highest `top_fraction` of pixels (all of them: the mean)."""

    def __init__(self, config: ReconstructionSignal, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.k = max(1, int(round(config.top_fraction * image_size[0] * image_size[1])))
        self.all_pixels = self.k == image_size[0] * image_size[1]

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        flat = maps.flatten(1)
        if self.all_pixels:
            return flat.mean(dim=1)
        return flat.topk(self.k, dim=1).values.mean(dim=1)
