"""Hardware and software facts recorded beside every benchmark result."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from anomaly.runtime.cpus import affinity_cpus, available_cpus


def cpu_model() -> str:
    """The model name, with family, model number and widest vector unit: virtual machines may name every
    generation "AMD EPYC", and timings compare only on the same generation."""
    fields: dict[str, str] = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    return f"{fields.get('model name', 'unknown')} (family {family}, model {model}, {vector})"


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
