"""`anomaly export`: evaluation folder -> self-contained, parity-checked model directory."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anomaly.data.datamodule import AnomalyDataModule
from anomaly.errors import AnomalyError
from anomaly.evaluation.run import Calibrated, load_calibrated
from anomaly.export.card import model_card, test_metrics
from anomaly.export.onnx_export import export_onnx
from anomaly.export.parity import check_parity, parity_report
from anomaly.runtime.bundle import CALIBRATION_FILE, CARD_FILE, MODEL_FILE, OnnxDetector, sha256_file
from anomaly.scoring.detector import AnomalyDetector, encoder_checksum


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    parity: dict[str, float]
    metrics: dict[str, Any]
    calibrated: Calibrated

    @property
    def detector(self) -> AnomalyDetector:
        return self.calibrated.detector

    @property
    def datamodule(self) -> AnomalyDataModule:
        """The evaluation's data, read on first use: only int8 and registration decisions score more images."""
        return self.calibrated.datamodule


def read_metrics(folder: Path) -> dict[str, Any]:
    if not (folder / "metrics.json").is_file():
        raise AnomalyError(f"{folder} has no metrics.json: run `anomaly evaluate` first and pass its output folder")
    return json.loads((folder / "metrics.json").read_text())


def export_bundle(calibrated: Calibrated, evaluation_dir: Path, output_dir: Path, run_id: str | None) -> None:
    """model.onnx (with the scoring head) and the calibration it belongs to, in a fresh `output_dir`."""
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    shutil.copyfile(evaluation_dir / CALIBRATION_FILE, output_dir / CALIBRATION_FILE)
    sample = torch.from_numpy(calibrated.sample_images[:2]).permute(0, 3, 1, 2).float() / 255.0
    export_onnx(
        calibrated.detector,
        output_dir / MODEL_FILE,
        sha256_file(output_dir / CALIBRATION_FILE),
        sample,
        run_id,
        test_metrics(read_metrics(evaluation_dir)),
    )


def verify_parity(calibrated: Calibrated, output_dir: Path) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch on the stored sample of real images (held-out normals and test images,
    anomalies included); raise if they disagree."""
    report = parity_report(calibrated.detector, OnnxDetector(output_dir), calibrated.sample_images)
    check_parity(report)
    return report


def write_card(
    calibrated: Calibrated, metrics: dict[str, Any], report: dict[str, float], output_dir: Path, run_id: str | None
) -> None:
    detector = calibrated.detector
    card = model_card(detector.config, calibrated.calibration, metrics, report, run_id, encoder_checksum(detector))
    (output_dir / CARD_FILE).write_text(card)


def publish(evaluation_dir: Path, output_dir: Path, data_overrides: list[str], run_id: str | None) -> ExportResult:
    """Export, check parity on real images, write the card. On a parity failure nothing is left."""
    metrics = read_metrics(evaluation_dir)
    calibrated = load_calibrated(evaluation_dir, data_overrides)
    try:
        export_bundle(calibrated, evaluation_dir, output_dir, run_id)
        report = verify_parity(calibrated, output_dir)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise
    write_card(calibrated, metrics, report, output_dir, run_id)
    return ExportResult(output_dir, report, metrics, calibrated)
