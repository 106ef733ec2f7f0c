"""A self-contained model directory, loaded and run with ONNX Runtime only (no torch).

Layout: model.onnx, calibration.json, model_card.md (files may also sit under extra_files/,
where MLflow's ONNX flavour puts them). The ONNX metadata records the sha256 of the
calibration file and the checksum of the weights, so a mismatched pair is refused. A calibration
that `anomaly calibrate` refitted names the exported one's sha256 instead, and must carry the same
weights' checksum: the graph is never rewritten to recalibrate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.calibration.artifact import Calibration
from anomaly.errors import AnomalyError
from anomaly.imageio import decode_image

MODEL_FILE = "model.onnx"
CALIBRATION_FILE = "calibration.json"
CARD_FILE = "model_card.md"
INPUT_NAME = "image"
META_CALIBRATION_SHA256 = "anomaly.calibration_sha256"
META_MODEL_CHECKSUM = "anomaly.model_checksum"
META_ARCHITECTURE = "anomaly.architecture"
META_ENCODER = "anomaly.encoder"  # own, or a pretrained encoder's name and the sha256 of its weights file
META_INPUT = "anomaly.input"
META_TRAINING_RUN = "anomaly.training_run"
META_DATASET = "anomaly.dataset"
META_TEST_METRICS = "anomaly.test_metrics"  # JSON: image AUROC and the others measured on the test images before export


def sha256_file(path: Path) -> str:
    """Read in 1 MiB blocks: a model or weights file may be far larger than what is worth holding at once."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / "extra_files" / name):
        if candidate.is_file():
            return candidate
    return None


def create_session(model_path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for damaged files
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise AnomalyError(f"cannot load ONNX model {model_path}: {reason}") from None


SCORE_NAMES = ("reconstruction_score", "latent_distance")
# The exported graph's outputs: both signals' scores and the heat map of the combination the decision reads.
SERVED_OUTPUTS = ("anomaly_map", "latent_distance", "reconstruction_score")


# Pixels per ONNX Runtime call. A patch-kNN head's distance chunk grows with the feature positions,
# so a fixed image count would exhaust memory at large inputs (64 images at 640 x 256: 11 GB per chunk).
PIXELS_PER_BATCH = 64 * 128 * 128
MAX_BATCH = 64


def batch_size_for(height: int, width: int) -> int:
    """Images per call at this input size: up to 64, fewer for large images (about 1 GB per kNN chunk)."""
    return max(1, min(MAX_BATCH, PIXELS_PER_BATCH // (height * width)))


def output_names(session: Any) -> tuple[str, ...]:
    """The graph's outputs: anomaly_map, latent_distance and reconstruction_score."""
    return tuple(output.name for output in session.get_outputs())


def run_session(
    session: Any, images: np.ndarray, batch_size: int | None = None, names: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """uint8 (N, H, W, C) at the model's size -> the graph's outputs `names` (default: all), in batches."""
    names = names or output_names(session)
    batch_size = batch_size or batch_size_for(*images.shape[1:3])
    parts = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = np.ascontiguousarray(chunk.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        parts.append(session.run(list(names), {INPUT_NAME: batch}))
    return {name: np.concatenate([part[i] for part in parts]) for i, name in enumerate(names)}


@dataclass(frozen=True)
class ImageResult:
    reconstruction_score: float
    latent_distance: float
    p_reconstruction: float
    p_latent: float
    p_combined: float
    anomaly_score: float
    is_anomaly: bool
    target_fpr: float
    threshold: float
    warning: str | None = None  # the target is below what the calibration can resolve (Calibration.promise)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class OnnxDetector:
    """model.onnx + calibration.json: preprocessing, inference, p-values, decisions."""

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        if not directory.is_dir():
            raise AnomalyError(f"model directory not found: {directory}")
        model_path = find_file(directory, MODEL_FILE)
        calibration_path = find_file(directory, CALIBRATION_FILE)
        if model_path is None:
            raise AnomalyError(f"model directory {directory} has no {MODEL_FILE}")
        if calibration_path is None:
            raise AnomalyError(f"model directory {directory} has no {CALIBRATION_FILE}")
        self.directory = directory
        self.calibration_path: Path = calibration_path
        self.session = create_session(model_path, threads)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.calibration = Calibration.load(
            calibration_path, expected_model_checksum=self.metadata.get(META_MODEL_CHECKSUM)
        )
        exported = self.metadata.get(META_CALIBRATION_SHA256)
        recalibrated_from = (self.calibration.recalibration or {}).get("exported_calibration_sha256")
        if exported != sha256_file(calibration_path) and exported != recalibrated_from:
            raise AnomalyError(
                f"{calibration_path} is neither the calibration this model was exported with nor one `anomaly "
                "calibrate` made for it (checksum differs); export the model again or run anomaly calibrate"
            )
        self.outputs = output_names(self.session)
        missing = [name for name in SCORE_NAMES if name not in self.outputs]
        if missing:
            raise AnomalyError(
                f"{model_path} has no {' or '.join(missing)} output: it was exported by an older version of anomaly "
                "that left a signal out of the graph; export the model again"
            )
        self.score_names = SCORE_NAMES
        spec = self.calibration.preprocessing
        self.image_size: tuple[int, int] = (int(spec["image_size"][0]), int(spec["image_size"][1]))
        self.channels: int = int(spec["channels"])

    def load_image(self, source: Path | bytes, name: str | None = None, max_pixels: int | None = None) -> np.ndarray:
        """Decode and resize exactly as training data was (anomaly.imageio)."""
        return decode_image(source, self.channels, self.image_size, name=name, max_pixels=max_pixels)

    def run(self, images: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """uint8 (N, H, W, C) at the model's size -> the graph's outputs `names` (default: all)."""
        return run_session(self.session, images, names=names or self.outputs)

    def results(self, outputs: dict[str, np.ndarray], target_fpr: float | None = None) -> list[ImageResult]:
        return image_results(self.calibration, outputs["reconstruction_score"], outputs["latent_distance"], target_fpr)


def check_target_fpr(target_fpr: float | None) -> None:
    if target_fpr is not None and not 0 < target_fpr < 0.5:
        raise AnomalyError(f"--target-fpr must be in (0, 0.5), got {target_fpr}")


def image_results(
    calibration: Calibration,
    reconstruction_scores: np.ndarray,
    latent_distances: np.ndarray,
    target_fpr: float | None = None,
) -> list[ImageResult]:
    """p-values and decisions for the graph's two scores; `target_fpr` defaults to the calibrated one."""
    alpha = calibration.target_fpr if target_fpr is None else target_fpr
    pvalues = calibration.pvalues(reconstruction_scores, latent_distances)
    decisions = calibration.is_anomaly(pvalues, alpha)
    warning = calibration.sample_size_warning(alpha)
    return [
        ImageResult(
            reconstruction_score=float(reconstruction_scores[i]),
            latent_distance=float(latent_distances[i]),
            p_reconstruction=float(pvalues.reconstruction[i]),
            p_latent=float(pvalues.latent[i]),
            p_combined=float(pvalues.combined[i]),
            anomaly_score=float(pvalues.anomaly_score[i]),
            is_anomaly=bool(decisions[i]),
            target_fpr=alpha,
            threshold=1.0 - alpha,
            warning=warning,
        )
        for i in range(len(pvalues.combined))
    ]
