"""Synthetic anomalies: Perlin-noise blobs filled with foreign content, with their masks.

Used two ways: to corrupt inputs during training (so a U-Net cannot learn the identity through
its skips) and to build a labelled validation set when only normal images exist. The fill
comes from the images themselves (shifted, possibly inverted texture of another image), from
noise, or is a flat patch: nothing is downloaded.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from anomaly.data.imageset import ImageSet

PERLIN_SCALES = (1, 2, 4, 8)
MASK_THRESHOLD = 0.5
MIN_MASK_FRACTION = 0.005


def _fade(t: torch.Tensor) -> torch.Tensor:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise(height: int, width: int, res_y: int, res_x: int, generator: torch.Generator) -> torch.Tensor:
    """2-D gradient noise in about [-1, 1] with `res_y` x `res_x` lattice cells."""
    angles = 2 * math.pi * torch.rand(res_y + 1, res_x + 1, generator=generator)
    gradients = torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1)
    ys = torch.arange(height, dtype=torch.float32) * res_y / height
    xs = torch.arange(width, dtype=torch.float32) * res_x / width
    yi, xi = ys.floor().long(), xs.floor().long()
    yf, xf = (ys - yi)[:, None], (xs - xi)[None, :]

    def corner(dy: int, dx: int) -> torch.Tensor:
        gradient = gradients[(yi + dy)[:, None], (xi + dx)[None, :]]
        return gradient[..., 0] * (yf - dy) + gradient[..., 1] * (xf - dx)

    u, v = _fade(yf), _fade(xf)
    top = corner(0, 0) * (1 - v) + corner(0, 1) * v
    bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return math.sqrt(2) * (top * (1 - u) + bottom * u)


def perlin_mask(height: int, width: int, generator: torch.Generator, tries: int = 10) -> torch.Tensor:
    """A binary blob mask (H, W) covering at least MIN_MASK_FRACTION of the image when possible."""
    mask = torch.zeros(height, width)
    for _ in range(tries):
        res_y, res_x = (PERLIN_SCALES[int(i)] for i in torch.randint(len(PERLIN_SCALES), (2,), generator=generator))
        mask = (perlin_noise(height, width, res_y, res_x, generator) > MASK_THRESHOLD).float()
        if mask.mean() >= MIN_MASK_FRACTION:
            break
    return mask


def _fill(images: torch.Tensor, index: int, generator: torch.Generator) -> torch.Tensor:
    """Foreign content for image `index`: another image's shifted texture, noise, or a flat patch."""
    count, channels, height, width = images.shape
    kind = int(torch.randint(3, (1,), generator=generator))
    if kind == 0:
        donor = images[int(torch.randint(count, (1,), generator=generator))]
        shift = (int(torch.randint(height, (1,), generator=generator)), int(torch.randint(width, (1,), generator=generator)))
        texture = torch.roll(donor, shifts=shift, dims=(1, 2))
        return 1 - texture if torch.rand(1, generator=generator) < 0.5 else texture
    if kind == 1:
        return torch.rand(channels, height, width, generator=generator)
    return torch.rand(channels, 1, 1, generator=generator).expand(channels, height, width)


def synthesize_anomalies(
    images: torch.Tensor, generator: torch.Generator, probability: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt each image of a batch (B, C, H, W) in [0, 1] with probability `probability`.

    Returns the corrupted batch and the masks (B, 1, H, W); uncorrupted images get empty masks.
    """
    count, _, height, width = images.shape
    cpu_images = images.detach().cpu()
    corrupted, masks = cpu_images.clone(), torch.zeros(count, 1, height, width)
    for i in range(count):
        if torch.rand(1, generator=generator) >= probability:
            continue
        mask = perlin_mask(height, width, generator)
        opacity = 0.5 + 0.5 * torch.rand(1, generator=generator)
        blend = opacity * mask
        corrupted[i] = cpu_images[i] * (1 - blend) + _fill(cpu_images, i, generator) * blend
        masks[i, 0] = mask
    return corrupted.to(images.device), masks.to(images.device)


def synthetic_anomaly_set(normals: ImageSet, seed: int) -> ImageSet:
    """A reproducible labelled set: one synthetic anomaly made from each normal image."""
    generator = torch.Generator().manual_seed(seed)
    tensors = torch.from_numpy(normals.images).permute(0, 3, 1, 2).float() / 255.0
    corrupted, masks = synthesize_anomalies(tensors, generator)
    images = (corrupted.permute(0, 2, 3, 1) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    count = len(normals)
    return ImageSet(
        images=images,
        labels=np.ones(count, dtype=np.int64),
        categories=["synthetic"] * count,
        names=[f"synthetic/{name}" for name in normals.names],
        masks=masks[:, 0].numpy() > 0.5,
    )
