"""One pipeline run: seven steps, one MLflow parent run with a child run per step, resumable.

Each step's outputs are recorded under the output folder, so a re-run after a crash or kill
skips finished steps and starts at the first unfinished one. The calibrated detector and its
data are kept in memory between the steps of one process (read from disk once on a resume).
Training resumes inside its own MLflow run from its last epoch checkpoint. A failing step
marks its run and the parent FAILED, keeps everything earlier, and raises its error.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus

from anomaly.config import Config, build_config
from anomaly.errors import AnomalyError
from anomaly.evaluation.run import Calibrated, calibrate_checkpoint, evaluate_calibrated, load_calibrated
from anomaly.export.publish import export_bundle, read_metrics, verify_parity, write_card
from anomaly.export.registry import promote, register_version
from anomaly.pipeline.state import DONE, FAILED, RUNNING, PipelineState, StepRecord
from anomaly.training.tracking import resolve_tracking_uri
from anomaly.training.train import train

SUMMARY_METRICS = ("image_auroc", "image_aupr", "pixel_auroc", "pixel_aupro", "target_fpr", "test_fpr", "threshold")


@dataclass
class PipelineContext:
    config: Config
    output: Path
    state: PipelineState
    loaded: Calibrated | None = None

    def calibrated(self) -> Calibrated:
        """The calibrate step's detector, calibration and data: kept from the step that made them,
        or read from disk once when a resumed run starts after that step."""
        if self.loaded is None:
            self.loaded = load_calibrated(self.evaluation_dir)
        return self.loaded

    @property
    def checkpoint(self) -> Path:
        return Path(self.state.steps["train"].outputs["checkpoint"])

    @property
    def evaluation_dir(self) -> Path:
        return self.output / "evaluation"

    @property
    def model_dir(self) -> Path:
        return self.output / "model"


def step_train(context: PipelineContext, run_id: str) -> dict[str, Any]:
    config = build_config(context.config.model_dump(mode="json"), [f"output_dir={context.output / 'train'}"])
    result = train(config, run_id=run_id)
    return {"checkpoint": str(result.checkpoint), "best_val_loss": result.best_val_loss, "epochs": result.epochs}


def step_calibrate(context: PipelineContext, run_id: str) -> dict[str, Any]:
    context.loaded = calibrate_checkpoint(context.checkpoint, [], context.evaluation_dir)
    mlflow.MlflowClient().log_artifact(run_id, str(context.evaluation_dir / "calibration.json"))
    calibration = context.loaded.calibration
    outputs = {
        "calibration": str(context.evaluation_dir / "calibration.json"),
        "sample_sizes": calibration.sample_sizes,
    }
    warning = calibration.sample_size_warning()
    return outputs if warning is None else {**outputs, "warning": warning}


def step_evaluate(context: PipelineContext, run_id: str) -> dict[str, Any]:
    metrics = evaluate_calibrated(context.calibrated(), context.evaluation_dir, run_id, context.state.tracking_uri)
    return {key: metrics[key] for key in SUMMARY_METRICS if key in metrics}


def step_export(context: PipelineContext, run_id: str) -> dict[str, Any]:
    training_run = context.state.steps["train"].run_id
    export_bundle(context.calibrated(), context.evaluation_dir, context.model_dir, training_run)
    return {"model_dir": str(context.model_dir)}


def step_parity(context: PipelineContext, run_id: str) -> dict[str, Any]:
    calibrated = context.calibrated()
    try:
        report = verify_parity(calibrated, context.model_dir)
    except AnomalyError:
        rejected = context.output / "model-failed-parity"
        shutil.rmtree(rejected, ignore_errors=True)
        context.model_dir.rename(rejected)  # never leave a model that disagrees with PyTorch where it would be served
        raise
    write_card(
        calibrated, read_metrics(context.evaluation_dir), report, context.model_dir, context.state.steps["train"].run_id
    )
    client = mlflow.MlflowClient()
    for key, value in report.items():
        client.log_metric(run_id, f"parity.{key}", value)
    return {"parity": report}


def step_register(context: PipelineContext, run_id: str) -> dict[str, Any]:
    example = context.calibrated().sample_images
    name = context.config.tracking.registered_model
    version = register_version(context.model_dir, name, run_id, example)
    return {"name": name, "version": version, "model_uri": f"models:/{name}/{version}"}


def step_promote(context: PipelineContext, run_id: str) -> dict[str, Any]:
    registered = context.state.steps["register"].outputs
    datamodule = context.calibrated().datamodule
    result = promote(
        context.model_dir,
        registered["name"],
        registered["version"],
        run_id,
        datamodule.labelled_validation_set(),
        datamodule.test_set,
    )
    return {
        "promoted": result.promoted,
        "challenger_auroc": result.challenger_auroc,
        "champion_auroc": result.champion_auroc,
        "champion_version": result.champion_version,
        "challenger_test_auroc": result.challenger_test_auroc,
        "champion_test_auroc": result.champion_test_auroc,
    }


STEPS: dict[str, Callable[[PipelineContext, str], dict[str, Any]]] = {
    "train": step_train,
    "calibrate": step_calibrate,
    "evaluate": step_evaluate,
    "export": step_export,
    "parity": step_parity,
    "register": step_register,
    "promote": step_promote,
}


def open_state(config: Config, output: Path, restart: bool) -> PipelineState:
    """The existing record in `output` (same config required), or a new parent run and record."""
    resolved = config.model_dump(mode="json")
    if restart and output.exists():
        shutil.rmtree(output)
    state = PipelineState.load(output)
    if state is not None:
        state.check_same_config(resolved, output)
        mlflow.set_tracking_uri(state.tracking_uri)
        return state
    tracking_uri = resolve_tracking_uri(config)
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(config.tracking.experiment)
    parent = mlflow.MlflowClient().create_run(
        experiment.experiment_id,
        run_name=config.tracking.run_name or f"pipeline-{output.name}",
        tags={"anomaly.pipeline": "parent", "anomaly.output": str(output.resolve())},
    )
    state = PipelineState(resolved, tracking_uri, experiment.experiment_id, parent.info.run_id)
    state.save(output)
    return state


def step_run(state: PipelineState, name: str) -> str:
    """The MLflow child run for `name`: training continues its own run; other steps start a clean
    one (an interrupted attempt is marked KILLED, so its partial metrics never mix with the new ones)."""
    client = mlflow.MlflowClient()
    previous = state.steps.get(name)
    if previous is not None and name == "train":
        return previous.run_id
    if previous is not None and client.get_run(previous.run_id).info.status == "RUNNING":
        client.set_terminated(previous.run_id, "KILLED")
    child = client.create_run(
        state.experiment_id, run_name=name, tags={"mlflow.parentRunId": state.parent_run_id, "anomaly.pipeline": "step"}
    )
    return child.info.run_id


def run_step(context: PipelineContext, name: str, report: Callable[[str], None]) -> None:
    state, client = context.state, mlflow.MlflowClient()
    client.update_run(state.parent_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    run_id = step_run(state, name)
    state.steps[name] = StepRecord(RUNNING, run_id)
    state.save(context.output)
    report(f"step {name}: running (MLflow run {run_id})")
    started = time.perf_counter()
    try:
        outputs = STEPS[name](context, run_id)
    except BaseException as error:
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
        message = str(error) if isinstance(error, AnomalyError) else f"{type(error).__name__}: {error}"
        error_text = message if interrupted else message + "\n" + traceback.format_exc()
        state.steps[name] = StepRecord(
            FAILED, run_id, error=error_text, seconds=round(time.perf_counter() - started, 1)
        )
        state.save(context.output)
        status = "KILLED" if interrupted else "FAILED"
        client.set_terminated(run_id, status)
        client.set_terminated(state.parent_run_id, status)
        if interrupted:
            raise
        raise AnomalyError(
            f"pipeline step {name} failed: {message.splitlines()[0]} (earlier steps are kept; run again to resume)"
        ) from None
    seconds = round(time.perf_counter() - started, 1)
    state.steps[name] = StepRecord(DONE, run_id, outputs, seconds=seconds)
    state.save(context.output)
    client.set_terminated(run_id, "FINISHED")
    report(f"step {name}: done in {seconds:.0f} s")
    if "warning" in outputs:
        report(f"warning: {outputs['warning']}")


def write_summary(context: PipelineContext) -> dict[str, Any]:
    """DIR/metrics.json, and the parent run's headline metrics and tags."""
    steps = context.state.steps
    metrics = {
        **steps["evaluate"].outputs,
        "model_uri": steps["register"].outputs["model_uri"],
        "model_dir": str(context.model_dir),
        "champion": steps["promote"].outputs["promoted"],
        "parent_run_id": context.state.parent_run_id,
        "training_run_id": steps["train"].run_id,
        "step_seconds": {name: record.seconds for name, record in steps.items()},
    }
    (context.output / "metrics.json").write_text(json.dumps(metrics, indent=1))
    client = mlflow.MlflowClient()
    for key in SUMMARY_METRICS:
        if key in metrics:
            client.log_metric(context.state.parent_run_id, key, float(metrics[key]))
    client.set_tag(context.state.parent_run_id, "model_uri", metrics["model_uri"])
    client.log_artifact(context.state.parent_run_id, str(context.output / "metrics.json"))
    client.set_terminated(context.state.parent_run_id, "FINISHED")
    return metrics


def run_pipeline(
    config: Config, output: Path, restart: bool = False, report: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run (or resume) every step not yet done; return what DIR/metrics.json holds."""
    state = open_state(config, output, restart)
    context = PipelineContext(config, output, state)
    finished = all(name in state.steps and state.steps[name].status == DONE for name in STEPS)
    if finished and (output / "metrics.json").is_file():
        report("every step is done already; nothing to run (--restart runs the pipeline again)")
        return json.loads((output / "metrics.json").read_text())
    for name in STEPS:
        if name in state.steps and state.steps[name].status == DONE:
            report(f"step {name}: done in an earlier run, skipped")
            continue
        run_step(context, name, report)
    return write_summary(context)
