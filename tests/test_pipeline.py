"""`anomaly pipeline run`: the whole chain on an MVTec-layout folder, resume after a kill, a failing step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import mlflow
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from anomaly.config import build_config
from anomaly.errors import AnomalyError
from anomaly.pipeline import run as pipeline
from anomaly.pipeline.state import DONE, FAILED, PipelineState
from anomaly.training.train import train
from serving.process import free_port, running_server, serve_command
from tests.conftest import PROJECT_ROOT, cli_command, tiny_config, write_texture_folder

pytestmark = pytest.mark.slow  # real servers, browsers or trained pipelines: `-m "not slow"` skips them


def pipeline_config(folder: Path, tmp_path: Path, **train) -> dict:
    return tiny_config(
        folder,
        data={"calibration_fraction": 0.2},
        train={"max_epochs": 2, "early_stopping_patience": 0, **train},
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "registered_model": "textures"},
    )


def pipeline_command(config: Path, output: Path) -> list[str]:
    return cli_command("pipeline", "run", "--config", str(config), "--output", str(output))


def runs_by_name(tracking_uri: str) -> dict[str, list]:
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("anomaly").experiment_id])
    named: dict[str, list] = {}
    for run in runs:
        named.setdefault(run.info.run_name, []).append(run)
    return named


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_texture_folder(tmp_path_factory.mktemp("pipeline") / "textures", train=60, test_good=6, test_defect=6)


def test_pipeline_on_a_folder_writes_metrics_and_a_model_that_serves(folder, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(folder, tmp_path)))
    result = subprocess.run(
        pipeline_command(config, tmp_path / "out"), capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("image_auroc", "image_aupr", "pixel_auroc", "target_fpr", "test_fpr", "threshold", "model_uri"):
        assert key in metrics and summary[key] == metrics[key], key
    assert metrics["image_auroc"] > 0.9 and metrics["model_uri"] == "models:/textures/1" and metrics["champion"] is True
    assert {path.name for path in (tmp_path / "out" / "model").iterdir()} == {
        "model.onnx",
        "calibration.json",
        "model_card.md",
    }
    assert "anomaly serve --model" in result.stderr
    assert (
        "warning: the 1.00% false-positive target is below what 12 calibration normal images can resolve"
        in result.stderr
    )  # 60 x 0.2, fisher

    runs = runs_by_name(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = runs["pipeline-out"][0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["image_auroc"] == metrics["image_auroc"]
    for step in pipeline.STEPS:
        (child,) = runs[step]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED", step
    train_tags = runs["train"][0].data.tags  # set although training logs into the step's existing run
    assert (
        train_tags["architecture"] == "ae"
        and train_tags["torch.version"] == torch.__version__
        and int(train_tags["torch.threads"]) >= 1
    )

    port = free_port()  # served from the registry: the champion alias, resolved at start
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    with running_server(serve_command("models:/textures@champion", port), env, port, tmp_path / "serve.log") as url:
        image = sorted((folder / "test" / "scratch").glob("*.png"))[0]
        response = httpx.post(f"{url}/score", files={"image": image.open("rb")}, timeout=60)
        described = httpx.get(f"{url}/model").json()
    answer = response.json()
    # 12 calibration normals cannot resolve 1% (the warning above): the scratch stands out at 5%.
    assert (
        response.status_code == 200
        and answer["p_combined"] < 0.05
        and answer["is_anomaly"] == (answer["p_combined"] < 0.01)
    )
    assert response.json()["model"] == {
        "name": "textures",
        "version": "1",
        "model_checksum": described["model"]["model_checksum"],
    }
    assert (
        described["reference"] == "models:/textures@champion"
        and described["training_run"] == metrics["training_run_id"]
    )

    again = subprocess.run(pipeline_command(config, tmp_path / "out"), capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert again.returncode == 0 and "nothing to run" in again.stderr
    assert sum(len(found) for found in runs_by_name(f"sqlite:///{tmp_path / 'mlflow.db'}").values()) == 8


def test_killed_during_training_resumes_without_losing_or_duplicating_epochs(folder, tmp_path):
    epochs = 40
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(folder, tmp_path, max_epochs=epochs)))
    output = tmp_path / "out"
    first = subprocess.Popen(
        pipeline_command(config, output),
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while (
        not list(output.glob("train/*/checkpoints/last.ckpt")) and time.monotonic() < deadline and first.poll() is None
    ):
        time.sleep(0.2)
    time.sleep(0.5)  # a little into the next epochs
    assert first.poll() is None, "training finished before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_state = PipelineState.load(output)
    assert killed_state.steps["train"].status == "running"

    second = subprocess.run(pipeline_command(config, output), capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming training from its last epoch checkpoint" in second.stderr
    state = PipelineState.load(output)
    assert state.steps["train"].run_id == killed_state.steps["train"].run_id
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = runs_by_name(tracking)
    assert len(runs["train"]) == 1 and len(runs["pipeline-out"]) == 1
    history = mlflow.MlflowClient(tracking).get_metric_history(state.steps["train"].run_id, "val_loss")
    steps = [point.step for point in history]
    assert len(steps) == epochs and len(set(steps)) == epochs, steps


def test_an_epoch_logged_but_not_yet_checkpointed_is_recorded_once_after_resume(folder, tmp_path, monkeypatch):
    """The narrow window the kill test can only hit by chance: epoch 1's metrics are in MLflow, its checkpoint is
    not."""
    epochs = 3
    config = build_config(
        {**pipeline_config(folder, tmp_path, max_epochs=epochs), "output_dir": str(tmp_path / "runs")}
    )
    save_checkpoints = ModelCheckpoint.on_validation_end

    def killed_before_epoch_1_is_saved(self, trainer, module):
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")
        save_checkpoints(self, trainer, module)

    client = mlflow.MlflowClient(config.tracking.uri)
    run_id = client.create_run(client.create_experiment(config.tracking.experiment)).info.run_id
    monkeypatch.setattr(ModelCheckpoint, "on_validation_end", killed_before_epoch_1_is_saved)
    with pytest.raises(RuntimeError, match="killed"):
        train(config, run_id)
    first_attempt = client.get_metric_history(run_id, "val_loss")
    assert len(first_attempt) == 2  # epochs 0 and 1 logged; only epoch 0 checkpointed

    monkeypatch.undo()
    result = train(config, run_id)
    history = client.get_metric_history(run_id, "val_loss")
    assert result.epochs == epochs
    assert (
        sorted(point.step for point in history) == sorted({point.step for point in history}) and len(history) == epochs
    )
    assert [point.value for point in history[:2]] == [point.value for point in first_attempt]


def test_a_failing_step_stops_keeps_earlier_outputs_and_resumes_there(folder, tmp_path, monkeypatch):
    config = build_config(pipeline_config(folder, tmp_path))
    output = tmp_path / "out"

    def full_disk(context, run_id):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(pipeline.STEPS, "evaluate", full_disk)
    with pytest.raises(AnomalyError, match="pipeline step evaluate failed: OSError: .*No space left on device"):
        pipeline.run_pipeline(config, output, report=lambda line: None)
    state = PipelineState.load(output)
    assert [state.steps[name].status for name in ("train", "calibrate", "evaluate")] == [DONE, DONE, FAILED]
    assert (output / "evaluation" / "calibration.json").is_file() and "Traceback" in state.steps["evaluate"].error
    tracking = config.tracking.uri
    assert runs_by_name(tracking)["evaluate"][0].info.status == "FAILED"
    assert runs_by_name(tracking)["pipeline-out"][0].info.status == "FAILED"

    monkeypatch.undo()
    lines: list[str] = []
    metrics = pipeline.run_pipeline(config, output, report=lines.append)
    assert (
        "step train: done in an earlier run, skipped" in lines
        and "step calibrate: done in an earlier run, skipped" in lines
    )
    assert metrics["image_auroc"] > 0.9
    runs = runs_by_name(tracking)
    assert len(runs["train"]) == 1 and len(runs["calibrate"]) == 1
    assert sorted(run.info.status for run in runs["evaluate"]) == ["FAILED", "FINISHED"]
    assert runs["pipeline-out"][0].info.status == "FINISHED"


def test_a_changed_config_is_refused_in_the_same_output(folder, tmp_path):
    config = build_config(pipeline_config(folder, tmp_path))
    PipelineState(config.model_dump(mode="json"), "sqlite://", "0", "parent").save(tmp_path / "out")
    changed = build_config(pipeline_config(folder, tmp_path, max_epochs=5))
    with pytest.raises(AnomalyError, match=r"another config \(train.max_epochs: 2 -> 5\)"):
        pipeline.run_pipeline(changed, tmp_path / "out", report=lambda line: None)
