"""The anomaly map as a PNG overlay (NumPy + Pillow only, so the service needs no matplotlib).

Colour encodes the map relative to the calibrated pixel threshold: transparent far below it,
yellow at it, red at twice it and above. So the same colour means the same evidence on every
image, instead of each image being stretched to its own maximum.
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


def overlay(image: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """uint8 (H, W, C) image and (H, W) map -> uint8 (H, W, 3) blended overlay."""
    base = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    ratio = np.clip(anomaly_map / max(pixel_threshold, 1e-12), 0.0, ANCHORS[-1])
    colour = np.stack([np.interp(ratio, ANCHORS, COLOURS[:, c]) for c in range(3)], axis=-1)
    alpha = np.interp(ratio, ANCHORS, OPACITY)[..., None]
    return np.round(base * (1.0 - alpha) + colour * alpha).astype(np.uint8)


def overlay_png_base64(image: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float) -> str:
    buffer = io.BytesIO()
    Image.fromarray(overlay(image, anomaly_map, pixel_threshold)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
