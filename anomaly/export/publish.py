"""`anomaly export`: evaluation folder -> self-contained, parity-checked model directory."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly.calibration.artifact import Calibration
from anomaly.config import build_config
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.errors import AnomalyError
from anomaly.export.card import model_card
from anomaly.export.onnx_export import export_onnx
from anomaly.export.parity import check_parity, parity_report
from anomaly.runtime.bundle import CALIBRATION_FILE, CARD_FILE, MODEL_FILE, OnnxDetector, sha256_file
from anomaly.scoring.detector import AnomalyDetector, load_detector, weights_checksum

PARITY_IMAGES = 64


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    parity: dict[str, float]
    metrics: dict[str, Any]
    detector: AnomalyDetector
    datamodule: AnomalyDataModule


def load_evaluation(folder: Path, data_overrides: list[str]) -> tuple[AnomalyDetector, Calibration, dict[str, Any]]:
    """detector.pt, calibration.json and metrics.json as `anomaly evaluate` wrote them."""
    for name in ("detector.pt", CALIBRATION_FILE, "metrics.json"):
        if not (folder / name).is_file():
            raise AnomalyError(f"{folder} has no {name}: run `anomaly evaluate` first and pass its output folder")
    detector = load_detector(folder / "detector.pt")
    calibration = Calibration.load(folder / CALIBRATION_FILE, expected_model_checksum=weights_checksum(detector))
    if data_overrides:
        detector.config = build_config(detector.config.model_dump(mode="json"), data_overrides)
    return detector, calibration, json.loads((folder / "metrics.json").read_text())


def parity_images(datamodule: AnomalyDataModule) -> np.ndarray:
    """Real images for the parity check: held-out normals and test images (anomalies included)."""
    half = PARITY_IMAGES // 2
    return np.concatenate([datamodule.calibration_set.images[:half], datamodule.test_set.images[:half]])


def publish(evaluation_dir: Path, output_dir: Path, data_overrides: list[str], run_id: str | None) -> ExportResult:
    """Export, check parity on real images, write the card. On a parity failure nothing is left."""
    detector, calibration, metrics = load_evaluation(evaluation_dir, data_overrides)
    datamodule = AnomalyDataModule(detector.config.data)
    datamodule.setup()
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    try:
        shutil.copyfile(evaluation_dir / CALIBRATION_FILE, output_dir / CALIBRATION_FILE)
        sample = torch.from_numpy(datamodule.calibration_set.images[:2]).permute(0, 3, 1, 2).float() / 255.0
        export_onnx(detector, output_dir / MODEL_FILE, sha256_file(output_dir / CALIBRATION_FILE), sample, run_id)
        report = parity_report(detector, OnnxDetector(output_dir), parity_images(datamodule))
        check_parity(report)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise
    (output_dir / CARD_FILE).write_text(model_card(detector.config, calibration, metrics, report, run_id))
    return ExportResult(output_dir, report, metrics, detector, datamodule)
