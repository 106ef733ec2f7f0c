"""Resolve a model reference: a local model directory or an MLflow registry URI."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from anomaly.errors import AnomalyError

REGISTRY_PREFIX = "models:/"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """Where the files are, and which registered model version they are (None for a plain folder)."""

    directory: Path
    reference: str
    name: str
    version: str | None


def parse_registry_reference(reference: str) -> tuple[str, str | None, str | None]:
    """`models:/NAME@ALIAS` -> (NAME, None, ALIAS); `models:/NAME/VERSION` -> (NAME, VERSION, None)."""
    body = reference[len(REGISTRY_PREFIX) :]
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, None, alias
    name, _, version = body.partition("/")
    if not name or not version:
        raise AnomalyError(f"model reference {reference} must look like models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, version, None


def resolve_model(reference: str) -> ResolvedModel:
    """Download `models:/...` from MLflow, pinned to the version the alias points to now; else a folder."""
    if not reference.startswith(REGISTRY_PREFIX):
        path = Path(reference)
        if not path.is_dir():
            raise AnomalyError(f"model directory not found: {reference}")
        return ResolvedModel(path, reference, path.resolve().name, None)
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise AnomalyError(f"resolving {reference} needs the MLflow client: install the serve extra") from None

    name, version, alias = parse_registry_reference(reference)
    try:
        if alias is not None:
            version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
        directory = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{REGISTRY_PREFIX}{name}/{version}"))
    except MlflowException as error:
        first = str(error).strip().splitlines()[0][:200]
        raise AnomalyError(f"cannot resolve {reference} at {mlflow.get_tracking_uri()}: {first}") from None
    logger.info("resolved %s to %s version %s", reference, name, version)
    return ResolvedModel(directory, reference, name, str(version))
