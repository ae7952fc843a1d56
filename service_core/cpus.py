"""How many CPUs this process may use: what sizes worker processes and thread pools.

os.cpu_count() is the host's, also inside a container limited to a share of it; a
pool sized by it on a 64-core node with a 2-CPU limit runs 64 threads into the quota.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cpus"]


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may run on (its affinity), capped by its cgroup's CPU quota."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    return max(1, min(count, math.ceil(quota))) if quota else count


def _cpu_quota(cgroup: Path) -> float | None:
    """CPUs' worth of quota: cgroup v2 ``cpu.max`` ("200000 100000" is 2; "max ..." none), else v1's cfs files."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
