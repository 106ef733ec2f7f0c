"""How many CPUs this process may really use: affinity, capped by a cgroup CPU quota.

`os.cpu_count()` reports the host's cores; in a container limited to 2 CPUs on a 64-core host
it would make ONNX Runtime start 64 threads that fight over 2 cores.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit() -> float | None:
    """The CPU quota in cores, or None when unlimited or unknown."""
    try:
        if CGROUP_V2_MAX.is_file():
            quota, period = CGROUP_V2_MAX.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if CGROUP_V1_QUOTA.is_file() and CGROUP_V1_PERIOD.is_file():
            quota_us = int(CGROUP_V1_QUOTA.read_text())
            return None if quota_us <= 0 else quota_us / int(CGROUP_V1_PERIOD.read_text())
    except (OSError, ValueError):
        return None
    return None


def affinity_cpus() -> int:
    """CPUs in this process's affinity set (the host's count where the OS has no affinity call), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def available_cpus() -> int:
    """CPUs in this process's affinity set, capped by the cgroup quota (rounded up), at least 1."""
    affinity = affinity_cpus()
    quota = cgroup_cpu_limit()
    return max(1, min(affinity, math.ceil(quota)) if quota is not None else affinity)


def threads_per_worker(workers: int, override: int | None = None) -> int:
    """Intra-op threads for one of `workers` processes sharing this CPU budget."""
    if override is not None:
        return max(1, override)
    return max(1, available_cpus() // max(1, workers))
