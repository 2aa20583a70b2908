"""qtrader.allocator: glibc's malloc takes the backtest's arena and mmap-threshold settings; elsewhere
nothing changes (the effect on peak RSS is measured by benchmarks/backtest.py --part b, docs/backtest.md)."""

from __future__ import annotations

import platform
import sys

import pytest

from qtrader import allocator
from qtrader.settings import BacktestSettings


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
def test_glibc_takes_the_backtests_settings():
    b = BacktestSettings()
    assert allocator.tune(b.malloc_arenas, b.malloc_mmap_threshold_kib)


def test_elsewhere_nothing_changes(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.tune(2, 1024) is False
