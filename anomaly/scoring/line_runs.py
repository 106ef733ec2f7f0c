"""The largest mean of a score map along a straight run of positions: how an image's patch
distances become its distance when defects are thin and long (cracks, scratches).

A crack raises a long run of patch distances a little each; a normal image's highest patch
distances are isolated. Averaging along runs keeps the first and dilutes the second. The price: a
defect much shorter than the run is diluted, so pinpoint defects want a run of 1.

A `cap` bounds each position's contribution before the mean, so one very bright spot cannot make
a run on its own: a run then has to be raised along its length. Above the cap a position counts
as the cap plus the logarithm of its excess (log1p), not as the cap itself: a hard cap saturates,
so strong defects would all score the same and the calibrated p-value could not fall far below
the target. Clamp, ReLU, log1p and conv2d with fixed kernels: it exports to ONNX as it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ORIENTATIONS = 8  # every 22.5 degrees: a run at most 11.25 degrees off a line still follows it


def line_kernels(length: int, orientations: int = ORIENTATIONS) -> torch.Tensor:
    """(orientations, 1, length, length): each a straight run of `length` positions through the
    centre, weight 1 / length each. The run steps one position at a time along its major axis
    and rounds the other coordinate (Bresenham), so every orientation weighs exactly `length` positions."""
    kernels = torch.zeros(orientations, 1, length, length)
    centre = length // 2
    steps = torch.arange(length, dtype=torch.float64) - centre
    for index in range(orientations):
        angle = math.pi * index / orientations
        if abs(math.cos(angle)) >= abs(math.sin(angle)):
            rows, columns = centre + (steps * math.tan(angle)).round().long(), centre + steps.long()
        else:
            rows, columns = centre + steps.long(), centre + (steps / math.tan(angle)).round().long()
        kernels[index, 0, rows, columns] = 1.0 / length
    return kernels


class LineRunMaximum(nn.Module):
    """(B, 1, h, w) -> (B,): the largest mean over a straight run of `length` positions at any of
    ORIENTATIONS orientations; for length 1, the largest position. Runs that leave the map count
    the outside as 0, the normal level of a position-normalised map. With `cap`, a position above
    it counts as cap + log(1 + excess) in the mean."""

    def __init__(self, length: int = 1, cap: float | None = None) -> None:
        super().__init__()
        if length < 1 or length % 2 == 0:
            raise ValueError(f"a line run's length must be odd and at least 1, got {length}")
        if cap is not None and length == 1:
            raise ValueError("a cap on a run of 1 would cap the image's distance itself: cap runs longer than 1 only")
        self.length = length
        self.cap = cap
        # Not persistent: rebuilt from the length, so detector files stay as they were.
        self.register_buffer("kernels", line_kernels(length), persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if self.cap is not None:
            maps = maps.clamp(max=self.cap) + torch.log1p(torch.relu(maps - self.cap))
        if self.length > 1:
            maps = F.conv2d(maps, self.kernels, padding=self.length // 2)
        return maps.amax(dim=(1, 2, 3))
