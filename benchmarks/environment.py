"""Hardware and software facts recorded beside every benchmark result."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from anomaly.runtime.cpus import affinity_cpus, available_cpus


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """cpus_usable is what the product itself plans threads by: the affinity set capped by a cgroup CPU quota, so a
    container limited to 2 CPUs on a 64-core host records 2 (the affinity alone, kept as cpus_affinity, says 64).
    torch_threads too: on CPU a seeded training run reproduces its weights only at the same thread count."""
    packages = {}
    for name in ("torch", "onnxruntime", "numpy", "lightning", "bentoml"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "cpu": cpu_model(),
        "cpus_usable": available_cpus(),
        "cpus_affinity": affinity_cpus(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "packages": packages,
    }
