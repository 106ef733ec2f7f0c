"""Distance of an image's latent code to the training codes: Mahalanobis or k-nearest neighbours."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn

from anomaly.config import ScoringConfig


class MahalanobisDistance(nn.Module):
    """sqrt((z - mean)^T P (z - mean)) with P the inverse of a Ledoit-Wolf shrunk covariance.

    With `blocks` > 1 the vector is that many equal parts, each with its own shrunk covariance
    (P block-diagonal): on MNIST the code plus its round-trip shift scored better this way than
    with one joint covariance, whose cross terms the training images do not pin down.
    """

    def __init__(self, dim: int, blocks: int = 1) -> None:
        super().__init__()
        if dim % blocks:
            raise ValueError(f"a {dim}-d vector does not split into {blocks} equal blocks")
        self.blocks = blocks
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("precision", torch.eye(dim))

    def fit(self, codes: np.ndarray) -> MahalanobisDistance:
        size = codes.shape[1] // self.blocks
        for start in range(0, codes.shape[1], size):
            part = slice(start, start + size)
            estimator = LedoitWolf().fit(codes[:, part].astype(np.float64))
            self.mean[part] = torch.from_numpy(estimator.location_).float()
            self.precision[part, :] = 0
            self.precision[part, part] = torch.from_numpy(estimator.precision_).float()
        return self

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        centred = codes - self.mean
        return ((centred @ self.precision) * centred).sum(dim=1).clamp_min(0).sqrt()


class NearestNeighbourDistance(nn.Module):
    """Mean Euclidean distance to the k nearest training codes (a seeded subsample of them)."""

    def __init__(self, dim: int, k: int, bank_size: int) -> None:
        super().__init__()
        self.k = k
        self.register_buffer("bank", torch.zeros(bank_size, dim))

    def fit(self, codes: np.ndarray, seed: int = 0) -> NearestNeighbourDistance:
        count = min(len(codes), self.bank.shape[0])
        chosen = np.sort(np.random.default_rng(seed).choice(len(codes), size=count, replace=False))
        self.bank = torch.from_numpy(codes[chosen]).float()
        return self

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        distances = torch.cdist(codes, self.bank)
        k = min(self.k, self.bank.shape[0])
        return distances.topk(k, dim=1, largest=False).values.mean(dim=1)


def build_latent_distance(config: ScoringConfig, code_size: int) -> nn.Module:
    """The distance for the latent vector of `config.latent_vector`, built from the model's code size."""
    blocks = 1 if config.latent_vector == "code" else 2
    if config.latent == "mahalanobis":
        return MahalanobisDistance(code_size * blocks, blocks)
    return NearestNeighbourDistance(code_size * blocks, config.knn_k, config.knn_bank_size)
