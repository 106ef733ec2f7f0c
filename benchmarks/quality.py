"""Detection quality, with baselines computed in the same run on the same splits.

- MNIST one-class: digits x {ae, vae, unet} x {reconstruction, latent, combined} image AUROC.
- KolektorSDD (MVTec layout): image AUROC, pixel AUROC, AUPRO.
- ELPV: image AUROC, defect probability 0 against >= 2/3.
Each data set's models train from the repository's pipeline configs; only epochs (and, in quick
mode, how many digits) differ between quick and full mode. Full mode trains KolektorSDD for its
config's own epochs, so the benchmark measures the config users run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.config import Config, load_config
from anomaly.evaluation.run import calibrate_checkpoint, evaluate_calibrated
from anomaly.export.publish import publish
from anomaly.runtime.bundle import OnnxDetector
from anomaly.training.train import train
from benchmarks.baselines import baseline_aurocs
from benchmarks.inference_speed import timings
from benchmarks.kept import kept_row

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


@dataclass(frozen=True)
class Mode:
    digits: tuple[int, ...]
    mnist_epochs: dict[str, int]  # architecture -> epochs; the architectures benchmarked
    kolektorsdd_epochs: int | None  # None: pipelines/folder.yaml's train.max_epochs
    elpv_epochs: int | None  # None: pipelines/elpv.yaml's, so the row measures the README's main command


QUICK = Mode(digits=(0, 8), mnist_epochs={"ae": 1}, kolektorsdd_epochs=2, elpv_epochs=2)
# The MNIST protocol of the scoring issue: the AE 10 epochs, the VAE and U-Net 5.
FULL = Mode(
    digits=tuple(range(10)), mnist_epochs={"ae": 10, "vae": 5, "unet": 5}, kolektorsdd_epochs=None, elpv_epochs=None
)


SPEED_BATCH = 8


def onnx_images_per_s(model_dir: Path, images: np.ndarray, repeats: int = 3) -> float:
    """Images/s of the exported graph (scores and maps) over `images` (uint8 NHWC), batch SPEED_BATCH."""
    detector = OnnxDetector(model_dir)
    batches = [images[i : i + SPEED_BATCH] for i in range(0, len(images), SPEED_BATCH)]
    return timings(lambda: [detector.run(batch) for batch in batches], repeats, len(images))["images_per_s"]


def metrics_row(metrics: dict[str, Any]) -> dict[str, float]:
    """From an evaluation's metrics.json: each signal's and the combination's image AUROC, the realised
    test FPR, and pixel AUROC and AUPRO when the test images have masks."""
    row = {
        "reconstruction_auroc": metrics["image"]["reconstruction"]["auroc"],
        "latent_auroc": metrics["image"]["latent"]["auroc"],
        "combined_auroc": metrics["image_auroc"],
        "test_fpr": metrics["test_fpr"],
    }
    if "pixel_auroc" in metrics:
        row |= {"pixel_auroc": metrics["pixel_auroc"], "pixel_aupro": metrics["pixel_aupro"]}
    return row


def chosen_scoring(scoring: dict[str, Any]) -> dict[str, Any]:
    """What calibration chose for the settings that can be auto (from calibration.json's scoring)."""
    return {"patch_level": scoring["latent"].get("level"), "combine": scoring["combine"]}


def train_and_evaluate(config: Config, scratch: Path, export_to: Path | None = None) -> dict[str, Any]:
    """Our detector (trained, calibrated, evaluated) and the baselines, on the same data module;
    `export_to` also exports the model directory (the HTTP benchmark serves it) and times it."""
    started = time.perf_counter()
    trained = train(config)
    training_seconds = time.perf_counter() - started
    evaluation_dir = scratch / (trained.run_id or "run")
    calibrated = calibrate_checkpoint(trained.checkpoint, [], evaluation_dir)
    run = calibrated.training_run
    metrics = evaluate_calibrated(calibrated, evaluation_dir, run["mlflow_run_id"], run["tracking_uri"])
    parity = None if export_to is None else publish(evaluation_dir, export_to, [], trained.run_id).parity
    datamodule = calibrated.datamodule
    test = datamodule.test_set
    row = {
        **metrics_row(metrics),
        "baselines": baseline_aurocs(datamodule.train_set.images, test.images, test.labels),
        "image_size": list(calibrated.detector.config.data.image_size),  # resolved, when the config says auto
        "train_images": len(datamodule.train_set),
        "test_images": len(test),
        "seconds": round(time.perf_counter() - started, 1),
        "training_seconds": round(training_seconds, 1),
        "mlflow_run_id": trained.run_id,
        "chosen_scoring": chosen_scoring(calibrated.calibration.scoring),
    }
    if export_to is not None:
        row["onnx_images_per_s"] = onnx_images_per_s(export_to, test.images)
        row["parity"] = parity  # ONNX Runtime against PyTorch: what publishing checked
    return row


def overrides_for(tracking_uri: str, output: Path, epochs: int | None) -> list[str]:
    """Where a benchmark run logs and writes; `epochs` None keeps the config's own train.max_epochs."""
    epochs_override = [] if epochs is None else [f"train.max_epochs={epochs}"]
    return [
        f"tracking.uri={tracking_uri}",
        f"output_dir={output}",
        *epochs_override,
        "trainer.enable_progress_bar=false",
    ]


def mnist(mode: Mode, datasets: Path, tracking_uri: str, scratch: Path, kept: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for architecture, epochs in mode.mnist_epochs.items():
        rows = {}
        for digit in mode.digits:
            config = load_config(
                PIPELINES / "mnist.yaml",
                [
                    *overrides_for(tracking_uri, scratch / "runs", epochs),
                    f"data.root={datasets}",
                    f"data.normal_class={digit}",
                    f"model.architecture={architecture}",
                ],
            )
            rows[str(digit)] = kept_row(
                kept, f"mnist-{architecture}-{digit}", lambda: train_and_evaluate(config, scratch)
            )
        results[architecture] = rows
    return results


def kolektorsdd_config(mode: Mode, datasets: Path, tracking_uri: str, scratch: Path) -> Config:
    overrides = [
        *overrides_for(tracking_uri, scratch / "runs", mode.kolektorsdd_epochs),
        f"data.root={datasets / 'kolektorsdd'}",
    ]
    return load_config(PIPELINES / "folder.yaml", overrides)


def elpv_config(mode: Mode, tracking_uri: str, scratch: Path) -> Config:
    return load_config(PIPELINES / "elpv.yaml", overrides_for(tracking_uri, scratch / "runs", mode.elpv_epochs))


def run(quick: bool, datasets: Path, scratch: Path, elpv_model: Path, kept: Path) -> dict[str, Any]:
    """All quality measurements; the ELPV model is exported to `elpv_model` for the HTTP benchmark. Each data set's
    rows are kept in `kept` as they finish (benchmarks.kept): the real surfaces first, MNIST's thirty models last."""
    mode = QUICK if quick else FULL
    tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
    kolektorsdd = kolektorsdd_config(mode, datasets, tracking_uri, scratch)
    elpv = elpv_config(mode, tracking_uri, scratch)
    measured = {
        "kolektorsdd": kept_row(kept, "kolektorsdd", lambda: train_and_evaluate(kolektorsdd, scratch)),
        "elpv": kept_row(kept, "elpv", lambda: train_and_evaluate(elpv, scratch, elpv_model), leaves=elpv_model),
        "mnist": mnist(mode, datasets, tracking_uri, scratch, kept),
    }
    epochs = {"mnist": mode.mnist_epochs, "kolektorsdd": kolektorsdd.train.max_epochs, "elpv": elpv.train.max_epochs}
    return {"mode": "quick" if quick else "full", "epochs": epochs, **measured}
