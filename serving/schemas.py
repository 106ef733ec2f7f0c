"""The service's JSON contracts (pydantic): what clients get back, and what OpenAPI documents."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelIdentity(BaseModel):
    name: str = Field(description="Registered model name, or the model directory's name.")
    version: str | None = Field(description="Registry version; null for a plain model directory.")
    model_checksum: str = Field(description="Checksum of the weights; changes with every trained model.")


class ImageScore(BaseModel):
    filename: str | None
    image_height: int = Field(
        description="The uploaded image's height in pixels, before resizing to the model's input."
    )
    image_width: int = Field(description="The uploaded image's width in pixels.")
    reconstruction_score: float = Field(
        description=("The reconstruction error's image score (the mean of its highest pixels).")
    )
    latent_distance: float = Field(
        description="Distance of the image's code, or of its patches, to the training images'."
    )
    p_reconstruction: float = Field(
        ge=0, le=1, description=("p-value of the reconstruction score among held-out normal images.")
    )
    p_latent: float = Field(ge=0, le=1, description="p-value of the latent distance among held-out normal images.")
    p_combined: float = Field(ge=0, le=1, description="p-value of both signals combined.")
    anomaly_score: float = Field(ge=0, le=1, description="1 - p_combined.")
    is_anomaly: bool = Field(description="p_combined < target_fpr.")
    target_fpr: float = Field(description="False-positive rate the decision was made at.")
    threshold: float = Field(description="anomaly_score above which an image is flagged: 1 - target_fpr.")
    warning: str | None = Field(
        None,
        description=(
            "Set when target_fpr is below what the calibration can resolve (/model's calibration.promise): the "
            "decision is made, but the realised rate can be several times the target."
        ),
    )
    heatmap_png_base64: str | None = Field(
        None,
        description=(
            "With heatmap=true: the anomaly map as a PNG, over the image at the model's input size "
            "(heatmap_size=input) or alone with its opacity in alpha at the upload's size (heatmap_size=original). "
            "Yellow at the pixel threshold for the request's target_fpr, red at twice it."
        ),
    )


class ScoreResponse(ImageScore):
    model: ModelIdentity
    time_ms: float = Field(description="Server time for this request, decoding included.")


class BatchScoreResponse(BaseModel):
    results: list[ImageScore] = Field(description="One result per uploaded image, in upload order.")
    model: ModelIdentity
    time_ms: float


class InputSpec(BaseModel):
    channels: int
    height: int
    width: int
    formats: list[str]
    max_image_pixels: int
    max_body_bytes: int
    max_batch_images: int
    colour_handling: str


class CalibrationSummary(BaseModel):
    target_fpr: float
    target_fpr_bounds: tuple[float, float]
    combine: str
    sample_sizes: dict[str, int]
    thresholds: dict[str, float]
    f1_optimal_score: float | None
    holdout: str | None = Field(description="How the calibration normals were held out.")
    promise: dict[str, Any] = Field(
        description=(
            "At the default target: how many normal images the decision rests on, and the range of realised "
            "false-positive rates (95%) they support; warning when the target is below what they can resolve."
        )
    )
    recalibration: dict[str, Any] | None = Field(
        description="Set when `anomaly calibrate` refitted the exported calibration."
    )


class Monitoring(BaseModel):
    """The answering API worker's sliding window of served p-values (serving.monitor); /metrics has every worker's."""

    window_images: int
    flagged_share: float = Field(description="Share of the window flagged at the calibrated target.")
    target_fpr: float
    flagged_test_p: float = Field(description="One-sided binomial test p-value: flagged share above the target.")
    uniformity_test_p: float = Field(
        description="Kolmogorov-Smirnov p-value: the normal-looking p-values are still uniform."
    )
    alarm: bool = Field(description="Either test below alarm_p, with at least min_images in the window.")
    window: int
    min_images: int
    alarm_p: float


class ModelDescription(BaseModel):
    model: ModelIdentity
    reference: str = Field(description="What the service was started with (a directory or models:/NAME@ALIAS).")
    training_run: str | None
    dataset: str | None
    architecture: str | None
    input: InputSpec
    calibration: CalibrationSummary
    adaptive_batching: bool
    monitoring: Monitoring
    test_metrics: dict[str, float] = Field(
        description="Measured on the test images before export (image_auroc, pixel_auroc, ...); empty for models "
        "exported before they were recorded."
    )


class ErrorResponse(BaseModel):
    error: str
    detail: Any | None = None
