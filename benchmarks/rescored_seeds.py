"""The seeds section's KolektorSDD models re-scored with pipelines/folder.yaml's current scoring settings.

    uv run python -m benchmarks.run --sections rescored_seeds   # after --sections seeds; 51 minutes when last run

Scoring settings (scoring.*) change no weights, so a scoring change is measured on the same three
trained models without retraining them (the seeds section took 56 minutes when last run). Each model
is calibrated and evaluated again, logging to a copy of the seeds section's MLflow store so its recorded runs stay
as they were. Per seed: the test metrics, the validation AUROC (held-out normals plus synthetic anomalies) that
settings are chosen by, the seeds section's numbers for the same model, and the exported model's
size and ONNX Runtime images/s.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from anomaly.config import load_config
from anomaly.evaluation.run import evaluate_checkpoint
from anomaly.export.publish import publish
from anomaly.runtime.bundle import MODEL_FILE
from benchmarks.quality import PIPELINES, chosen_scoring, metrics_row, onnx_images_per_s
from benchmarks.seeds import mean_and_std

KEYS = (
    "combined_auroc",
    "reconstruction_auroc",
    "latent_auroc",
    "pixel_auroc",
    "pixel_aupro",
    "test_fpr",
    "recall_at_target_fpr",
    "onnx_images_per_s",
)


def scoring_overrides(pipeline: Path) -> list[str]:
    """Every scoring.* value of `pipeline` as a --set override (JSON is valid YAML)."""
    scoring = load_config(pipeline).scoring.model_dump(mode="json")
    return [f"scoring.{key}={json.dumps(value)}" for key, value in scoring.items()]


def rescore(checkpoint: Path, overrides: list[str], output: Path) -> dict[str, Any]:
    """Calibrate and evaluate again, then export (parity checked) and time the exported graph."""
    started = time.perf_counter()
    result = evaluate_checkpoint(checkpoint, overrides, output)
    metrics = result.metrics
    seconds = time.perf_counter() - started
    calibration = json.loads((output / "calibration.json").read_text())
    exported = publish(output, output / "model", [], None)
    return {
        **metrics_row(metrics),
        "recall_at_target_fpr": metrics["at_target_fpr"]["recall"],
        "validation_auroc": calibration["validation_auroc"],
        "chosen_scoring": chosen_scoring(calibration["scoring"]),
        "seconds": round(seconds, 1),
        "model_onnx_mb": round((exported.directory / MODEL_FILE).stat().st_size / 1e6, 1),
        "onnx_images_per_s": onnx_images_per_s(exported.directory, exported.datamodule.test_set.images),
    }


def run(quick: bool, datasets: Path, scratch: Path, results: Path) -> dict[str, Any]:
    seeds_file = results / "seeds.json"
    store = scratch / "mlflow-seeds.db"
    if not seeds_file.is_file() or not store.is_file():
        raise SystemExit(
            f"rescored_seeds re-scores the seeds section's models: run --sections seeds{' --quick' if quick else ''} "
            "first"
        )
    seeds_record = json.loads(seeds_file.read_text())
    copy = scratch / "mlflow-seeds-rescored.db"
    shutil.copyfile(store, copy)
    pipeline = PIPELINES / "folder.yaml"
    scoring = scoring_overrides(pipeline)
    overrides = [*scoring, f"data.root={datasets / 'kolektorsdd'}", f"tracking.uri=sqlite:///{copy}"]
    rows = {}
    for seed, before in seeds_record["seeds"]["seeds"].items():
        checkpoint = scratch / "runs" / before["mlflow_run_id"] / "checkpoints" / "best.ckpt"
        rows[seed] = {
            **rescore(checkpoint, overrides, scratch / f"rescored-seed-{seed}"),
            "mlflow_run_id": before["mlflow_run_id"],
            "seeds_section": {key: before[key] for key in KEYS if key in before},
        }
    return {
        "pipeline": "pipelines/folder.yaml",
        "scoring": scoring,
        "seeds_section_date": seeds_record["date"],
        "seeds": rows,
        **mean_and_std(rows, KEYS),
    }
