"""Compute measurements shared by the speed and scaling benchmarks: CPU peak, FLOPs, training throughput."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from anomaly.scoring.detector import AnomalyDetector
from anomaly.training.module import AutoencoderModule


def cpu_peak_gflops(size: int = 4096, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of a large matmul with torch's threads: this CPU's practical peak."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def flops_per_image(detector: AnomalyDetector) -> float:
    """Forward FLOPs of the whole detector (model, map, scores) for one image."""
    data = detector.config.data
    image = torch.rand(1, data.channels, *data.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        detector.eval()(image)
    return float(counter.get_total_flops())


def training_throughput(config: dict[str, Any], steps: int, batch_size: int) -> dict[str, float]:
    """Images/s of forward + loss + backward + Adam step on random batches (no data loading)."""
    module = AutoencoderModule(config).train()
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-3)
    data = module.config.data
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(batch_size, data.channels, *data.image_size, generator=generator) for _ in range(2)]

    def step(images: torch.Tensor) -> None:
        optimiser.zero_grad()
        module.objective(images, generator)["loss"].backward()
        optimiser.step()

    step(batches[0])  # warm-up
    seconds = [_timed(lambda: step(batches[index % 2])) for index in range(steps)]
    return {"images_per_s": float(batch_size * steps / np.sum(seconds)), "batch_size": batch_size, "steps": steps}
