"""Parity: ONNX Runtime must reproduce PyTorch on real images before a model is published."""

from __future__ import annotations

import numpy as np
import torch

from anomaly.errors import AnomalyError
from anomaly.runtime.bundle import OnnxDetector, batch_size_for
from anomaly.scoring.detector import AnomalyDetector

SCORE_RTOL = 1e-4
MAP_RTOL = 1e-3
MAPS = ("anomaly_map",)


@torch.no_grad()
def pytorch_outputs(detector: AnomalyDetector, images: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The detector's whole forward pass over `images` (uint8 NHWC), outputs `names`, in the batches ONNX Runtime
    uses, so a large input does not exhaust memory here either."""
    size = batch_size_for(*images.shape[1:3])
    outputs = [
        detector.eval()(torch.from_numpy(images[start : start + size]).permute(0, 3, 1, 2).float() / 255.0)
        for start in range(0, len(images), size)
    ]
    return {name: np.concatenate([getattr(output, name).numpy() for output in outputs]) for name in names}


def relative_difference(name: str, actual: np.ndarray, expected: np.ndarray) -> float:
    """The largest difference of output `name` from the reference, relative to the reference's range for a map and
    to its largest magnitude for a score (parity_report says why)."""
    scale = float(np.ptp(expected)) if name in MAPS else float(np.max(np.abs(expected)))
    return float(np.max(np.abs(np.asarray(actual) - expected)) / max(scale, 1e-6))


def parity_limit(name: str) -> float:
    return MAP_RTOL if name in MAPS else SCORE_RTOL


def parity_report(detector: AnomalyDetector, onnx_detector: OnnxDetector, images: np.ndarray) -> dict[str, float]:
    """Largest difference of each output of the exported graph over `images` (uint8 NHWC) from what evaluation
    computed (the detector's whole forward pass): a score's relative to the score's largest magnitude, a map's
    relative to the map's range over all images. So a graph that computes only what its decision and heat map read
    must still agree with the evaluated model.

    Neither is compared value by value: a position-normalised latent distance (and its heat map) is a z-score, and
    near 0 any float32 difference is a large fraction of the value; a z-map runs from below 0 to far above it, so its
    range, not its largest value, is what a difference is seen against.
    """
    exported = onnx_detector.run(images)
    reference = pytorch_outputs(detector, images, tuple(exported))
    report = {}
    for name in exported:
        report[f"{name}_max_rel_diff"] = relative_difference(name, exported[name], reference[name])
    report["images"] = float(len(images))
    return report


def check_parity(report: dict[str, float]) -> None:
    compared = [key.removesuffix("_max_rel_diff") for key in report if key.endswith("_max_rel_diff")]
    tolerances = {name: parity_limit(name) for name in compared}
    failures = [
        f"{name} {report[f'{name}_max_rel_diff']:.2e} > {limit}"
        for name, limit in tolerances.items()
        if report[f"{name}_max_rel_diff"] > limit
    ]
    if failures:
        raise AnomalyError("ONNX parity check failed, model not published: " + "; ".join(failures))
