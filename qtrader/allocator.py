"""The C allocator's settings, for long runs that allocate and free large buffers from many threads (the
backtest).

glibc's malloc serves a request under its mmap threshold from an arena (up to 8 per core, one per thread
that allocates), and raises that threshold to the size of each mmapped block freed, up to 32 MiB. A
backtest's retrains and timeline allocate and free pandas and NumPy columns of a few MiB, growing with
history, from its module threads, DuckDB's and its own: each arena keeps the holes its frees leave between
live blocks, resident. At 50 symbols the arenas' free space grew by 50-100 MiB a retrain while the live
heap stayed flat (docs/backtest.md, "Memory"). With a fixed threshold those columns are mapped and
unmapped on their own, and fewer arenas share the smaller holes.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter numbers in glibc's malloc.h
M_ARENA_MAX = -8


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).mallopt  # glibc; musl and others have no mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def tune(arenas: int, mmap_threshold_kib: int) -> bool:
    """At most ``arenas`` malloc arenas from now on (a thread that already holds one keeps it) and blocks
    of ``mmap_threshold_kib`` KiB and more mapped on their own (a fixed threshold: glibc no longer raises
    it). 0 leaves a setting as it is. True when the C library took them (glibc); elsewhere nothing changes."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = True
    if arenas > 0:
        ok &= mallopt(M_ARENA_MAX, arenas) == 1
    if mmap_threshold_kib > 0:
        ok &= mallopt(M_MMAP_THRESHOLD, mmap_threshold_kib * 1024) == 1
    return bool(ok)
