"""ELPV with the folder default: pipelines/folder.yaml as it is, with data.kind=elpv and nothing else
changed (its input size auto resolves to 288 x 288), one run. The real-defects issue asks for this
number next to KolektorSDD's, from the same default configuration.

    uv run python -m benchmarks.run --sections default_elpv

Quick mode: one epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomaly.config import load_config
from benchmarks.quality import PIPELINES, overrides_for, train_and_evaluate

DATA_OVERRIDE = "data.kind=elpv"


def run(quick: bool, scratch: Path) -> dict[str, Any]:
    overrides = [
        *overrides_for(f"sqlite:///{scratch / 'mlflow-default-elpv.db'}", scratch / "runs", 1 if quick else None),
        DATA_OVERRIDE,
    ]
    config = load_config(PIPELINES / "folder.yaml", overrides)
    return {
        "pipeline": "pipelines/folder.yaml",
        "overrides": [DATA_OVERRIDE],
        "epochs": config.train.max_epochs,
        "elpv": train_and_evaluate(config, scratch),
    }
