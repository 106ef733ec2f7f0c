"""What passes between the two processes of the service, and how results are built from it.

The model server owns the ONNX session; the API server decodes uploads, turns the graph's
scores into p-values and decisions with the calibration it received from the model server
(so both always talk about the same model), and draws heat maps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from anomaly.calibration.artifact import Calibration
from anomaly.imageio import IMAGE_SUFFIXES
from anomaly.runtime.bundle import (
    META_ARCHITECTURE,
    META_DATASET,
    META_MODEL_CHECKSUM,
    META_TEST_METRICS,
    META_TRAINING_RUN,
    SCORE_NAMES,
    OnnxDetector,
    image_results,
)
from anomaly.runtime.heatmap import map_layer, original_size_for_map, overlay_png_base64, png_base64
from anomaly.runtime.resolve import ResolvedModel
from serving.monitor import MonitorState
from serving.schemas import CalibrationSummary, ImageScore, InputSpec, ModelDescription, ModelIdentity, Monitoring
from serving.settings import MAX_TARGET_FPR, MIN_TARGET_FPR, ServingSettings

HeatmapSize = Literal["input", "original"]


@dataclass(frozen=True)
class DecodedUpload:
    """An upload's pixels at the model's input size, with what the result reports of the upload itself."""

    pixels: np.ndarray  # uint8 (H, W, C)
    filename: str | None
    original_size: tuple[int, int]  # (height, width) as uploaded


def pack_outputs(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """One float32 row per image, so BentoML's batching can split a batch's answer by rows: the graph's scores in
    SCORE_NAMES order, then the flattened anomaly map. Maps travel only when the outputs hold them (heat-map
    requests): they are most of the bytes."""
    columns = [np.stack([outputs[name] for name in SCORE_NAMES], axis=1)]
    if "anomaly_map" in outputs:
        columns.append(outputs["anomaly_map"].reshape(len(outputs["anomaly_map"]), -1))
    return np.concatenate(columns, axis=1).astype(np.float32)


def unpack_outputs(packed: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """-> reconstruction scores (N,), latent distances (N,), anomaly maps (N, H, W) or None."""
    columns = len(SCORE_NAMES)
    scores = {name: packed[:, i] for i, name in enumerate(SCORE_NAMES)}
    maps = packed[:, columns:].reshape(len(packed), *image_size) if packed.shape[1] > columns else None
    return scores["reconstruction_score"], scores["latent_distance"], maps


def describe_loaded(resolved: ResolvedModel, detector: OnnxDetector) -> dict[str, Any]:
    """What the model server tells the API server: identity, ONNX metadata and the calibration."""
    return {
        "reference": resolved.reference,
        "name": resolved.name,
        "version": resolved.version,
        "metadata": detector.metadata,
        "score_names": list(detector.score_names),
        "calibration": detector.calibration.to_dict(),
    }


@dataclass(frozen=True)
class ModelView:
    """The API server's view of the loaded model."""

    reference: str
    identity: ModelIdentity
    metadata: dict[str, str]
    calibration: Calibration
    score_names: tuple[str, ...]  # the scores the graph computes, in the order the model server packs them

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> ModelView:
        metadata = description["metadata"]
        checksum = metadata[META_MODEL_CHECKSUM]
        calibration = Calibration.from_dict(description["calibration"], "calibration from the model server", checksum)
        identity = ModelIdentity(name=description["name"], version=description["version"], model_checksum=checksum)
        return cls(description["reference"], identity, metadata, calibration, tuple(description["score_names"]))

    @property
    def image_size(self) -> tuple[int, int]:
        height, width = self.calibration.preprocessing["image_size"]
        return int(height), int(width)

    @property
    def channels(self) -> int:
        return int(self.calibration.preprocessing["channels"])

    def score(
        self, uploads: list[DecodedUpload], packed: np.ndarray, target_fpr: float | None, heatmap: HeatmapSize | None
    ) -> list[ImageScore]:
        reconstruction, latent, maps = unpack_outputs(packed, self.image_size)
        results = image_results(self.calibration, reconstruction, latent, target_fpr)
        heatmaps: list[str | None] = [None] * len(results)
        if heatmap is not None and maps is not None:
            heatmaps = [
                self.heatmap(upload, anomaly_map, target_fpr, heatmap) for upload, anomaly_map in zip(uploads, maps)
            ]
        return [
            ImageScore(
                filename=upload.filename,
                image_height=upload.original_size[0],
                image_width=upload.original_size[1],
                **result.to_dict(),
                heatmap_png_base64=drawn,
            )
            for upload, result, drawn in zip(uploads, results, heatmaps)
        ]

    def heatmap(
        self, upload: DecodedUpload, anomaly_map: np.ndarray, target_fpr: float | None, size: HeatmapSize
    ) -> str:
        """The map over the model's input image, or alone at the upload's size: base64 PNG, coloured against the
        pixel threshold at `target_fpr` (the calibrated rate when None)."""
        threshold = self.calibration.pixel_threshold(target_fpr)
        if size == "input":
            return overlay_png_base64(upload.pixels, anomaly_map, threshold)
        return png_base64(map_layer(anomaly_map, threshold, original_size_for_map(*upload.original_size)))

    def describe(self, settings: ServingSettings, monitoring: MonitorState) -> ModelDescription:
        calibration = self.calibration
        height, width = self.image_size
        return ModelDescription(
            model=self.identity,
            reference=self.reference,
            training_run=self.metadata.get(META_TRAINING_RUN) or None,
            dataset=self.metadata.get(META_DATASET) or None,
            architecture=self.metadata.get(META_ARCHITECTURE) or None,
            input=InputSpec(
                channels=self.channels,
                height=height,
                width=width,
                formats=sorted(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES),
                max_image_pixels=settings.max_image_pixels,
                max_body_bytes=settings.max_body_bytes,
                max_batch_images=settings.max_batch_images,
                colour_handling=(
                    f"any mode is converted to {'grayscale' if self.channels == 1 else 'RGB'} "
                    "(alpha dropped, 16-bit scaled to 8-bit) and resized bilinearly to the input size"
                ),
            ),
            calibration=CalibrationSummary(
                target_fpr=calibration.target_fpr,
                target_fpr_bounds=(MIN_TARGET_FPR, MAX_TARGET_FPR),
                combine=calibration.combine_method,
                sample_sizes=calibration.sample_sizes,
                thresholds=calibration.thresholds(),
                f1_optimal_score=calibration.f1_optimal_score,
                holdout=calibration.holdout,
                promise=calibration.promise().to_dict(),
                recalibration=calibration.recalibration,
            ),
            adaptive_batching=settings.adaptive_batching,
            monitoring=Monitoring(**monitoring.to_dict()),
            test_metrics=json.loads(self.metadata.get(META_TEST_METRICS) or "{}"),
        )
