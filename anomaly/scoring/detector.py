"""AnomalyDetector: the trained autoencoder plus its scoring head, as one nn.Module.

Evaluation runs this module and export traces this module, so what is served is what was
evaluated. It stops at raw scores: p-values and decisions live in anomaly.calibration (NumPy).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from anomaly.config import Config, ModelConfig, PatchDistance, upgrade_stored_config
from anomaly.errors import AnomalyError
from anomaly.models import build_model
from anomaly.models.blocks import encoder_channels
from anomaly.models.intensity import standardise_intensity
from anomaly.models.outputs import AutoencoderOutput
from anomaly.models.pretrained.backbones import BACKBONES
from anomaly.runtime.bundle import SERVED_OUTPUTS
from anomaly.scoring.latent import build_latent_distance
from anomaly.scoring.maps import AnomalyMap, MapReduction


@dataclass
class DetectorOutput:
    reconstruction: torch.Tensor  # (B, C, H, W)
    latent: torch.Tensor  # (B, D): the image's latent vector (with its round-trip shift when configured)
    anomaly_map: torch.Tensor  # (B, 1, H, W): the heat map: the maps that the decision reads, mixed (mix_maps)
    reconstruction_score: torch.Tensor  # (B,)
    latent_distance: torch.Tensor  # (B,)
    latent_map: torch.Tensor | None  # (B, 1, H, W): the patch distance map (patches only)
    patch_map: torch.Tensor | None  # (B, 1, h, w): the same on the patch grid, what the image's distance reads
    reconstruction_map: torch.Tensor  # (B, 1, H, W): the reconstruction error map


@torch.no_grad()
def latent_size(model: nn.Module, channels: int, image_size: tuple[int, int]) -> int:
    was_training = model.training
    model.eval()
    size = model(torch.zeros(1, channels, *image_size)).latent.shape[1]
    model.train(was_training)
    return int(size)


def patch_channels(config: ModelConfig, level: int) -> int:
    """Channels of the patch features at `level`: the own encoder's block there, or a pretrained encoder's level
    and the next one together (FeatureAutoencoder.patch_features)."""
    if config.pretrained:
        channels = BACKBONES[config.encoder].channels
        return channels[level] + channels[level + 1]
    return encoder_channels(config)[level - 1]


class AnomalyDetector(nn.Module):
    def __init__(self, config: Config, model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        data, scoring = config.data, config.scoring
        self.model = model if model is not None else build_model(config.model, data.channels, data.image_size)
        self.anomaly_map = AnomalyMap(scoring.reconstruction)
        self.reduce = MapReduction(scoring.reconstruction, data.image_size)
        self.latent_distance = build_latent_distance(
            scoring,
            code_size=latent_size(self.model, data.channels, data.image_size),
            patch_channels=patch_channels(config.model, scoring.patches.level) if scoring.patches else 0,
            image_size=data.image_size,
        )
        # The heat map's mix of the latent and reconstruction maps (mix_maps); until calibration, the patch map alone.
        self.register_buffer("map_weights", torch.tensor([1.0, 0.0] if scoring.patches else [0.0, 1.0]))

    def embed(self, images: torch.Tensor) -> tuple[AutoencoderOutput, torch.Tensor, torch.Tensor]:
        """The model's output, the image's latent vector, and what the latent distance is fitted on
        and measures: that vector, or for patches the encoder's feature map at the patch level. A pretrained
        encoder runs once for both: the autoencoder and the patches read the same backbone maps."""
        if self.config.model.pretrained:
            maps = self.model.backbone_maps(images)
            output = self.model.reconstruct(maps)
            measured = (
                output.latent if self.patches is None else self.model.patch_features_from(maps, self.patches.level)
            )
            return output, output.latent, measured
        output = self.model(images)
        latent = output.latent
        if getattr(self.config.scoring.latent, "round_trip", False):
            latent = torch.cat((latent, latent - self.model.latent(output.reconstruction)), dim=1)
        if self.patches is None:
            return output, latent, latent
        return output, latent, self.patch_features(images)

    def measured_features(self, images: torch.Tensor) -> torch.Tensor:
        """embed's third part alone: for patches only the encoder's first blocks run, not the whole
        autoencoder, which is all that fitting the latent distance on the training images needs."""
        return self.patch_features(images) if self.patches else self.embed(images)[2]

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the encoder's feature map at the patch level, read from intensity-standardised images
        so that a brighter or darker normal image does not look unusual everywhere."""
        if self.config.model.pretrained:
            return self.model.patch_features(images, self.patches.level)
        features = standardise_intensity(images)
        for block in self.model.encoder[: self.patches.level]:
            features = block(features)
        return features

    @property
    def patches(self) -> PatchDistance | None:
        """The patch distance's settings, read from the config, which fitting rewrites with its resolved choices."""
        return self.config.scoring.patches

    @property
    def served_outputs(self) -> tuple[str, ...]:
        return SERVED_OUTPUTS

    def mix_maps(self, combine: str, scales: tuple[float, float]) -> None:
        """Make the heat map show what the decision reads (`combine`): the latent distance map, the reconstruction
        error map, or both, each divided by its spread on held-out normals (`scales`, latent first) so they count
        alike."""
        if (
            self.patches is None
        ):  # the whole image's code has no map: the reconstruction error is the heat map, as it is
            self.map_weights = torch.tensor([0.0, 1.0])
            return
        used = {"latent": (1.0, 0.0), "reconstruction": (0.0, 1.0), "fisher": (1.0, 1.0)}[combine]
        self.map_weights = torch.tensor([u / max(scale, 1e-12) for u, scale in zip(used, scales)])

    def serve(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The served_outputs: the exported graph."""
        output = self(images)
        return tuple(getattr(output, name) for name in self.served_outputs)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        output, latent, measured = self.embed(images)
        error_map = self.anomaly_map(images, output.reconstruction, output.target)
        latent_map = patch_map = None
        if self.patches:  # the patch distance map, computed once: the kNN search is the costly part
            patch_map = self.latent_distance.score_map(measured)
            latent_distance = self.latent_distance.image_distance(patch_map)
            latent_map = F.interpolate(patch_map, size=images.shape[-2:], mode="bilinear", align_corners=False)
            heatmap = self.map_weights[0] * latent_map + self.map_weights[1] * error_map
        else:
            latent_distance = self.latent_distance(measured)
            heatmap = error_map
        return DetectorOutput(
            reconstruction=output.reconstruction,
            latent=latent,
            anomaly_map=heatmap,
            reconstruction_score=self.reduce(error_map),
            latent_distance=latent_distance,
            latent_map=latent_map,
            patch_map=patch_map,
            reconstruction_map=error_map,
        )


def weights_checksum(module: nn.Module) -> str:
    """sha256 over every parameter and buffer, by name: identifies the exact weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def encoder_checksum(detector: AnomalyDetector) -> str | None:
    """The sha256 of a pretrained encoder's weights file, as loaded for training; None for the own encoder."""
    return detector.model.backbone.weights_checksum() if detector.config.model.pretrained else None


def save_detector(detector: AnomalyDetector, path: Path) -> None:
    torch.save({"config": detector.config.model_dump(mode="json"), "state_dict": detector.state_dict()}, path)


def load_detector(path: Path) -> AnomalyDetector:
    if not path.is_file():
        raise AnomalyError(f"detector file not found: {path}")
    try:
        saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise AnomalyError(f"cannot read detector file {path}: {type(error).__name__}") from None
    try:
        config = Config.model_validate(upgrade_stored_config(saved["config"]))
    except ValidationError:
        raise AnomalyError(
            f"detector file {path} was written by another version of anomaly; re-run `anomaly evaluate` to rewrite it"
        ) from None
    detector = AnomalyDetector(config)
    if "latent_distance.bank" in saved["state_dict"]:  # the bank's size is the training set's
        detector.latent_distance.bank = torch.zeros_like(saved["state_dict"]["latent_distance.bank"])
    try:
        detector.load_state_dict(saved["state_dict"])
    except RuntimeError:  # missing, unexpected or resized tensors: the scoring head has changed since
        raise AnomalyError(
            f"detector file {path} was written by another version of anomaly; re-run `anomaly evaluate` to rewrite it"
        ) from None
    return detector.eval()
