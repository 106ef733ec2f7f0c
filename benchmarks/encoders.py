"""Own and pretrained encoders side by side: the folder default on every real surface, quality, speed and size.

    uv run python -m benchmarks.run --sections encoders

For KolektorSDD and BSData (MVTec layout, with masks), pipelines/folder.yaml, and for ELPV (the elpv-dataset package)
pipelines/elpv.yaml (folder.yaml's settings with ELPV's data section), are trained twice: as they are (a frozen
pretrained EfficientNet-Lite0 encoder) and with the autoencoder's own encoder (OWN_ENCODER: the settings the folder
default had before pretrained encoders). Each row: the validation AUROCs that
settings are chosen by, test image AUROC per signal, pixel AUROC and AUPRO where there are masks, training and total
seconds, model.onnx size and ONNX Runtime images/s on the test images (with preprocessing, batch 8), with the
IsolationForest and PCA baselines of the same split. Quick mode: one epoch, KolektorSDD only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anomaly.config import load_config
from anomaly.runtime.bundle import CALIBRATION_FILE, MODEL_FILE
from benchmarks.kept import kept_row
from benchmarks.quality import PIPELINES, overrides_for, train_and_evaluate

OWN_ENCODER = ["model.encoder=own", "loss.terms={mse: 1.0, ssim: 0.5}", "train.max_epochs=4"]
ENCODERS = {"efficientnet_lite0": [], "own": OWN_ENCODER}


def surfaces(datasets: Path, quick: bool) -> dict[str, tuple[str, list[str]]]:
    """Each surface's pipeline file and data overrides. ELPV has its own file, not `data.kind=elpv` on folder.yaml:
    a new data kind starts the data section afresh, without folder.yaml's synthetic validation."""
    found = {
        "kolektorsdd": ("folder.yaml", [f"data.root={datasets / 'kolektorsdd'}"]),
        "bsdata": ("folder.yaml", [f"data.root={datasets / 'bsdata'}"]),
        "elpv": ("elpv.yaml", []),
    }
    return {"kolektorsdd": found["kolektorsdd"]} if quick else found


def measure(surface: str, encoder: str, pipeline: str, overrides: list[str], scratch: Path) -> dict[str, Any]:
    model_dir = scratch / f"encoders-{surface}-{encoder}"
    row = train_and_evaluate(load_config(PIPELINES / pipeline, overrides), scratch, export_to=model_dir)
    calibration = json.loads((model_dir / CALIBRATION_FILE).read_text())
    row["validation_auroc"] = {key: value for key, value in calibration["validation_auroc"].items() if "." not in key}
    row["model_onnx_mb"] = round((model_dir / MODEL_FILE).stat().st_size / 1e6, 1)
    return row


def measure_row(surface: str, encoder: str, quick: bool, datasets: Path, scratch: Path, kept: Path) -> dict[str, Any]:
    """One surface with one encoder, kept in `kept` as it finishes (benchmarks.kept)."""
    (pipeline, data), settings = surfaces(datasets, quick)[surface], ENCODERS[encoder]
    overrides = [
        *overrides_for(f"sqlite:///{scratch / 'mlflow-encoders.db'}", scratch / "runs", 1 if quick else None),
        *data,
        *settings,
    ]
    return kept_row(
        kept,
        f"encoders-{surface}-{encoder}",
        lambda: {**measure(surface, encoder, pipeline, overrides, scratch), "overrides": [*data, *settings]},
    )


def run(quick: bool, datasets: Path, scratch: Path, kept: Path) -> dict[str, Any]:
    """Surface by surface, the pretrained encoder and then the own one, so an unfinished run still holds whole pairs.
    An interrupted section resumes with the rows it lacks (`measure_row` measures one row alone)."""
    rows: dict[str, dict[str, Any]] = {}
    for surface in surfaces(datasets, quick):
        for encoder in ENCODERS:
            rows.setdefault(surface, {})[encoder] = measure_row(surface, encoder, quick, datasets, scratch, kept)
    pipelines = {surface: f"pipelines/{pipeline}" for surface, (pipeline, _) in surfaces(datasets, quick).items()}
    return {"pipelines": pipelines, "own_encoder_overrides": OWN_ENCODER, "surfaces": rows}
