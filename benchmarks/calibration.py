"""Does the 1% (and 5%) promise hold on test normals? Every surface with its committed pipeline, one run.

    uv run python -m benchmarks.run --sections calibration

Each row runs `anomaly pipeline run` as a user would: pipelines/folder.yaml on KolektorSDD (training seeds 0, 1 and 2)
and BSData, pipelines/elpv.yaml on ELPV, pipelines/mnist.yaml on every MNIST digit. It records the realised
false-positive rate on the test normals at each calibration target (metrics.json's calibration curve) with its 95%
binomial range for that many test normals, the calibration normals behind the decision, and the image AUROC.

The same trained model is then recalibrated on its hold-out alone (no cross-fitted training normals), so each row
also gives the hold-out scheme without cross-fitting; one more KolektorSDD run holds out single images at random
(data.holdout=random), the scheme the pipelines used before, with and without cross-fitting.
Quick mode: KolektorSDD seed 0 at two epochs and MNIST digit 0 at one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anomaly.calibration.artifact import Calibration
from anomaly.calibration.fit import fit_calibration
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.evaluation.evaluate import calibration_curve
from anomaly.evaluation.run import load_calibrated
from anomaly.scoring.fit import score_loader
from benchmarks.kept import kept_row
from benchmarks.signals import run_shipped

SEEDS = (0, 1, 2)
TARGETS = (0.01, 0.05)


def runs(datasets: Path, quick: bool) -> dict[str, tuple[str, list[str]]]:
    """Each row's pipeline file and overrides."""
    kolektor = [f"data.root={datasets / 'kolektorsdd'}"]
    rows = {
        f"kolektorsdd-seed{seed}": ("folder.yaml", [*kolektor, f"train.seed={seed}"])
        for seed in (SEEDS[:1] if quick else SEEDS)
    }
    digits = (0,) if quick else range(10)
    rows.update(
        {f"mnist-{digit}": ("mnist.yaml", [f"data.root={datasets}", f"data.normal_class={digit}"]) for digit in digits}
    )
    if not quick:
        rows["kolektorsdd-random-holdout"] = ("folder.yaml", [*kolektor, "train.seed=0", "data.holdout=random"])
        rows["bsdata"] = ("folder.yaml", [f"data.root={datasets / 'bsdata'}"])
        rows["elpv"] = ("elpv.yaml", [])
    return rows


def rates(calibration: Calibration, combined_pvalues: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Realised false-positive rate on the test normals at each of TARGETS, with its 95% binomial range: the points
    of evaluation's calibration curve."""
    curve = {str(point["target_fpr"]): point for point in calibration_curve(calibration, combined_pvalues, labels)}
    return {
        str(target): {
            "flagged": curve[str(target)]["flagged"],
            "realised_fpr": curve[str(target)]["realised_fpr"],
            "interval": (curve[str(target)]["interval_low"], curve[str(target)]["interval_high"]),
        }
        for target in TARGETS
    }


def holdout_alone(evaluation: Path) -> dict[str, Any]:
    """The trained detector recalibrated on its hold-out alone, and both calibrations' rates on the test normals."""
    calibrated = load_calibrated(evaluation)
    detector, calibration = calibrated.detector, calibrated.calibration
    datamodule = AnomalyDataModule(detector.config.data)
    datamodule.setup()
    held_out = score_loader(
        detector, datamodule.calibration_dataloader(), signal_maps=True, description="held-out normals again"
    )
    held_out = held_out.with_mixed_maps(tuple(float(weight) for weight in detector.map_weights))
    alone = fit_calibration(
        held_out,
        calibration.scoring,
        calibration.preprocessing,
        calibration.model_checksum,
        detector.config.data.split_seed,
    )
    test = score_loader(detector, datamodule.test_dataloader(), description="test images again")
    return {
        name: {
            "calibration_normals": fitted.promise().calibration_normals,
            "rates": rates(
                fitted, fitted.pvalues(test.reconstruction_scores, test.latent_distances).combined, test.labels
            ),
        }
        for name, fitted in (("with_cross_fit", calibration), ("holdout_alone", alone))
    }


def measure(name: str, pipeline: str, overrides: list[str], scratch: Path, quick: bool) -> dict[str, Any]:
    run = run_shipped(
        "calibration", name, pipeline, overrides, scratch, (1 if pipeline == "mnist.yaml" else 2) if quick else None
    )
    metrics, calibration = run.metrics, run.calibration
    return {
        "overrides": overrides,
        "test_image_auroc": metrics["image_auroc"],
        "test_counts": metrics["counts"],
        "calibration_curve": metrics["calibration_curve"],
        "promise": calibration["promise"],
        "holdout": calibration["holdout"],
        "sample_sizes": calibration["sample_sizes"],
        "combine": calibration["scoring"]["combine"],
        **holdout_alone(run.output / "evaluation"),
        "seconds": round(run.seconds, 1),
    }


def run(quick: bool, datasets: Path, scratch: Path, kept: Path) -> dict[str, Any]:
    rows = {}
    for name, (pipeline, overrides) in runs(datasets, quick).items():
        rows[name] = kept_row(kept, f"calibration-{name}", lambda: measure(name, pipeline, overrides, scratch, quick))
    return {"rows": rows}
