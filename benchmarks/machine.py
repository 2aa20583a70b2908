"""What machine a benchmark ran on, and how much memory it used."""

from __future__ import annotations

import os
import platform
import resource
import sys
from importlib.metadata import version


def describe() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    libs = ", ".join(f"{p} {version(p)}" for p in ("duckdb", "pandas", "great-expectations", "numpy"))
    return (
        f"{platform.node()} | {cpu} | {os.cpu_count()} cores | {mem_gib:.1f} GiB | "
        f"Python {sys.version.split()[0]} | {libs}"
    )


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
