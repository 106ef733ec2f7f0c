"""The `anomaly` command line. Heavy imports (torch, MLflow) happen inside commands that need them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anomaly.errors import AnomalyError
from anomaly.quiet import quiet_libraries

if TYPE_CHECKING:  # imported where used: `anomaly score` must not load MLflow or torch
    from anomaly.config import Config
    from anomaly.export.registry import Registration

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def cli() -> None:
    """Image anomaly detection with convolutional autoencoders."""


ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: --set model.depth=3 (repeatable).")
]
ExtraOverrides = Annotated[
    list[str] | None,
    typer.Argument(help="More key=value overrides, e.g. after --set: data.kind=folder data.root=DIR."),
]


def collect_overrides(options: list[str] | None, extra: list[str] | None) -> list[str]:
    overrides = [*(options or []), *(extra or [])]
    for item in overrides:
        if "=" not in item:
            raise AnomalyError(f"unexpected argument '{item}': overrides look like key.sub=value")
    return overrides


def load_run_config(path: Path, set_: list[str] | None, overrides: list[str] | None) -> Config:
    """The config to train with; settings that its encoder ignores are named in one warning line."""
    from anomaly.config import ignored_settings_warning, load_config

    config = load_config(path, collect_overrides(set_, overrides))
    warning = ignored_settings_warning(config)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    return config


@app.command()
def train(config: ConfigOption, set_: SetOption = None, overrides: ExtraOverrides = None) -> None:
    """Train a model on normal images and record the run in MLflow."""
    resolved = load_run_config(config, set_, overrides)
    from anomaly.training.train import train as run_training

    quiet_libraries()  # after the import: Lightning and MLflow set their loggers up when imported

    result = run_training(resolved)
    if not result.is_global_zero:
        return
    typer.echo(f"mlflow run id: {result.run_id}")
    typer.echo(f"tracking uri: {result.tracking_uri}")
    typer.echo(f"checkpoint: {result.checkpoint}")
    typer.echo(f"best val loss: {result.best_val_loss:.6f} after {result.epochs} epochs")


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Checkpoint written by `anomaly train`.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for metrics.json, plots, calibration.")
    ] = None,
    set_: SetOption = None,
    overrides: ExtraOverrides = None,
) -> None:
    """Calibrate on held-out normal images, then evaluate on the test images."""
    from anomaly.evaluation.run import evaluate_checkpoint

    quiet_libraries()  # after the import: Lightning and MLflow set their loggers up when imported

    folder = output or checkpoint.parent.parent / "evaluation"
    result = evaluate_checkpoint(checkpoint, collect_overrides(set_, overrides), folder)
    metrics = result.metrics
    typer.echo(f"image auroc: {metrics['image_auroc']:.4f} (combined)")
    for signal, values in metrics["image"].items():
        typer.echo(f"  {signal}: auroc {values['auroc']:.4f}, aupr {values['aupr']:.4f}")
    typer.echo(
        f"at target fpr {metrics['target_fpr']}: test fpr {metrics['test_fpr']:.4f}, recall "
        f"{metrics['at_target_fpr']['recall']:.4f}"
    )
    if "pixel_auroc" in metrics:
        typer.echo(f"pixel auroc: {metrics['pixel_auroc']:.4f}, aupro: {metrics['pixel_aupro']:.4f}")
    typer.echo(f"metrics: {result.output_dir / 'metrics.json'}")
    if result.warning:
        typer.echo(f"warning: {result.warning}", err=True)


@app.command()
def oneclass(
    config: ConfigOption,
    classes: Annotated[str, typer.Option(help="Comma-separated normal classes.")] = "0,1,2,3,4,5,6,7,8,9",
    architectures: Annotated[str, typer.Option(help="Comma-separated: ae, vae, unet.")] = "ae",
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("runs/oneclass"),
    set_: SetOption = None,
    overrides: ExtraOverrides = None,
) -> None:
    """The one-class protocol: train and evaluate with each class in turn as the normal one."""
    from anomaly.evaluation.oneclass import markdown_table, run_oneclass

    quiet_libraries()  # after the import: Lightning and MLflow set their loggers up when imported

    try:
        class_list = [int(item) for item in classes.split(",")]
    except ValueError:
        raise AnomalyError(f"--classes takes comma-separated integers, got '{classes}'") from None
    results = run_oneclass(config, collect_overrides(set_, overrides), class_list, architectures.split(","), output)
    typer.echo(markdown_table(results))
    typer.echo(f"results: {output / 'oneclass.json'}")


@app.command()
def export(
    evaluation: Annotated[Path, typer.Option("--evaluation", "-e", help="Folder written by `anomaly evaluate`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model directory to write.")],
    int8: Annotated[
        bool,
        typer.Option("--int8", help="Also try int8 static quantisation (kept if validation AUROC drops <= 0.005)."),
    ] = False,
    register_as: Annotated[str | None, typer.Option("--register", help="Register in MLflow under this name.")] = None,
    set_: SetOption = None,
    overrides: ExtraOverrides = None,
) -> None:
    """Export to ONNX with the scoring head, check parity, write the model directory."""
    import json

    from anomaly.export.publish import publish

    quiet_libraries()  # after the import: Lightning and MLflow set their loggers up when imported

    run = json.loads((evaluation / "run.json").read_text()) if (evaluation / "run.json").is_file() else {}
    result = publish(evaluation, output, collect_overrides(set_, overrides), run.get("mlflow_run_id"))
    typer.echo(f"model directory: {result.directory}")
    typer.echo("parity: " + json.dumps(result.parity))
    if int8 or register_as:
        test, validation = result.datamodule.test_set, result.datamodule.labelled_validation_set()
    if int8:
        from anomaly.export.quantize import quantise_bundle
        from anomaly.runtime.bundle import OnnxDetector

        quantised = quantise_bundle(
            OnnxDetector(result.directory),
            result.datamodule.calibration_set.images,
            validation,
            test,
            result.directory.with_name(result.directory.name + "-int8"),
        )
        verdict = f"kept at {quantised.directory}" if quantised.kept else "dropped"
        on_validation = (
            "no labelled validation set (data.synthetic_validation) to decide on"
            if quantised.fp32_auroc is None
            else f"validation auroc {quantised.int8_auroc:.4f} vs fp32 {quantised.fp32_auroc:.4f}"
        )
        typer.echo(
            f"int8: {on_validation} (test {quantised.int8_test_auroc:.4f} vs {quantised.fp32_test_auroc:.4f}): "
            f"{verdict}"
        )
    if register_as:
        import mlflow

        from anomaly.export.registry import register
        from anomaly.training.tracking import resolve_tracking_uri

        mlflow.set_tracking_uri(run.get("tracking_uri") or resolve_tracking_uri(result.detector.config))
        registration = register(result.directory, register_as, run.get("mlflow_run_id"), validation, test)
        typer.echo(f"registered {registration.name} v{registration.version}: {registration_summary(registration)}")


@app.command()
def score(
    model: Annotated[str, typer.Option("--model", "-m", help="Model directory or models:/NAME@ALIAS.")],
    images: Annotated[list[Path] | None, typer.Argument(help="Image files: one JSON line each on stdout.")] = None,
    input_: Annotated[
        str | None,
        typer.Option(
            "--input", help="Archive: a folder or URI (s3://, gs://, any fsspec URI) of images, scored into --output."
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Archive: folder (or URI) of Parquet results; a rerun skips the images already in it.",
        ),
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Archive: score in this process instead of on Ray.")] = False,
    actors: Annotated[
        int | None,
        typer.Option(min=1, help="Archive on Ray: ONNX Runtime actors (default: one per CPU of the cluster)."),
    ] = None,
    heatmaps: Annotated[
        bool, typer.Option("--heatmaps", help="Archive: also write each heat map as a PNG in OUTPUT-heatmaps/.")
    ] = False,
    rows_per_file: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Archive: rows per Parquet part at most (default 256), the most a killed job re-scores per writer.",
        ),
    ] = None,
    target_fpr: Annotated[
        float | None, typer.Option(help="Override the calibrated target false-positive rate.")
    ] = None,
    fdr: Annotated[
        float | None,
        typer.Option(
            help="Archive: flag by Benjamini-Hochberg over the whole archive at this false-discovery rate (the share "
            "of flagged images that are normal) instead of a per-image false-positive rate."
        ),
    ] = None,
) -> None:
    """Score image files (JSON lines) or a whole archive (--input, --output: Parquet, on Ray when installed), with
    ONNX Runtime and no torch."""
    import json

    from anomaly.runtime.bundle import check_target_fpr

    check_target_fpr(target_fpr)
    if input_ is not None or output is not None:
        if images or input_ is None or output is None:
            raise AnomalyError("archive scoring takes --input and --output together, and no image arguments")
        from anomaly.archive.job import score_archive

        options = {} if rows_per_file is None else {"rows_per_file": rows_per_file}
        summary = score_archive(model, input_, output, local, actors, target_fpr, heatmaps, fdr=fdr, **options)
        typer.echo(json.dumps(summary.to_dict()))
        return
    if fdr is not None:
        raise AnomalyError("--fdr decides over a whole archive: give --input and --output")
    if not images:
        raise AnomalyError("give image files, or --input FOLDER --output RESULTS for an archive")
    score_files(model, images, target_fpr)


def score_files(model: str, images: list[Path], target_fpr: float | None) -> None:
    """One JSON line per image; exit 2 after the others are scored when any file cannot be decoded."""
    import json

    import numpy as np

    from anomaly.runtime.bundle import OnnxDetector
    from anomaly.runtime.resolve import resolve_model

    detector = OnnxDetector(resolve_model(model).directory)
    decoded, failures = {}, 0
    for path in images:
        try:
            decoded[path] = detector.load_image(path)
        except AnomalyError as error:
            typer.echo(f"error: {error}", err=True)
            failures += 1
    if decoded:
        results = detector.results(detector.run(np.stack(list(decoded.values()))), target_fpr)
        for path, result in zip(decoded, results):
            typer.echo(json.dumps({"image": str(path), **result.to_dict()}))
    if failures:
        raise typer.Exit(code=2)


@app.command()
def calibrate(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model directory or models:/NAME@ALIAS (or models:/NAME/VERSION).")
    ],
    normals: Annotated[Path, typer.Option("--normals", help="Folder of normal images from the line as it is now.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write a recalibrated copy here instead of recalibrating the model directory in place.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Recalibrate even when the current calibration flags most of the images.")
    ] = False,
) -> None:
    """Refit the calibration of an exported model on a folder of normal images (ONNX Runtime, no torch, no retraining).
    A directory is recalibrated in place (the replaced calibration is kept beside it) or into --output; a registered
    model gets a new version with the same weights, and the alias it was named by moves to it."""
    import json

    from anomaly.calibration.recalibrate import recalibrate

    done, version = recalibrate(model, normals, output, force)
    promise = done.promise
    supported = (
        "cannot resolve it"
        if promise.realised_rate_range is None
        else "supports {:.2%} to {:.2%}".format(*promise.realised_rate_range)
    )
    typer.echo(
        f"recalibrated {done.location} on {done.images} normal images ({done.flagged_by_previous} flagged by the "
        f"replaced calibration); at {promise.target_fpr:.2%} the new one {supported}",
        err=True,
    )
    typer.echo(json.dumps({**done.to_dict(), "registered_version": version}))


pipeline_app = typer.Typer(
    no_args_is_help=True, help="Pipeline runs: train, calibrate, evaluate, export, register, promote."
)
app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command("run")
def pipeline_run(
    config: ConfigOption,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Folder for every step's outputs (default: runs/<config name>)."),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an earlier run in --output and start over.")
    ] = False,
    set_: SetOption = None,
    overrides: ExtraOverrides = None,
) -> None:
    """Train -> calibrate -> evaluate -> export -> parity -> register -> promote, resumable; one MLflow parent run."""
    import json

    resolved = load_run_config(config, set_, overrides)
    from anomaly.pipeline.run import run_pipeline

    quiet_libraries()  # after the import: Lightning and MLflow set their loggers up when imported

    folder = output or Path("runs") / config.stem
    summary = run_pipeline(resolved, folder, restart, report=lambda line: typer.echo(line, err=True))
    model_dir = summary["model_dir"]
    typer.echo(f"metrics: {folder / 'metrics.json'}", err=True)
    typer.echo(f"serve it:  uv run anomaly serve --model {model_dir}   (or --model {summary['model_uri']})", err=True)
    typer.echo("query it:  curl -F image=@IMAGE.png 'http://127.0.0.1:3000/score?heatmap=true'", err=True)
    typer.echo(json.dumps({"status": "finished", "output": str(folder), **summary}))


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", envvar="ANOMALY_MODEL", help="Model directory or models:/NAME@ALIAS."),
    ] = None,
    host: Annotated[
        str, typer.Option(envvar="ANOMALY_HOST", help="Interface to listen on (0.0.0.0 in a container).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="Port to listen on.")] = 3000,
) -> None:
    """Serve a model over HTTP with BentoML and ONNX Runtime (needs the serve extra; no torch)."""
    import os

    from anomaly.runtime.bundle import OnnxDetector
    from anomaly.runtime.resolve import resolve_model

    try:
        import bentoml  # noqa: F401  (checked here for a clear message; the service imports it)

        import serving
        from serving.settings import ALLOCATOR_ENV, ServingSettings
        from serving.supervision import remove_stale_socket_folders
    except ImportError as error:
        raise AnomalyError(f"serving needs the serve extra (uv sync --extra serve): {error}") from None
    if model is None:
        raise AnomalyError("no model to serve: pass --model DIR or models:/NAME@ALIAS, or set ANOMALY_MODEL")
    settings = ServingSettings.from_env({**os.environ, "ANOMALY_MODEL": model})
    OnnxDetector(resolve_model(model).directory)  # fail here, in one line, rather than in a worker
    ensure_port_free(host, port)
    remove_stale_socket_folders()
    root = Path(serving.__file__).resolve().parent.parent
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:AnomalyService",
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(root),
    ]
    typer.echo(f"serving {model} on http://{host}:{port} (POST /score, /score_batch; GET /model, /readyz, /metrics)")
    os.execve(sys.executable, command, {**ALLOCATOR_ENV, **os.environ, **settings.to_env()})


def registration_summary(registration: Registration) -> str:
    """What the champion decision compared (validation) and what it reported beside (test)."""

    def auroc(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    outcome = "promoted to champion" if registration.promoted else "champion kept"
    if registration.champion_version is None:
        challenger, on_test = auroc(registration.challenger_auroc), auroc(registration.challenger_test_auroc)
        return f"first version, validation auroc {challenger} (test {on_test}): {outcome}"
    return (
        f"validation auroc {auroc(registration.challenger_auroc)} vs champion v{registration.champion_version} "
        f"{auroc(registration.champion_auroc)} (test {auroc(registration.challenger_test_auroc)} vs "
        f"{auroc(registration.champion_test_auroc)}): {outcome}"
    )


def ensure_port_free(host: str, port: int) -> None:
    """A one-line refusal when something already listens on host:port (another `anomaly serve`, say)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        raise AnomalyError(
            f"cannot listen on {host}:{port}: {error.strerror}; stop what uses it or pass --port"
        ) from None


def main() -> None:
    quiet_libraries()
    try:
        app()
    except AnomalyError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
