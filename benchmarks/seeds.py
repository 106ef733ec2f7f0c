"""Real defects over training seeds: KolektorSDD with the folder default, pipelines/folder.yaml as it is, seeds 0, 1, 2.

    uv run python -m benchmarks.run --sections seeds

Per seed: image AUROC of each signal and of the combination, pixel AUROC, AUPRO, the realised
FPR, training seconds, and how fast the exported ONNX model scores the test images. Then mean
and standard deviation over the seeds. Quick mode: one seed, one epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anomaly.config import Config, load_config
from benchmarks.kept import kept_row
from benchmarks.quality import PIPELINES, overrides_for, train_and_evaluate

SEEDS = (0, 1, 2)
SPREAD_KEYS = (
    "combined_auroc",
    "reconstruction_auroc",
    "latent_auroc",
    "pixel_auroc",
    "pixel_aupro",
    "test_fpr",
    "training_seconds",
    "onnx_images_per_s",
)


def run(quick: bool, datasets: Path, scratch: Path, kept: Path) -> dict[str, Any]:
    """Each seed's row is kept in `kept` as it finishes (benchmarks.kept), and measured again if its exported model,
    which the rescored_seeds section reads, is gone."""
    pipeline = PIPELINES / "folder.yaml"
    data_root = f"data.root={datasets / 'kolektorsdd'}"
    overrides = [
        *overrides_for(f"sqlite:///{scratch / 'mlflow-seeds.db'}", scratch / "runs", 1 if quick else None),
        data_root,
    ]
    configs = {
        seed: load_config(pipeline, [*overrides, f"train.seed={seed}"]) for seed in (SEEDS[:1] if quick else SEEDS)
    }
    rows = {str(seed): seed_row(seed, config, scratch, kept) for seed, config in configs.items()}
    return {
        "pipeline": "pipelines/folder.yaml",
        "epochs": configs[SEEDS[0]].train.max_epochs,
        "seeds": rows,
        **mean_and_std(rows, SPREAD_KEYS),
    }


def seed_row(seed: int, config: Config, scratch: Path, kept: Path) -> dict[str, Any]:
    model = scratch / f"kolektorsdd-seed-{seed}"
    return kept_row(
        kept, f"seeds-kolektorsdd-{seed}", lambda: train_and_evaluate(config, scratch, export_to=model), leaves=model
    )


def mean_and_std(rows: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """{"mean": ..., "std": ...} of each key over the per-seed rows."""
    values = {key: [row[key] for row in rows.values()] for key in keys}
    return {
        "mean": {key: float(np.mean(v)) for key, v in values.items()},
        "std": {key: float(np.std(v)) for key, v in values.items()},
    }
