"""Optional int8: ONNX Runtime static quantisation (QDQ, per channel) calibrated on normal images.

The int8 model's scores differ from fp32, so its calibration is refitted on its own outputs
(on the same held-out normals). It is kept only if image AUROC drops by at most MAX_AUROC_DROP.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from anomaly.calibration.fit import fit_calibration
from anomaly.calibration.scored import ScoredSet
from anomaly.data.imageset import ImageSet
from anomaly.export.onnx_export import write_metadata
from anomaly.export.onnx_metrics import onnx_image_auroc
from anomaly.runtime.bundle import (
    CALIBRATION_FILE,
    INPUT_NAME,
    META_CALIBRATION_SHA256,
    META_MODEL_CHECKSUM,
    MODEL_FILE,
    OnnxDetector,
    create_session,
    run_session,
)

MAX_AUROC_DROP = 0.005
QUANTISATION_IMAGES = 64


class _NormalImages(CalibrationDataReader):
    """Feeds float NCHW batches of normal images to the quantiser's range calibration."""

    def __init__(self, floats: np.ndarray, batch_size: int = 8) -> None:
        self._batches = iter([{INPUT_NAME: floats[i : i + batch_size]} for i in range(0, len(floats), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


# Only the network's layers. The scoring head's matrix products (kNN searches against banks, the Mahalanobis
# precision) compare distances that differ in the last digits, and a bank searched position by position is a
# batched MatMul that ONNX Runtime's per-channel QLinearMatMul refuses at run time.
QUANTISED_OP_TYPES = ["Conv", "ConvTranspose", "Gemm"]


def quantise_model(source: Path, target: Path, normal_images: np.ndarray) -> None:
    """Static int8 quantisation (QDQ, per-channel weights) of the network's layers, with ranges from float
    NCHW normal images."""
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _NormalImages(normal_images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=QUANTISED_OP_TYPES,
        )


@dataclass(frozen=True)
class QuantisationResult:
    kept: bool
    fp32_auroc: float | None  # image AUROC on the labelled validation set, what the decision reads; None without one
    int8_auroc: float | None
    fp32_test_auroc: float  # reported beside, never deciding
    int8_test_auroc: float
    directory: Path | None


def int8_bundle(fp32: OnnxDetector, calibration_images: np.ndarray, directory: Path) -> OnnxDetector:
    """The float model quantised into `directory`, with a calibration refitted on its own scores of the held-out
    normals `calibration_images` (uint8 NHWC)."""
    directory.mkdir(parents=True)
    floats = calibration_images[:QUANTISATION_IMAGES].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    quantise_model(fp32.directory / MODEL_FILE, directory / MODEL_FILE, floats)
    int8_scores = run_session(create_session(directory / MODEL_FILE), calibration_images)
    calibration = fit_calibration(
        held_out=ScoredSet.of_normal_outputs(int8_scores),
        scoring=fp32.calibration.scoring,
        preprocessing=fp32.calibration.preprocessing,
        model_checksum=fp32.calibration.model_checksum,
        seed=0,
        sample_sizes={
            **fp32.calibration.sample_sizes,
            "quantisation_images": min(len(calibration_images), QUANTISATION_IMAGES),
        },
        choices=fp32.calibration.choices,
    )
    calibration = replace(calibration, f1_optimal_score=None)
    digest = calibration.save(directory / CALIBRATION_FILE)
    write_metadata(
        directory / MODEL_FILE, {META_CALIBRATION_SHA256: digest, META_MODEL_CHECKSUM: calibration.model_checksum}
    )
    return OnnxDetector(directory)


def quantise_bundle(
    fp32: OnnxDetector, calibration_images: np.ndarray, validation: ImageSet | None, test: ImageSet, output_dir: Path
) -> QuantisationResult:
    """Write an int8 model directory to `output_dir` if its image AUROC on the labelled validation set stays within
    MAX_AUROC_DROP of the float model's (without a labelled validation set it is never kept); report test AUROCs too."""
    with tempfile.TemporaryDirectory() as scratch:
        candidate = Path(scratch) / "bundle"
        int8 = int8_bundle(fp32, calibration_images, candidate)
        fp32_auroc, int8_auroc = (
            (None, None)
            if validation is None
            else (onnx_image_auroc(model, validation.images, validation.labels) for model in (fp32, int8))
        )
        kept = fp32_auroc is not None and fp32_auroc - int8_auroc <= MAX_AUROC_DROP
        if kept:
            if output_dir.exists():
                shutil.rmtree(output_dir)
            shutil.copytree(candidate, output_dir)
        fp32_test, int8_test = (onnx_image_auroc(model, test.images, test.labels) for model in (fp32, int8))
        return QuantisationResult(kept, fp32_auroc, int8_auroc, fp32_test, int8_test, output_dir if kept else None)
