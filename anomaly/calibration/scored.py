"""Scores of a set of images, as NumPy arrays: what calibration and evaluation consume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ScoredSet:
    """Detector outputs over a set of images, as NumPy arrays."""

    reconstruction_scores: np.ndarray | None  # None from a graph that does not compute the reconstruction
    latent_distances: np.ndarray
    latents: np.ndarray
    maps: np.ndarray  # (N, H, W)
    labels: np.ndarray
    masks: np.ndarray  # (N, H, W) bool
    categories: list[str]
    names: list[str]
