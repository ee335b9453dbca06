"""What the host lets this process use, which the embedded engine (merge threads) and the
serving processes (workers, prepare processes) size themselves by."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: the container's CPU limit (cgroup v2 or v1 quota), else the
    CPUs it is scheduled on. os.cpu_count() would say the node's, not the container's."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = None
    try:
        limit, period = (cgroup_root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "200000 100000"
        if limit != "max":
            quota = int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when unlimited
            period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            if limit > 0 and period > 0:
                quota = limit / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
