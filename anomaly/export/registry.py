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


def register(bundle: Path, name: str, run_id: str | None, test: ImageSet) -> Registration:
    """Register `bundle` under `name`; promote it to champion only if it wins on `test`."""
    detector = OnnxDetector(bundle)
    client = mlflow.MlflowClient()
    with mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=f"register-{name}"):
        model_uri = log_model(bundle, detector, test.images[:1])
        version = mlflow.register_model(model_uri, name).version
        challenger = onnx_image_auroc(detector, test.images, test.labels)
        champion_version = current_champion(client, name)
        champion = None
        if champion_version is not None:
            champion_model = OnnxDetector(resolve_model(f"models:/{name}@{CHAMPION}").directory)
            champion = onnx_image_auroc(champion_model, test.images, test.labels)
        promoted = champion is None or challenger > champion
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
        mlflow.log_metric("registry.challenger_auroc", challenger)
        if champion is not None:
            mlflow.log_metric("registry.champion_auroc", champion)
        decision = "promoted" if promoted else f"kept champion v{champion_version}"
        mlflow.set_tag("registry.decision", f"{name} v{version}: {decision}")
        client.set_model_version_tag(name, version, "image_auroc_at_registration", f"{challenger:.6f}")
    return Registration(name, str(version), promoted, challenger, champion, champion_version)
