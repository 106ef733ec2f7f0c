"""MLflow registry: log the model directory (ONNX flavour), register it, and move `champion`
only when the new version beats the current champion on the same test images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnx
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from anomaly.data.imageset import ImageSet
from anomaly.export.onnx_metrics import onnx_image_auroc
from anomaly.runtime.bundle import CALIBRATION_FILE, CARD_FILE, MODEL_FILE, OnnxDetector
from anomaly.runtime.resolve import resolve_model

CHAMPION = "champion"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    promoted: bool
    challenger_auroc: float
    champion_auroc: float | None
    champion_version: str | None


def log_model(bundle: Path, detector: OnnxDetector, example: np.ndarray) -> str:
    """Log as an MLflow ONNX model with signature, input example and the calibration; return its URI."""
    batch = example.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    outputs = detector.run(example)
    info = mlflow.onnx.log_model(
        onnx.load(str(bundle / MODEL_FILE)),
        name="model",
        signature=infer_signature(batch, outputs),
        input_example=batch,
        extra_files=[str(bundle / CALIBRATION_FILE), str(bundle / CARD_FILE)],
        save_as_external_data=False,
    )
    return info.model_uri


def current_champion(client: mlflow.MlflowClient, name: str) -> str | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:
        return None


def register_version(bundle: Path, name: str, run_id: str | None, example: np.ndarray) -> str:
    """Log `bundle` as an MLflow ONNX model in `run_id` (or a new run) and register it; return the version."""
    detector = OnnxDetector(bundle)
    with mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=f"register-{name}"):
        model_uri = log_model(bundle, detector, example[:1])
        return str(mlflow.register_model(model_uri, name).version)


def promote(bundle: Path, name: str, version: str, run_id: str | None, test: ImageSet) -> Registration:
    """Move `champion` to `version` only if it beats the current champion on `test`; log the decision."""
    detector = OnnxDetector(bundle)
    client = mlflow.MlflowClient()
    challenger = onnx_image_auroc(detector, test.images, test.labels)
    champion_version = current_champion(client, name)
    champion = None
    if champion_version is not None and champion_version != version:
        champion_model = OnnxDetector(resolve_model(f"models:/{name}@{CHAMPION}").directory)
        champion = onnx_image_auroc(champion_model, test.images, test.labels)
    promoted = champion_version == version or champion is None or challenger > champion
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "image_auroc_at_registration", f"{challenger:.6f}")
    if run_id:
        client.log_metric(run_id, "registry.challenger_auroc", challenger)
        if champion is not None:
            client.log_metric(run_id, "registry.champion_auroc", champion)
        decision = "promoted" if promoted else f"kept champion v{champion_version}"
        client.set_tag(run_id, "registry.decision", f"{name} v{version}: {decision}")
    return Registration(name, version, promoted, challenger, champion, champion_version if champion is not None else None)


def register(bundle: Path, name: str, run_id: str | None, test: ImageSet) -> Registration:
    """Register `bundle` under `name`; promote it to champion only if it wins on `test`."""
    version = register_version(bundle, name, run_id, test.images)
    if run_id is None:
        run_id = mlflow.MlflowClient().get_model_version(name, version).run_id
    return promote(bundle, name, version, run_id, test)
