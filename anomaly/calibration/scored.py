"""Scores of a set of images, as NumPy arrays: what calibration and evaluation consume."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass
class ScoredSet:
    """Detector outputs over a set of images, as NumPy arrays."""

    reconstruction_scores: np.ndarray
    latent_distances: np.ndarray
    latents: np.ndarray
    maps: np.ndarray  # (N, H, W)
    labels: np.ndarray
    masks: np.ndarray  # (N, H, W) bool
    categories: list[str]
    names: list[str]
    # Each signal's map (N, H, W), kept while calibration mixes them into `maps` (the patch map: patches only).
    latent_maps: np.ndarray | None = None
    reconstruction_maps: np.ndarray | None = None
    patch_maps: np.ndarray | None = None  # (N, h, w): the latent map on the patch grid, before upsampling

    def with_mixed_maps(self, weights: tuple[float, float]) -> ScoredSet:
        """The set with `maps` remade as the detector's heat map is (AnomalyDetector.mix_maps): latent then
        reconstruction map, weighted; a weight of 0 drops its map."""
        parts = []
        for weight, maps in zip(weights, (self.latent_maps, self.reconstruction_maps)):
            if not weight:
                continue
            if maps is None:
                raise ValueError("mixing maps needs each signal's map: score the set with signal_maps")
            parts.append(weight * maps)
        return replace(self, maps=np.asarray(np.sum(parts, axis=0, dtype=np.float32)))

    @classmethod
    def of_normal_outputs(cls, outputs: dict[str, np.ndarray]) -> ScoredSet:
        """Normal images as an exported graph scored them (anomaly_map, latent_distance, reconstruction_score): what
        an ONNX model is calibrated on without torch. The graph's heat map is already the mixed one."""
        maps = outputs["anomaly_map"][:, 0]
        count = len(maps)
        return cls(
            reconstruction_scores=outputs["reconstruction_score"],
            latent_distances=outputs["latent_distance"],
            latents=np.zeros((count, 0), dtype=np.float32),  # the served graph has no latent vector output
            maps=maps,
            labels=np.zeros(count, dtype=np.int64),
            masks=np.zeros_like(maps, dtype=bool),
            categories=["good"] * count,
            names=[str(i) for i in range(count)],
        )

    @classmethod
    def concatenate(cls, parts: list[ScoredSet]) -> ScoredSet:
        """Sets scored separately (batches, or workers each scoring a share of the held-out images), in order: each
        image's scores and map depend on that image alone, so calibration fitted on the result is the one-pass one."""
        return cls(
            reconstruction_scores=np.concatenate([part.reconstruction_scores for part in parts]),
            latent_distances=np.concatenate([part.latent_distances for part in parts]),
            latents=np.concatenate([part.latents for part in parts]),
            maps=np.concatenate([part.maps for part in parts]),
            labels=np.concatenate([part.labels for part in parts]),
            masks=np.concatenate([part.masks for part in parts]),
            categories=[category for part in parts for category in part.categories],
            names=[name for part in parts for name in part.names],
            latent_maps=_concatenated([part.latent_maps for part in parts]),
            reconstruction_maps=_concatenated([part.reconstruction_maps for part in parts]),
            patch_maps=_concatenated([part.patch_maps for part in parts]),
        )


def _concatenated(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    present = [array for array in arrays if array is not None]
    return np.concatenate(present) if len(present) == len(arrays) else None
