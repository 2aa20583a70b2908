"""Signal modules: scikit-learn classifiers over the feature frame giving P(up) per bar.

See docs/modules.md for each module's inputs, what it learns and its parameters.
"""

from models.signals.base import NO_OPINION, SignalModule
from models.signals.direction import DirectionModule
from models.signals.ensemble import (
    DEFAULT_MEMBERS,
    ConsensusType,
    EnsembleModule,
    accuracy_weights,
    combine,
    ensemble_p_up,
)
from models.signals.imbalance import ImbalanceModule
from models.signals.patterns import PatternModule
from models.signals.regime import Regime, RegimeModule, market_regime
from models.signals.registry import MODULES, make_module
from models.signals.selector import Strategy, StrategySelector
from models.signals.volatility import VolatilityModule, VolState, vol_state

__all__ = [
    "DEFAULT_MEMBERS",
    "MODULES",
    "NO_OPINION",
    "ConsensusType",
    "DirectionModule",
    "EnsembleModule",
    "ImbalanceModule",
    "PatternModule",
    "Regime",
    "RegimeModule",
    "SignalModule",
    "Strategy",
    "StrategySelector",
    "VolState",
    "VolatilityModule",
    "accuracy_weights",
    "combine",
    "ensemble_p_up",
    "make_module",
    "market_regime",
    "vol_state",
]
