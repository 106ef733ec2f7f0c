"""Resolve a model reference: a local model directory or an MLflow registry URI."""

from __future__ import annotations

from pathlib import Path

from anomaly.errors import AnomalyError

REGISTRY_PREFIX = "models:/"


def resolve_model(reference: str) -> Path:
    """`models:/NAME@ALIAS` (or `models:/NAME/VERSION`) is downloaded from MLflow; else a folder."""
    if not reference.startswith(REGISTRY_PREFIX):
        path = Path(reference)
        if not path.is_dir():
            raise AnomalyError(f"model directory not found: {reference}")
        return path
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise AnomalyError(f"resolving {reference} needs the MLflow client: install the serve extra") from None

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=reference))
    except MlflowException as error:
        first = str(error).strip().splitlines()[0][:200]
        raise AnomalyError(f"cannot resolve {reference} at {mlflow.get_tracking_uri()}: {first}") from None
