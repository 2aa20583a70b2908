"""Signal modules by name, so flows and configs refer to them as data ("direction", "patterns", ...)."""

from __future__ import annotations

from typing import Any

from models.signals.base import SignalModule
from models.signals.direction import DirectionModule
from models.signals.ensemble import EnsembleModule
from models.signals.imbalance import ImbalanceModule
from models.signals.patterns import PatternModule
from models.signals.regime import RegimeModule
from models.signals.selector import StrategySelector
from models.signals.volatility import VolatilityModule

MODULES: dict[str, type[SignalModule]] = {
    "patterns": PatternModule,
    "volatility": VolatilityModule,
    "regime": RegimeModule,
    "selector": StrategySelector,
    "imbalance": ImbalanceModule,
    "direction": DirectionModule,
    "ensemble": EnsembleModule,
}


def make_module(name: str, **params: Any) -> SignalModule:
    """A new, unfitted module; ``params`` are its constructor parameters (see docs/modules.md)."""
    try:
        cls = MODULES[name]
    except KeyError:
        raise KeyError(f"unknown signal module {name!r}; known: {sorted(MODULES)}") from None
    return cls(**params)
