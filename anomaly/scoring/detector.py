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
from torch import nn

from anomaly.config import Config, ModelConfig
from anomaly.errors import AnomalyError
from anomaly.models import build_model
from anomaly.models.blocks import encoder_channels
from anomaly.models.pretrained.backbones import BACKBONES
from anomaly.models.outputs import AutoencoderOutput
from anomaly.scoring.latent import build_latent_distance
from anomaly.scoring.maps import AnomalyMap, MapReduction


@dataclass
class DetectorOutput:
    reconstruction: torch.Tensor  # (B, C, H, W)
    latent: torch.Tensor  # (B, D): the image's latent vector (scoring.latent_vector)
    anomaly_map: torch.Tensor  # (B, 1, H, W): the heat map that scoring.heatmap names
    reconstruction_score: torch.Tensor  # (B,)
    latent_distance: torch.Tensor  # (B,)


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


def _image_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over (C, H, W), one axis at a time. ONNX Runtime sums a single reduction over a
    640 x 256 image in one float32 accumulator, which was off by 5e-5 against PyTorch and failed
    export parity; row-by-row partial means keep every sum short."""
    return values.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True).mean(dim=1, keepdim=True)


def standardise_intensity(images: torch.Tensor) -> torch.Tensor:
    """Each image to mean 0.5 and standard deviation 0.15: the range the encoder saw in training."""
    centred = images - _image_mean(images)
    count = images[0].numel()
    std = (_image_mean(centred.square()) * (count / max(count - 1, 1))).sqrt()
    return centred / (std + 1e-6) * 0.15 + 0.5


class AnomalyDetector(nn.Module):
    def __init__(self, config: Config, model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        data = config.data
        self.model = model if model is not None else build_model(config.model, data.channels, data.image_size)
        self.anomaly_map = AnomalyMap(config.scoring)
        self.reduce = MapReduction(config.scoring, data.image_size)
        scoring = config.scoring
        self.latent_distance = build_latent_distance(
            scoring,
            code_size=latent_size(self.model, data.channels, data.image_size),
            patch_channels=patch_channels(config.model, scoring.patch_level) if scoring.latent == "patch_knn" else 0,
            image_size=data.image_size,
        )

    def embed(self, images: torch.Tensor) -> tuple[AutoencoderOutput, torch.Tensor, torch.Tensor]:
        """The model's output, the image's latent vector, and what the latent distance is fitted on
        and measures: that vector, or for patch_knn the encoder's feature map at patch_level."""
        scoring = self.config.scoring
        if self.shares_backbone_pass:
            output, features = self.model.forward_with_patch_features(images, scoring.patch_level)
            return output, output.latent, self._with_intensity(features, images)
        output = self.model(images)
        latent = output.latent
        if scoring.latent_vector == "code_and_round_trip":
            latent = torch.cat((latent, latent - self.model.latent(output.reconstruction)), dim=1)
        if scoring.latent != "patch_knn":
            return output, latent, latent
        return output, latent, self.patch_features(images)

    @property
    def shares_backbone_pass(self) -> bool:
        """A pretrained encoder's patches read the same image as its autoencoder (no per-image standardisation
        first), so one backbone pass serves both: the backbone is most of the detector's cost."""
        scoring = self.config.scoring
        return self.config.model.pretrained and scoring.latent == "patch_knn" and not scoring.patch_standardise

    def measured_features(self, images: torch.Tensor) -> torch.Tensor:
        """embed's third part alone: for patch_knn only the encoder's first patch_level blocks run, not the
        whole autoencoder, which is all that fitting the latent distance on the training images needs."""
        return self.patch_features(images) if self.config.scoring.latent == "patch_knn" else self.embed(images)[2]

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the encoder's feature map at patch_level (plus the intensity channel if configured)."""
        scoring = self.config.scoring
        encoder_input = standardise_intensity(images) if scoring.patch_standardise else images
        if self.config.model.pretrained:
            features = self.model.patch_features(encoder_input, scoring.patch_level)
        else:
            features = encoder_input
            for block in self.model.encoder[: scoring.patch_level]:
                features = block(features)
        return self._with_intensity(features, encoder_input)

    def _with_intensity(self, features: torch.Tensor, encoder_input: torch.Tensor) -> torch.Tensor:
        """The patch features plus, if configured, each position's mean input intensity as one more channel."""
        scoring = self.config.scoring
        if scoring.patch_intensity_weight <= 0:
            return features
        intensity = F.avg_pool2d(encoder_input.mean(dim=1, keepdim=True), 2**scoring.patch_level)
        return torch.cat((features, intensity), dim=1)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        output, latent, measured = self.embed(images)
        error_map = self.anomaly_map(images, output.reconstruction, output.target)
        if self.config.scoring.heatmap == "patch_distance":
            patch_map = self.latent_distance.score_map(measured)  # computed once: the kNN search is the costly part
            latent_distance = self.latent_distance.image_distance(patch_map)
            heatmap = F.interpolate(patch_map, size=images.shape[-2:], mode="bilinear", align_corners=False)
        else:
            latent_distance = self.latent_distance(measured)
            heatmap = error_map
        return DetectorOutput(
            reconstruction=output.reconstruction,
            latent=latent,
            anomaly_map=heatmap,
            reconstruction_score=self.reduce(error_map),
            latent_distance=latent_distance,
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
    detector = AnomalyDetector(Config.model_validate(saved["config"]))
    if "latent_distance.bank" in saved["state_dict"]:  # the bank's size is the training set's
        detector.latent_distance.bank = torch.zeros_like(saved["state_dict"]["latent_distance.bank"])
    try:
        detector.load_state_dict(saved["state_dict"])
    except RuntimeError:  # missing, unexpected or resized tensors: the scoring head has changed since
        raise AnomalyError(
            f"detector file {path} was written by another version of anomaly; re-run `anomaly evaluate` to rewrite it"
        ) from None
    return detector.eval()
