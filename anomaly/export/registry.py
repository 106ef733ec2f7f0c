"""MLflow registry: log the model directory (ONNX flavour), register it, and move `champion`
only when the new version beats the current champion on the same labelled validation images (held-out
normals plus synthetic anomalies). Test AUROCs are measured and logged beside, never deciding."""

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
    challenger_auroc: float | None  # validation image AUROC; None without a labelled validation set
    champion_auroc: float | None
    champion_version: str | None
    challenger_test_auroc: float
    champion_test_auroc: float | None


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
        onnx_execution_providers=["CPUExecutionProvider"],  # what the service runs it with (anomaly.runtime.bundle)
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


def promote(
    bundle: Path, name: str, version: str, run_id: str | None, validation: ImageSet | None, test: ImageSet
) -> Registration:
    """Move `champion` to `version` only if it beats the current champion's image AUROC on `validation` (both models
    on the same images); without a labelled validation set only a first version becomes champion. Test AUROCs are
    logged beside the decision and never make it."""
    client = mlflow.MlflowClient()
    models = {"challenger": OnnxDetector(bundle)}
    champion_version = current_champion(client, name)
    if champion_version is not None and champion_version != version:
        models["champion"] = OnnxDetector(resolve_model(f"models:/{name}@{CHAMPION}").directory)
    on_validation = {
        role: None if validation is None else onnx_image_auroc(model, validation.images, validation.labels)
        for role, model in models.items()
    }
    on_test = {role: onnx_image_auroc(model, test.images, test.labels) for role, model in models.items()}
    if "champion" not in models:
        promoted = True
    else:
        promoted = validation is not None and on_validation["challenger"] > on_validation["champion"]
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "image_auroc_at_registration", f"{on_test['challenger']:.6f}")
    if run_id:
        for role in models:
            if on_validation[role] is not None:
                client.log_metric(run_id, f"registry.{role}_auroc", on_validation[role])
            client.log_metric(run_id, f"registry.{role}_test_auroc", on_test[role])
        reason = (
            "" if validation is not None or "champion" not in models else " (no labelled validation set to compare on)"
        )
        decision = "promoted" if promoted else f"kept champion v{champion_version}{reason}"
        client.set_tag(run_id, "registry.decision", f"{name} v{version}: {decision}")
    return Registration(
        name,
        version,
        promoted,
        on_validation["challenger"],
        on_validation.get("champion"),
        champion_version if "champion" in models else None,
        on_test["challenger"],
        on_test.get("champion"),
    )


def register(bundle: Path, name: str, run_id: str | None, validation: ImageSet | None, test: ImageSet) -> Registration:
    """Register `bundle` under `name`; promote it to champion only if it wins on `validation`."""
    version = register_version(bundle, name, run_id, test.images)
    if run_id is None:
        run_id = mlflow.MlflowClient().get_model_version(name, version).run_id
    return promote(bundle, name, version, run_id, validation, test)
