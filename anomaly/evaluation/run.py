"""`anomaly evaluate`: from a training checkpoint to metrics.json, calibration, plots and MLflow."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric

from anomaly.calibration.artifact import Calibration, signal_scores
from anomaly.config import Config, build_config, flatten_mapping, parse_override
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.errors import AnomalyError
from anomaly.evaluation.evaluate import evaluate_scored
from anomaly.evaluation.plots import write_plots
from anomaly.scoring.detector import AnomalyDetector, load_detector, save_detector, weights_checksum
from anomaly.scoring.fit import fit_chosen_detector, score_loader
from anomaly.training.module import AutoencoderModule

EVALUATION_SECTIONS = ("data", "scoring", "tracking", "output_dir")
MODEL_FIXED_DATA_KEYS = ("image_size", "channels")


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, Any]
    output_dir: Path
    warning: str | None = None  # Calibration.sample_size_warning


def load_trained(checkpoint: Path, overrides: list[str]) -> tuple[AutoencoderModule, Config]:
    """Load a training checkpoint; overrides may change where data is and how scores are made,
    never the model (the weights fix it)."""
    if not checkpoint.is_file():
        raise AnomalyError(f"checkpoint not found: {checkpoint}")
    for override in overrides:
        section = parse_override(override)[0][0]
        if section not in EVALUATION_SECTIONS:
            raise AnomalyError(f"override {override}: only {', '.join(EVALUATION_SECTIONS)} can change after training")
    try:
        module = AutoencoderModule.load_from_checkpoint(checkpoint, map_location="cpu")
    except AnomalyError:
        raise
    except Exception as error:  # a damaged or foreign file raises many types
        raise AnomalyError(f"cannot load checkpoint {checkpoint}: {type(error).__name__}") from None
    config = build_config(module.config.model_dump(mode="json"), overrides)
    for key in MODEL_FIXED_DATA_KEYS:
        trained, requested = getattr(module.config.data, key), getattr(config.data, key)
        if requested != trained:
            raise AnomalyError(f"data.{key} is fixed by the trained model ({trained}); it cannot change to {requested}")
    return module.eval(), config


def mlflow_metric_name(key: str) -> str:
    """MLflow allows only alphanumerics and _ - . space : / in names; category names may hold more (p>=0.67)."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key)


