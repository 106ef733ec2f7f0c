"""Inference speed: torch eager vs ONNX Runtime fp32 (and int8) at batch 1 and 64.

    uv run python -m benchmarks.inference_speed [--quick]

Writes benchmarks/results/inference_speed.json. Weights are freshly initialised (speed does
not depend on their values); the graph is the full detector with its scoring head.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly.config import build_config
from anomaly.export.onnx_export import export_onnx
from anomaly.export.quantize import quantise_model
from anomaly.runtime.bundle import INPUT_NAME, create_session
from anomaly.runtime.cpus import available_cpus
from anomaly.scoring.detector import AnomalyDetector, latent_size
from benchmarks.compute import cpu_peak_gflops, flops_per_image
from benchmarks.environment import environment

RESULTS = Path(__file__).parent / "results"
CASES = {
    "mnist_ae_32x32": {
        "data": {"kind": "mnist", "normal_class": 0, "image_size": 32},
        "model": {"depth": 3, "latent_dim": 32},
    },
    "surface_ae_320x128": {
        "data": {"kind": "folder", "root": "x", "image_size": [320, 128]},
        "model": {"depth": 5, "latent_dim": 128, "bottleneck": "spatial"},
    },
}


def timings(call: Callable[[], Any], repeats: int, batch: int) -> dict[str, float]:
    call()  # warm-up
    call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    latencies = np.array(seconds)
    return {
        "images_per_s": float(batch * repeats / latencies.sum()),
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "repeats": repeats,
    }


def build_detector(overrides: dict[str, Any], train_codes: int | None = None) -> AnomalyDetector:
    """A detector with freshly initialised weights and its latent statistics fitted on random codes
    (`train_codes` of them; default enough for a well-conditioned covariance)."""
    detector = AnomalyDetector(build_config(overrides)).eval()
    data = detector.config.data
    dim = latent_size(detector.model, data.channels, data.image_size)
    count = train_codes or max(2 * dim, 64)
    detector.latent_distance.fit(np.random.default_rng(0).normal(size=(count, dim)).astype(np.float32))
    return detector


def quantised_session(model: Path, sample: np.ndarray, folder: Path) -> Any:
    quantise_model(model, folder / "int8.onnx", sample)
    return create_session(folder / "int8.onnx", available_cpus())


def run(quick: bool) -> dict[str, Any]:
    threads = available_cpus()
    torch.set_num_threads(threads)
    matmul_gflops = cpu_peak_gflops(threads)
    peak = max(matmul_gflops.values())
    results: dict[str, Any] = {
        "environment": environment(),
        "threads": threads,
        "cpu_peak_gflops": peak,
        "matmul_gflops": matmul_gflops,
        "cases": {},
    }
    for name, overrides in CASES.items():
        detector = build_detector(overrides)
        channels, (height, width) = detector.config.data.channels, detector.config.data.image_size
        flops = flops_per_image(detector)
        case: dict[str, Any] = {"input": [channels, height, width], "gflops_per_image": flops / 1e9}
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            sample = torch.rand(64, channels, height, width)
            export_onnx(detector, folder / "model.onnx", "benchmark", sample[:2])
            fp32 = create_session(folder / "model.onnx", threads)
            int8 = quantised_session(folder / "model.onnx", sample[:16].numpy(), folder)
            for batch in (1, 64):
                repeats = (10 if quick else 40) if batch == 64 else (50 if quick else 300)
                if name.startswith("surface") and batch == 64:
                    repeats = max(3, repeats // 5)
                images = sample[:batch]
                array = images.numpy()
                with torch.no_grad():
                    eager = timings(lambda: detector.serve(images), repeats, batch)
                onnx_fp32 = timings(lambda: fp32.run(None, {INPUT_NAME: array}), repeats, batch)
                onnx_int8 = timings(lambda: int8.run(None, {INPUT_NAME: array}), repeats, batch)
                case[f"batch_{batch}"] = {
                    "torch_eager": eager,
                    "onnxruntime_fp32": onnx_fp32,
                    "onnxruntime_int8": onnx_int8,
                    "fp32_speedup_vs_eager": onnx_fp32["images_per_s"] / eager["images_per_s"],
                    "int8_speedup_vs_fp32": onnx_int8["images_per_s"] / onnx_fp32["images_per_s"],
                    "fp32_fraction_of_cpu_peak": onnx_fp32["images_per_s"] * flops / 1e9 / peak,
                }
        results["cases"][name] = case
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute)")
    args = parser.parse_args()
    results = run(args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inference_speed.json").write_text(json.dumps(results, indent=1))
    for name, case in results["cases"].items():
        for batch in ("batch_1", "batch_64"):
            row = case[batch]
            print(
                f"{name} {batch}: eager {row['torch_eager']['images_per_s']:.0f}/s, onnx fp32 "
                f"{row['onnxruntime_fp32']['images_per_s']:.0f}/s ({row['fp32_speedup_vs_eager']:.2f}x), int8 "
                f"{row['onnxruntime_int8']['images_per_s']:.0f}/s ({row['int8_speedup_vs_fp32']:.2f}x vs fp32)"
            )


if __name__ == "__main__":
    main()
