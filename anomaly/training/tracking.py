"""MLflow tracking: where runs go and what each training run records."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from anomaly.config import Config, flatten
from anomaly.models.outputs import AutoencoderOutput

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
GRID_IMAGES = 8


def resolve_tracking_uri(config: Config) -> str:
    """Config first, then $MLFLOW_TRACKING_URI (a team's shared server), then a local SQLite file."""
    return config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class ResumableMLFlowLogger(MLFlowLogger):
    """An MLflow logger that records each metric at most once per step, also across a resume.

    Lightning logs an epoch's metrics before it writes that epoch's checkpoint, so a run killed in
    between re-runs the epoch when it resumes and would log it a second time. Points at a step the
    run's history already holds are dropped: the history keeps one value per epoch, the one logged
    by the attempt that was killed.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._recorded_steps: dict[str, set[int]] | None = None

    def _steps_already_recorded(self) -> dict[str, set[int]]:
        if self._recorded_steps is None:
            client, run_id = self.experiment, self.run_id
            self._recorded_steps = {
                key: {point.step for point in client.get_metric_history(run_id, key)}
                for key in client.get_run(run_id).data.metrics
            }
        return self._recorded_steps

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        recorded = self._steps_already_recorded()
        new = {key: value for key, value in metrics.items() if (step or 0) not in recorded.get(key, ())}
        if new:
            super().log_metrics(new, step)
        for key in new:  # Lightning adds `epoch` to the training and the validation metrics of the same step
            recorded.setdefault(key, set()).add(step or 0)


def reproducibility_tags() -> dict[str, str]:
    """What besides the seed fixes the trained weights: on CPU the same seed gives bit-identical weights only with
    the same torch and the same intra-op thread count, so a run records both. Tags, not params: a resume may run on
    other threads, and its tags then say what the last attempt ran on."""
    return {"torch.version": torch.__version__, "torch.threads": str(torch.get_num_threads())}


@rank_zero_only
def tag_run(logger: MLFlowLogger, tags: Mapping[str, str]) -> None:
    """Set tags on the logger's run. Lightning applies its `tags` argument only to a run it creates, never to an
    existing `run_id` (a pipeline's train step, a resume), so both paths set them here."""
    for key, value in tags.items():
        logger.experiment.set_tag(logger.run_id, key, value)


def create_logger(config: Config, run_id: str | None = None) -> MLFlowLogger:
    """A new MLflow run, or the existing `run_id` (its params must match: MLflow never overwrites them)."""
    logger = ResumableMLFlowLogger(
        experiment_name=config.tracking.experiment,
        run_name=config.tracking.run_name,
        tracking_uri=resolve_tracking_uri(config),
        run_id=run_id,
    )
    tag_run(
        logger, {"architecture": config.model.architecture, "data.kind": config.data.kind, **reproducibility_tags()}
    )
    logger.log_hyperparams(flatten(config))
    return logger


def reconstruction_grid(images: torch.Tensor, output: AutoencoderOutput) -> torch.Tensor:
    """Rows: inputs, reconstructions, absolute error (brightest = worst). A feature autoencoder restores features,
    not pixels: its rows are the inputs and its feature-space error, averaged over channels and upsampled."""
    if output.target is None:
        rows = [images, output.reconstruction, (images - output.reconstruction).abs()]
    else:
        error = (output.target - output.reconstruction).abs().mean(dim=1, keepdim=True)
        error = F.interpolate(error, size=images.shape[-2:], mode="bilinear", align_corners=False)
        rows = [images, error.expand(-1, images.shape[1], -1, -1)]
    rows[-1] = rows[-1] / rows[-1].amax().clamp_min(1e-8)
    return make_grid(torch.cat(rows), nrow=len(images), padding=2, pad_value=1.0)


def log_run_artifacts(
    logger: MLFlowLogger,
    config: Config,
    split_record: dict[str, object],
    grid: torch.Tensor,
    checkpoint: Path,
) -> None:
    client, run_id = logger.experiment, logger.run_id
    with tempfile.TemporaryDirectory() as folder:
        config_path = Path(folder) / "config.yaml"
        config_path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        client.log_artifact(run_id, str(config_path))
        splits_path = Path(folder) / "splits.json"
        splits_path.write_text(json.dumps(split_record, indent=1))
        client.log_artifact(run_id, str(splits_path))
        grid_path = Path(folder) / "reconstructions.png"
        save_image(grid, grid_path)
        client.log_artifact(run_id, str(grid_path), "plots")
    client.log_artifact(run_id, str(checkpoint), "checkpoints")
