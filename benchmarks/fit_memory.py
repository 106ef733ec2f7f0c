"""Peak memory of fitting the latent distance on a large training set: 2,000 images at 640 x 256.

    uv run python -m benchmarks.run --sections fit_memory

Runs the product's own fitting path (anomaly.scoring.fit.training_latents, which streams the patch features into
a memory-mapped file, then the bank's block-wise fit) on the folder default's detector, pretrained and own encoder,
at each patch level that scoring.latent.level=auto can choose, in a fresh process each, and records the process's
peak resident memory. The images are synthetic textures made on the fly, so only the fitting holds memory. Quick
mode: 200 images.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from anomaly.config import load_config
from anomaly.scoring.detector import AnomalyDetector
from anomaly.scoring.fit import training_latents

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
IMAGE_SIZE = (640, 256)
ENCODERS = ("efficientnet_lite0", "own")


class TextureImages(Dataset):
    """Seeded grey textures made when asked for: no image set held in memory."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        rows = torch.arange(IMAGE_SIZE[0], dtype=torch.float32)[:, None]
        stripes = 0.5 + 0.3 * torch.sin(rows / (4 + 4 * torch.rand(1, generator=generator)))
        image = (stripes + 0.05 * torch.randn(*IMAGE_SIZE, generator=generator)).clamp(0, 1)
        return {"image": image[None]}


def measure(encoder: str, level: int, images: int) -> dict[str, Any]:
    """In this process: fit one detector's latent distance; its peak memory and time."""
    overrides = [f"data.image_size=[{IMAGE_SIZE[0]}, {IMAGE_SIZE[1]}]", "data.root=unused"]
    overrides.append(f"model.encoder={encoder}")
    config = load_config(PIPELINES / "folder.yaml", overrides)
    config = config.model_copy(update={"scoring": config.scoring.resolved(level=level)})  # as level auto fits it
    detector = AnomalyDetector(config)
    loader = DataLoader(TextureImages(images), batch_size=config.data.batch_size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        features = training_latents(detector, loader, Path(folder))
        feature_bytes = features.nbytes
        extracted = time.perf_counter() - started
        detector.latent_distance.fit(features)
        del features
    return {
        "encoder": encoder,
        "patch_level": level,
        "images": images,
        "image_size": list(IMAGE_SIZE),
        "feature_gb": round(feature_bytes / 1e9, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "extract_seconds": round(extracted, 1),
        "fit_seconds": round(time.perf_counter() - started - extracted, 1),
        "bank_mb": round(
            sum(t.numel() * t.element_size() for t in detector.latent_distance.state_dict().values()) / 1e6, 1
        ),
    }


def run(quick: bool) -> dict[str, Any]:
    images = 200 if quick else 2000
    rows = []
    for encoder in ENCODERS:
        levels = (3, 2) if encoder != "own" else (2, 1)
        for level in levels:
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.fit_memory", encoder, str(level), str(images)],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parents[1],
            )
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return {"rows": rows, "limit_gb": 8}


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
