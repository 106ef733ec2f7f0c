"""The anomaly map as a PNG overlay (NumPy + Pillow only, so the service needs no matplotlib).

Colour encodes the map relative to the calibrated pixel threshold: transparent far below it,
yellow at it, red at twice it and above. So the same colour means the same evidence on every
image, instead of each image being stretched to its own maximum. Drawn either over the model's
input image, or alone (RGBA) at the upload's own size, for a page to lay over the upload.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# Anchor colours (RGB) and opacities at map / threshold = 0, 0.5, 1, 2.
ANCHORS = np.array([0.0, 0.5, 1.0, 2.0])
COLOURS = np.array([[0, 0, 255], [0, 200, 255], [255, 230, 0], [255, 0, 0]], dtype=np.float64)
OPACITY = np.array([0.0, 0.25, 0.6, 0.75])


# The most pixels a heat map at the upload's own size has; larger uploads get it scaled down, aspect kept.
MAX_ORIGINAL_PIXELS = 4_000_000


def colour_and_opacity(anomaly_map: np.ndarray, pixel_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) map -> colour (H, W, 3) and opacity (H, W, 1) in [0, 1], both from map / threshold."""
    ratio = np.clip(anomaly_map / max(pixel_threshold, 1e-12), 0.0, ANCHORS[-1])
    colour = np.stack([np.interp(ratio, ANCHORS, COLOURS[:, c]) for c in range(3)], axis=-1)
    return colour, np.interp(ratio, ANCHORS, OPACITY)[..., None]


def overlay(image: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """uint8 (H, W, C) image and (H, W) map -> uint8 (H, W, 3) blended overlay."""
    base = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    colour, alpha = colour_and_opacity(anomaly_map, pixel_threshold)
    return np.round(base * (1.0 - alpha) + colour * alpha).astype(np.uint8)


def original_size_for_map(height: int, width: int) -> tuple[int, int]:
    """The upload's (height, width), scaled down to at most MAX_ORIGINAL_PIXELS with its aspect kept."""
    scale = min(1.0, (MAX_ORIGINAL_PIXELS / (height * width)) ** 0.5)
    return max(1, round(height * scale)), max(1, round(width * scale))


def map_layer(anomaly_map: np.ndarray, pixel_threshold: float, size: tuple[int, int]) -> np.ndarray:
    """(h, w) map -> uint8 RGBA (H, W, 4) at `size` (H, W): the map upsampled bilinearly, coloured as the overlay,
    its opacity in the alpha channel, to lay over the uploaded image as it is."""
    upsampled = Image.fromarray(anomaly_map.astype(np.float32), mode="F").resize(
        (size[1], size[0]), Image.Resampling.BILINEAR
    )
    colour, alpha = colour_and_opacity(np.asarray(upsampled), pixel_threshold)
    return np.round(np.concatenate([colour, alpha * 255.0], axis=-1)).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(pixels: np.ndarray) -> str:
    return base64.b64encode(png_bytes(pixels)).decode("ascii")


def overlay_png_base64(image: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float) -> str:
    return png_base64(overlay(image, anomaly_map, pixel_threshold))
