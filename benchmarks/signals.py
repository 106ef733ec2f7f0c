"""The shipped pipelines end to end: each signal alone and the chosen combination, per surface, with minutes per step.

    uv run python -m benchmarks.run --sections signals

Each surface runs `anomaly pipeline run` as a user would (train, calibrate, evaluate, export, parity, register,
promote): pipelines/folder.yaml on KolektorSDD (training seeds 0, 1 and 2) and BSData, pipelines/elpv.yaml (the
README's main command) on ELPV. A row holds the test image AUROC of the reconstruction error alone, the latent
distance alone and the combination the decision reads; the pixel AUROC of each signal's map and of the served heat
map, AUPRO; what validation chose and by how much (the choices' bootstrap intervals); the realised false-positive rate
at the calibrated 1%; and the seconds of every step. Quick mode: KolektorSDD, seed 0, two epochs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly.config import load_config
from anomaly.pipeline.run import run_pipeline
from benchmarks.kept import kept_row
from benchmarks.quality import PIPELINES

SEEDS = (0, 1, 2)


def runs(datasets: Path, quick: bool) -> dict[str, tuple[str, list[str]]]:
    """Each row's pipeline file and overrides."""
    kolektor = [f"data.root={datasets / 'kolektorsdd'}"]
    rows = {
        f"kolektorsdd-seed{seed}": ("folder.yaml", [*kolektor, f"train.seed={seed}"])
        for seed in (SEEDS[:1] if quick else SEEDS)
    }
    if not quick:
        rows["bsdata"] = ("folder.yaml", [f"data.root={datasets / 'bsdata'}"])
        rows["elpv"] = ("elpv.yaml", [])
    return rows


@dataclass(frozen=True)
class ShippedRun:
    """One `anomaly pipeline run` as a user runs it: where it wrote, its evaluation's metrics and calibration."""

    output: Path
    summary: dict[str, Any]
    metrics: dict[str, Any]
    calibration: dict[str, Any]
    seconds: float


def run_shipped(
    section: str, name: str, pipeline: str, overrides: list[str], scratch: Path, epochs: int | None
) -> ShippedRun:
    """Run pipelines/<pipeline> with `overrides` into scratch/<section>/<name>, logging to the section's own store."""
    output = scratch / section / name
    settings = [
        *overrides,
        f"tracking.uri=sqlite:///{scratch / f'mlflow-{section}.db'}",
        f"tracking.registered_model={section}-{name}",
        "trainer.enable_progress_bar=false",
        *([] if epochs is None else [f"train.max_epochs={epochs}"]),
    ]
    started = time.perf_counter()
    summary = run_pipeline(
        load_config(PIPELINES / pipeline, settings), output, restart=True, report=lambda line: print(line, flush=True)
    )
    seconds = time.perf_counter() - started
    evaluation = output / "evaluation"
    return ShippedRun(
        output,
        summary,
        json.loads((evaluation / "metrics.json").read_text()),
        json.loads((evaluation / "calibration.json").read_text()),
        seconds,
    )


def measure(name: str, pipeline: str, overrides: list[str], scratch: Path, quick: bool) -> dict[str, Any]:
    run = run_shipped("signals", name, pipeline, overrides, scratch, 2 if quick else None)
    metrics, calibration, summary, seconds = run.metrics, run.calibration, run.summary, run.seconds
    return {
        "overrides": overrides,
        "test_image_auroc": {signal: values["auroc"] for signal, values in metrics["image"].items()},
        "test_pixel_auroc": metrics.get("pixel_auroc"),
        "test_pixel_auroc_by_signal": metrics.get("pixel_auroc_by_signal"),
        "test_aupro": metrics.get("pixel_aupro"),
        "test_fpr_at_target": metrics["test_fpr"],
        "target_fpr": metrics["target_fpr"],
        "test_counts": metrics["counts"],
        "scoring": {
            "combine": calibration["scoring"]["combine"],
            "patch_level": calibration["scoring"]["latent"].get("level"),
        },
        "choices": calibration["choices"],
        "validation_auroc": {key: value for key, value in calibration["validation_auroc"].items() if "." not in key},
        "step_seconds": summary["step_seconds"],
        "seconds": round(seconds, 1),
    }


def run(quick: bool, datasets: Path, scratch: Path, kept: Path) -> dict[str, Any]:
    rows = {}
    for name, (pipeline, overrides) in runs(datasets, quick).items():
        rows[name] = kept_row(kept, f"signals-{name}", lambda: measure(name, pipeline, overrides, scratch, quick))
    return {"rows": rows}
