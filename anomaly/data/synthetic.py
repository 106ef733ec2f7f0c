"""Synthetic anomalies, with their masks: Perlin-noise blobs filled with foreign content, thin
wandering lines a little darker or brighter than the surface (scratches, cracks), and large smooth
regions darker or brighter with their texture kept (dead areas, stains, uneven lighting).

Used two ways: to corrupt inputs during training (so a U-Net cannot learn the identity through
its skips; blobs only) and to build a labelled validation set when only normal images exist
(every shape). Blobs alone mislead that validation: it preferred settings, such as blurring the
heat map, that help large blobs and hurt thin cracks. The blob fill comes from the images
themselves (shifted, possibly inverted texture of another image), from noise, or is a flat
patch: nothing is downloaded. Shaded regions keep the surface's own texture, so a detector that
discards intensity (per-image standardisation) cannot see them: validation then says so.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.data.imageset import ImageSet

PERLIN_SCALES = (1, 2, 4, 8)
MASK_THRESHOLD = 0.5
MIN_MASK_FRACTION = 0.005
LINE_LENGTH = (0.2, 0.8)  # fraction of the image's short side
LINE_STEP = 0.5  # pixels between the points drawn along a line, so it has no gaps
LINE_TURN = 0.1  # sd of the heading's change per step, radians: gently wandering, like a crack
LINE_RADII = (0, 1)  # half-width in pixels at a REFERENCE_SIDE short side: lines 1 or 3 pixels wide
LINE_CONTRAST = (0.1, 0.4)  # intensity step on the [0, 1] scale: faint to clearly visible
REFERENCE_SIDE = 256
SHADE_SCALES = (1, 2)  # Perlin lattice cells of a shaded region: large and smooth
SHADE_GAIN = (0.25, 0.6)  # fraction of the way to black (darker) or white (brighter)
SHADE_EDGE = 9  # pixels over which a shaded region fades in, at a REFERENCE_SIDE short side

AnomalyShape = Literal["blob", "line", "shade"]
SHAPES: tuple[AnomalyShape, ...] = ("blob", "line", "shade")


def _reference_scale(height: int, width: int) -> int:
    """How many times a REFERENCE_SIDE short side fits in this image's, at least 1: widths given in
    pixels at that side grow with the image, so a line or an edge looks the same at any size."""
    return max(1, round(min(height, width) / REFERENCE_SIDE))


def _uniform(bounds: tuple[float, float], generator: torch.Generator) -> float:
    low, high = bounds
    return low + (high - low) * float(torch.rand(1, generator=generator))


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


def perlin_mask(
    height: int, width: int, generator: torch.Generator, scales: tuple[int, ...] = PERLIN_SCALES, tries: int = 10
) -> torch.Tensor:
    """A binary blob mask (H, W) covering at least MIN_MASK_FRACTION of the image when possible."""
    mask = torch.zeros(height, width)
    for _ in range(tries):
        res_y, res_x = (scales[int(i)] for i in torch.randint(len(scales), (2,), generator=generator))
        mask = (perlin_noise(height, width, res_y, res_x, generator) > MASK_THRESHOLD).float()
        if mask.mean() >= MIN_MASK_FRACTION:
            break
    return mask


def line_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A binary mask (H, W) of one thin line that wanders from a random point both ways."""
    short_side = min(height, width)
    half_steps = max(1, int(_uniform(LINE_LENGTH, generator) * short_side / (2 * LINE_STEP)))
    centre = torch.rand(2, generator=generator) * torch.tensor([height, width], dtype=torch.float32)
    heading = 2 * math.pi * float(torch.rand(1, generator=generator))
    points = [centre]
    for direction in (heading, heading + math.pi):
        headings = direction + torch.cumsum(LINE_TURN * torch.randn(half_steps, generator=generator), dim=0)
        steps = LINE_STEP * torch.stack((torch.sin(headings), torch.cos(headings)), dim=1)
        points.append(centre + torch.cumsum(steps, dim=0))
    ys, xs = torch.cat([point.reshape(-1, 2) for point in points]).floor().long().unbind(dim=1)
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    mask = torch.zeros(height, width)
    mask[ys[inside], xs[inside]] = 1.0
    radius = LINE_RADII[int(torch.randint(len(LINE_RADII), (1,), generator=generator))] * _reference_scale(
        height, width
    )
    if radius:
        mask = F.max_pool2d(mask[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]
    return mask


def _draw_line(image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`image` (C, H, W) with a line a little darker or brighter, its edges softened; and its mask."""
    mask = line_mask(image.shape[1], image.shape[2], generator)
    contrast = _uniform(LINE_CONTRAST, generator) * (1 if torch.rand(1, generator=generator) < 0.5 else -1)
    profile = F.avg_pool2d(mask[None, None], 3, stride=1, padding=1, count_include_pad=False)[0].clamp(max=1.0)
    return (image + contrast * torch.maximum(profile, mask)).clamp(0.0, 1.0), mask


def _shade(image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`image` (C, H, W) with a large smooth region moved towards black or white, texture kept; and its mask."""
    _, height, width = image.shape
    mask = perlin_mask(height, width, generator, scales=SHADE_SCALES)
    edge = 2 * (SHADE_EDGE * _reference_scale(height, width) // 2) + 1
    soft = F.avg_pool2d(mask[None, None], edge, stride=1, padding=edge // 2, count_include_pad=False)[0]
    gain = _uniform(SHADE_GAIN, generator) * soft
    target = 0.0 if torch.rand(1, generator=generator) < 0.5 else 1.0
    return image * (1 - gain) + target * gain, mask


def _fill(images: torch.Tensor, index: int, generator: torch.Generator) -> torch.Tensor:
    """Foreign content for image `index`: another image's shifted texture, noise, or a flat patch."""
    count, channels, height, width = images.shape
    kind = int(torch.randint(3, (1,), generator=generator))
    if kind == 0:
        donor = images[int(torch.randint(count, (1,), generator=generator))]
        shift = (
            int(torch.randint(height, (1,), generator=generator)),
            int(torch.randint(width, (1,), generator=generator)),
        )
        texture = torch.roll(donor, shifts=shift, dims=(1, 2))
        return 1 - texture if torch.rand(1, generator=generator) < 0.5 else texture
    if kind == 1:
        return torch.rand(channels, height, width, generator=generator)
    return torch.rand(channels, 1, 1, generator=generator).expand(channels, height, width)


def _draw_blob(images: torch.Tensor, index: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Image `index` of `images` with a Perlin blob of foreign content blended in; and its mask."""
    _, _, height, width = images.shape
    mask = perlin_mask(height, width, generator)
    blend = (0.5 + 0.5 * torch.rand(1, generator=generator)) * mask
    return images[index] * (1 - blend) + _fill(images, index, generator) * blend, mask


def synthesize_anomalies(
    images: torch.Tensor, generator: torch.Generator, probability: float = 1.0, shape: AnomalyShape = "blob"
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
        if shape == "line":
            corrupted[i], masks[i, 0] = _draw_line(cpu_images[i], generator)
        elif shape == "shade":
            corrupted[i], masks[i, 0] = _shade(cpu_images[i], generator)
        else:
            corrupted[i], masks[i, 0] = _draw_blob(cpu_images, i, generator)
    return corrupted.to(images.device), masks.to(images.device)


def synthetic_anomaly_set(normals: ImageSet, seed: int) -> ImageSet:
    """A reproducible labelled set: from each normal image, one anomaly of each shape (all blobs
    first, category `synthetic_blob`, then all lines, `synthetic_line`, then `synthetic_shade`)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = torch.from_numpy(normals.images).permute(0, 3, 1, 2).float() / 255.0
    corrupted, masks = zip(*(synthesize_anomalies(tensors, generator, shape=shape) for shape in SHAPES))
    images = (torch.cat(corrupted).permute(0, 2, 3, 1) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    return ImageSet(
        images=images,
        labels=np.ones(len(images), dtype=np.int64),
        categories=[f"synthetic_{shape}" for shape in SHAPES for _ in normals.names],
        names=[f"synthetic/{shape}/{name}" for shape in SHAPES for name in normals.names],
        masks=torch.cat(masks)[:, 0].numpy() > 0.5,
    )
