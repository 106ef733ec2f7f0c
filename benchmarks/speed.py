"""Speed: training throughput, inference (torch eager vs ONNX Runtime fp32 / int8, FLOPs and the
fraction of this CPU's peak), and HTTP throughput with and without adaptive batching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomaly.config import build_config
from benchmarks import inference_speed
from benchmarks.compute import training_throughput
from benchmarks.serving_throughput import compare, request_images

TRAINING_CASES = {
    "mnist_ae_32x32": {
        "data": {"kind": "mnist", "normal_class": 0, "image_size": 32, "batch_size": 128},
        "model": {"depth": 3, "latent_dim": 32},
    },
    "surface_ae_320x128": {
        "data": {"kind": "folder", "root": "x", "image_size": [320, 128], "batch_size": 16},
        "model": {"depth": 5, "latent_dim": 128, "bottleneck": "spatial"},
        "loss": {"terms": {"mse": 1.0, "ssim": 0.5}},
    },
}


def training(quick: bool) -> dict[str, Any]:
    results = {}
    for name, overrides in TRAINING_CASES.items():
        config = build_config(overrides).model_dump(mode="json")
        batch = config["data"]["batch_size"]
        results[name] = training_throughput(config, steps=3 if quick else 20, batch_size=batch)
    return results


def http(model_dir: Path, quick: bool, logs: Path) -> dict[str, Any]:
    return {
        "model_input": str(model_dir),
        **compare(model_dir, request_images(model_dir, None), 32, 8.0 if quick else 20.0, logs),
    }


def run(quick: bool, model_dir: Path, logs: Path) -> dict[str, Any]:
    return {"training": training(quick), "inference": inference_speed.run(quick), "http": http(model_dir, quick, logs)}
