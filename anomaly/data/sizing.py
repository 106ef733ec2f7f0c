"""`data.image_size: auto`: one default input size rule for folders of any native size.

Thin defects vanish when a large photo is shrunk too far, while training and patch scoring cost grow
with the pixel count, and a much larger input did not score better on validation (BENCHMARKS.md and
docs/configuration.md keep the measurements). So the input is the native size scaled down to a pixel
budget, aspect kept and never enlarged.
"""

from __future__ import annotations

import math

from anomaly.config import AUTO_SIZE, Config, build_config
from anomaly.data.sources import native_size


def auto_input_size(native: tuple[int, int], multiple: int, max_pixels: int) -> tuple[int, int]:
    """The native size scaled to about `max_pixels` (never enlarged), aspect kept, each side rounded to `multiple`."""
    scale = min(1.0, math.sqrt(max_pixels / (native[0] * native[1])))
    height, width = (max(multiple, int(side * scale / multiple + 0.5) * multiple) for side in native)
    return height, width


def resolve_image_size(config: Config) -> Config:
    """The config with `data.image_size: auto` replaced by the size the data calls for; others unchanged."""
    if config.data.image_size != AUTO_SIZE:
        return config
    size = auto_input_size(native_size(config.data), config.model.size_multiple, config.data.max_input_pixels)
    return build_config(config.model_dump(mode="json"), [f"data.image_size=[{size[0]}, {size[1]}]"])
