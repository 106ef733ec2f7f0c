"""Scaling: how training and inference time grow with image size and with training-set size."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly.export.onnx_export import export_onnx
from anomaly.runtime.bundle import INPUT_NAME, create_session
from anomaly.runtime.cpus import available_cpus
from anomaly.scoring.detector import AnomalyDetector
from benchmarks.compute import flops_per_image, training_throughput
from benchmarks.inference_speed import build_detector, timings

IMAGE_SIZES = (64, 128, 256)
TRAIN_SIZES = (250, 500, 1000, 2000)
BATCH = 16


def config_for(size: int) -> dict[str, Any]:
    return {
        "data": {"kind": "folder", "root": "x", "image_size": size, "batch_size": BATCH},
        "model": {"depth": 4, "latent_dim": 128, "bottleneck": "dense"},
    }


def onnx_images_per_s(detector: AnomalyDetector, repeats: int) -> float:
    data = detector.config.data
    batch = np.random.default_rng(0).random((BATCH, data.channels, *data.image_size), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(detector, Path(folder) / "model.onnx", "benchmark", torch.from_numpy(batch[:2]))
        session = create_session(Path(folder) / "model.onnx", available_cpus())
        return timings(lambda: session.run(None, {INPUT_NAME: batch}), repeats, BATCH)["images_per_s"]


def run(quick: bool) -> dict[str, Any]:
    repeats, steps = (3, 2) if quick else (20, 10)
    by_size = {}
    for size in IMAGE_SIZES:
        detector = build_detector(config_for(size))
        by_size[str(size)] = {
            "gflops_per_image": flops_per_image(detector) / 1e9,
            "train_images_per_s": training_throughput(detector.config.model_dump(mode="json"), steps, BATCH)[
                "images_per_s"
            ],
            "onnx_images_per_s": onnx_images_per_s(detector, repeats),
        }
    by_train_size = {}
    for count in TRAIN_SIZES[:2] if quick else TRAIN_SIZES:
        epoch = training_throughput(config_for(64), steps=-(-count // BATCH), batch_size=BATCH)
        by_train_size[str(count)] = {"epoch_seconds": count / epoch["images_per_s"]}
    return {
        "image_size": by_size,
        "train_set_size": by_train_size,
        "notes": "AE depth 4, dense 128-d bottleneck (so the latent statistics cost the same at every size), 1 "
        "channel, batch 16, random images (no data loading). An epoch is ceil(N / 16) optimisation steps at 64 px. "
        "Inference does not depend on N: the Mahalanobis distance keeps one covariance, the patch bank a fixed number "
        "of features per place.",
    }
