"""Per-image intensity standardisation, inside the graph: what every encoder that measures features reads."""

from __future__ import annotations

import torch


def _image_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over (C, H, W), one axis at a time. ONNX Runtime sums a single reduction over a large
    image in one float32 accumulator, far enough from PyTorch to fail export parity; row-by-row
    partial means keep every sum short."""
    return values.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True).mean(dim=1, keepdim=True)


def standardise_intensity(images: torch.Tensor) -> torch.Tensor:
    """Each image to mean 0.5 and standard deviation 0.15: a brighter or darker normal image then does not look
    unusual everywhere, to the patch bank or to the feature autoencoder."""
    centred = images - _image_mean(images)
    count = images[0].numel()
    std = (_image_mean(centred.square()) * (count / max(count - 1, 1))).sqrt()
    return centred / (std + 1e-6) * 0.15 + 0.5
