"""`anomaly evaluate`: from a training checkpoint to metrics.json, calibration, plots and MLflow."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric

from anomaly.config import Config, build_config, flatten_mapping, parse_override
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.errors import AnomalyError
from anomaly.evaluation.evaluate import evaluate_scored, signal_scores
from anomaly.evaluation.plots import write_plots
from anomaly.scoring.detector import AnomalyDetector, save_detector
from anomaly.scoring.fit import fit_detector, score_loader
from anomaly.training.module import AutoencoderModule

EVALUATION_SECTIONS = ("data", "scoring", "tracking", "output_dir")


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, Any]
    output_dir: Path


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
    except Exception as error:  # a damaged or foreign file raises many types
        raise AnomalyError(f"cannot load checkpoint {checkpoint}: {type(error).__name__}") from None
    config = build_config(module.config.model_dump(mode="json"), overrides)
    return module.eval(), config


def log_to_training_run(module: AutoencoderModule, metrics: dict[str, Any], files: list[Path]) -> None:
    run_id, uri = module.hparams.get("mlflow_run_id"), module.hparams.get("tracking_uri")
    if not run_id or not uri:
        return
    client = mlflow.MlflowClient(uri)
    now = int(time.time() * 1000)
    numbers = [
        Metric(f"test.{key}", float(value), now, 0)
        for key, value in flatten_mapping(metrics).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    client.log_batch(run_id, metrics=numbers)
    for path in files:
        client.log_artifact(run_id, str(path), "evaluation" if path.suffix == ".json" else "evaluation/plots")


def evaluate_checkpoint(checkpoint: Path, overrides: list[str], output_dir: Path) -> EvaluationResult:
    """Fit latent statistics (train split) and calibration (held-out normals), then evaluate on test."""
    module, config = load_trained(checkpoint, overrides)
    datamodule = AnomalyDataModule(config.data)
    datamodule.setup()
    if len(datamodule.test_set) == 0:
        raise AnomalyError("no test images to evaluate on: the data source has no test split (test/<category>/)")
    detector = AnomalyDetector(config, module.model)
    calibration = fit_detector(detector, datamodule)
    scored = score_loader(detector, datamodule.test_dataloader())
    metrics = evaluate_scored(calibration, scored)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_detector(detector, output_dir / "detector.pt")
    calibration.save(output_dir / "calibration.json")
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    run = {"mlflow_run_id": module.hparams.get("mlflow_run_id"), "tracking_uri": module.hparams.get("tracking_uri")}
    (output_dir / "run.json").write_text(json.dumps(run, indent=1))
    pvalues = calibration.pvalues(scored.reconstruction_scores, scored.latent_distances)
    plots = write_plots(output_dir / "plots", scored, datamodule.test_set.images, signal_scores(scored, pvalues), calibration, detector.model)
    log_to_training_run(module, metrics, [output_dir / "metrics.json", output_dir / "calibration.json", *plots])
    return EvaluationResult(metrics=metrics, output_dir=output_dir)