def log_evaluation(
    run_id: str | None,
    tracking_uri: str | None,
    metrics: dict[str, Any],
    files: list[Path],
    validation_auroc: dict[str, float] | None = None,
) -> None:
    """test.* metrics, validation.synthetic_auroc.* (the calibration's, when it has them) and the
    evaluation files, into an MLflow run (the training run, or a pipeline step)."""
    if not run_id or not tracking_uri:
        return
    client = mlflow.MlflowClient(tracking_uri)
    now = int(time.time() * 1000)
    logged = {"test": metrics, "validation": {"synthetic_auroc": validation_auroc or {}}}
    numbers = [
        Metric(mlflow_metric_name(key), float(value), now, 0)
        for key, value in flatten_mapping(logged).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    client.log_batch(run_id, metrics=numbers)
    for path in files:
        client.log_artifact(run_id, str(path), "evaluation" if path.suffix == ".json" else "evaluation/plots")


SAMPLE_FILE = "sample_images.npz"
SAMPLE_IMAGES = 64  # half held-out normals, half test images (anomalies included): export's tracing and parity sample


@dataclass
class Calibrated:
    detector: AnomalyDetector
    calibration: Calibration
    training_run: dict[str, str | None]  # run.json: the MLflow run and tracking URI training logged to
    sample_images: np.ndarray  # (N, H, W, C) uint8 at the model's size: what export traces and checks parity on
    loaded_data: AnomalyDataModule | None = None

    @property
    def datamodule(self) -> AnomalyDataModule:
        """The data the detector was fitted on, read only when asked for: export needs the stored sample alone."""
        if self.loaded_data is None:
            self.loaded_data = AnomalyDataModule(self.detector.config.data)
            self.loaded_data.setup()
        return self.loaded_data


def stored_sample(datamodule: AnomalyDataModule) -> np.ndarray:
    half = SAMPLE_IMAGES // 2
    return np.concatenate([datamodule.calibration_set.images[:half], datamodule.test_set.images[:half]])


def calibrate_checkpoint(checkpoint: Path, overrides: list[str], output_dir: Path) -> Calibrated:
    """Fit latent statistics (train split) and the calibration (held-out normals); write detector.pt,
    calibration.json and run.json (which training run this came from)."""
    module, config = load_trained(checkpoint, overrides)
    datamodule = AnomalyDataModule(config.data)
    datamodule.setup()
    if len(datamodule.test_set) == 0:
        raise AnomalyError("no test images to evaluate on: the data source has no test split (test/<category>/)")
    detector, calibration = fit_chosen_detector(config, module.model, datamodule)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_detector(detector, output_dir / "detector.pt")
    calibration.save(output_dir / "calibration.json")
    run = {"mlflow_run_id": module.hparams.get("mlflow_run_id"), "tracking_uri": module.hparams.get("tracking_uri")}
    (output_dir / "run.json").write_text(json.dumps(run, indent=1))
    sample = stored_sample(datamodule)
    np.savez_compressed(output_dir / SAMPLE_FILE, images=sample)
    return Calibrated(detector, calibration, run, sample, datamodule)


def load_calibrated(folder: Path, data_overrides: list[str] | None = None) -> Calibrated:
    """detector.pt, calibration.json and the stored sample as calibrate_checkpoint wrote them; the data behind them is
    read only if asked for (`data_overrides` point at it where it is now, if it moved)."""
    for name in ("detector.pt", "calibration.json", SAMPLE_FILE):
        if not (folder / name).is_file():
            raise AnomalyError(f"{folder} has no {name}: run `anomaly evaluate` first and pass its output folder")
    for override in data_overrides or []:
        section, *rest = parse_override(override)[0]
        if section != "data" or (rest and rest[0] in MODEL_FIXED_DATA_KEYS):
            raise AnomalyError(
                f"override {override}: a calibrated detector takes only where its data is now (data.root and the "
                "like); scoring and sizes were fixed when it was fitted: run `anomaly evaluate --checkpoint ... "
                "--set ...` again to change them"
            )
    detector = load_detector(folder / "detector.pt")
    calibration = Calibration.load(folder / "calibration.json", expected_model_checksum=weights_checksum(detector))
    if data_overrides:
        detector.config = build_config(detector.config.model_dump(mode="json"), data_overrides)
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    with np.load(folder / SAMPLE_FILE) as stored:
        sample = stored["images"]
    return Calibrated(detector, calibration, run, sample)


def evaluate_calibrated(
    calibrated: Calibrated, output_dir: Path, log_run_id: str | None, tracking_uri: str | None
) -> dict[str, Any]:
    """Score the test split; write metrics.json and plots; log them to `log_run_id`."""
    detector, calibration, datamodule = calibrated.detector, calibrated.calibration, calibrated.datamodule
    masks = datamodule.test_set.masks
    scored = score_loader(
        detector,
        datamodule.test_dataloader(),
        signal_maps=masks is not None and bool(masks.any()),
        description="test images",
    )
    metrics = evaluate_scored(calibration, scored)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    pvalues = calibration.pvalues(scored.reconstruction_scores, scored.latent_distances)
    plots = write_plots(
        output_dir / "plots",
        scored,
        datamodule.test_set.images,
        signal_scores(scored, pvalues),
        calibration,
        detector.model,
        metrics["calibration_curve"],
    )
    files = [output_dir / "metrics.json", output_dir / "calibration.json", *plots]
    log_evaluation(log_run_id, tracking_uri, metrics, files, calibration.validation_auroc)
    return metrics


def evaluate_checkpoint(checkpoint: Path, overrides: list[str], output_dir: Path) -> EvaluationResult:
    """Calibrate, then evaluate on the test split; the metrics go to the training run."""
    calibrated = calibrate_checkpoint(checkpoint, overrides, output_dir)
    run = calibrated.training_run
    metrics = evaluate_calibrated(calibrated, output_dir, run["mlflow_run_id"], run["tracking_uri"])
    return EvaluationResult(
        metrics=metrics, output_dir=output_dir, warning=calibrated.calibration.sample_size_warning()
    )
