"""Compute measurements shared by the speed and scaling benchmarks: CPU peak, FLOPs, training throughput."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch.utils.flop_counter import FlopCounterMode

from anomaly.export.onnx_export import OPSET
from anomaly.runtime.bundle import create_session
from anomaly.scoring.detector import AnomalyDetector
from anomaly.training.module import AutoencoderModule


def cpu_peak_gflops(threads: int, size: int = 4096, repeats: int = 5) -> dict[str, float]:
    """Best float32 GFLOP/s of a large matmul in torch and in ONNX Runtime, each on `threads` threads. Their maximum is
    this CPU's practical peak: torch's BLAS can leave wide vector units idle that ONNX Runtime's kernels use, and the
    models' ONNX timings are compared with the peak."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    torch_best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    with tempfile.TemporaryDirectory() as folder:
        session = create_session(matmul_model(Path(folder)), threads)
        feeds = {"a": a.numpy(), "b": b.numpy()}
        session.run(None, feeds)
        onnx_best = min(_timed(lambda: session.run(None, feeds)) for _ in range(repeats))
    flops = 2 * size**3 / 1e9
    return {"torch": flops / torch_best, "onnxruntime": flops / onnx_best}


def matmul_model(folder: Path) -> Path:
    """An ONNX graph of one float32 MatMul of two square inputs of any size, in IR version 10: the onnx package's own
    default is newer than ONNX Runtime reads."""
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", "n"]) for name in ("a", "b")]
    output = helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", "n"])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", inputs, [output])
    path = folder / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10), path)
    return path


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def flops_per_image(detector: AnomalyDetector) -> float:
    """FLOPs of what is served for one image (`serve`, the computation the ONNX graph exports: only the outputs its
    decision and heat map read), so they compare with the ONNX Runtime timings."""
    data = detector.config.data
    image = torch.rand(1, data.channels, *data.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        detector.eval().serve(image)
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
