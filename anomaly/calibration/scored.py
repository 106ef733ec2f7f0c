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

    @classmethod
    def concatenate(cls, parts: list[ScoredSet]) -> ScoredSet:
        """Sets scored separately (batches, or workers each scoring a share of the held-out images), in order: each
        image's scores and map depend on that image alone, so calibration fitted on the result is the one-pass one."""
        reconstruction = [part.reconstruction_scores for part in parts]
        return cls(
            reconstruction_scores=None if any(scores is None for scores in reconstruction) else np.concatenate(reconstruction),
            latent_distances=np.concatenate([part.latent_distances for part in parts]),
            latents=np.concatenate([part.latents for part in parts]),
            maps=np.concatenate([part.maps for part in parts]),
            labels=np.concatenate([part.labels for part in parts]),
            masks=np.concatenate([part.masks for part in parts]),
            categories=[category for part in parts for category in part.categories],
            names=[name for part in parts for name in part.names],
        )
