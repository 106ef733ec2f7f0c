"""HTTP throughput and latency of the scoring service, with and without adaptive batching.

    uv run python -m benchmarks.serving_throughput --model DIR [--clients 32] [--seconds 20]

Starts `anomaly serve` on 127.0.0.1 twice (ANOMALY_ADAPTIVE_BATCHING=true, then false), sends
the model's own calibration-free test images from --images (or synthetic noise images of the
model's input size) from N concurrent clients, and writes benchmarks/results/serving_throughput.json.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anomaly.imageio import is_image_file
from anomaly.runtime.bundle import OnnxDetector
from benchmarks.environment import environment
from benchmarks.http_load import run_load
from serving.process import free_port, running_server, serve_command

RESULTS = Path(__file__).parent / "results"


def request_images(model: Path, folder: Path | None, count: int = 32) -> list[tuple[str, bytes]]:
    """Real image files when a folder is given, else PNGs of seeded noise at the model's size."""
    if folder is not None:
        files = sorted(path for path in folder.rglob("*") if is_image_file(path))[:count]
        return [(path.name, path.read_bytes()) for path in files]
    detector = OnnxDetector(model)
    (height, width), channels = detector.image_size, detector.channels
    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(buffer, format="PNG")
        images.append((f"noise-{index}.png", buffer.getvalue()))
    return images


def measure(
    model: Path, images: list[tuple[str, bytes]], batching: bool, clients: int, seconds: float, logs: Path
) -> dict[str, Any]:
    port = free_port()
    env = {"ANOMALY_ADAPTIVE_BATCHING": str(batching).lower()}
    with running_server(serve_command(str(model), port), env, port, logs / f"serve-batching-{batching}.log") as url:
        run_load(
            url, images, clients, max_requests=clients * 4, max_seconds=seconds
        )  # warm-up, trains BentoML's batch optimiser
        return run_load(url, images, clients, max_requests=10**9, max_seconds=seconds).summary()


def compare(model: Path, images: list[tuple[str, bytes]], clients: int, seconds: float, logs: Path) -> dict[str, Any]:
    """Both cases on the same model and images, and the throughput ratio between them."""
    cases = {
        name: measure(model, images, batching, clients, seconds, logs)
        for name, batching in (("adaptive_batching", True), ("no_batching", False))
    }
    ratio = cases["adaptive_batching"]["throughput_rps"] / cases["no_batching"]["throughput_rps"]
    return {"clients": clients, "seconds": seconds, "cases": cases, "throughput_ratio": round(ratio, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model directory written by `anomaly export`")
    parser.add_argument("--images", type=Path, help="folder of request images (default: noise at the model's size)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    images = request_images(args.model, args.images)
    with tempfile.TemporaryDirectory() as logs:
        comparison = compare(args.model, images, args.clients, args.seconds, Path(logs))
    detector = OnnxDetector(args.model)
    results = {
        "environment": environment(),
        "model": {"input": [detector.channels, *detector.image_size], "directory": str(args.model)},
        "command": f"python -m benchmarks.serving_throughput --model {args.model} --clients {args.clients} --seconds "
        f"{args.seconds}",
        **comparison,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving_throughput.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
