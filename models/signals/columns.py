"""Column groups of the feature frame (names fixed by models/features.py) that each module reads."""

from __future__ import annotations

from collections.abc import Iterable

RETURNS = ("ret_1", "ret_5", "ret_10", "ret_20")
VOL_STRUCTURE = (
    "rv_5",
    "rv_20",
    "rv_60",
    "rv_ratio_5_20",
    "rv_ratio_20_60",
    "atr_pct_rank_252",
    "vol_of_vol_20",
    "natr_14",
    "bb_width_20",
)
IMBALANCE = ("clv", "clv_volume_imbalance_5", "clv_volume_imbalance_20", "up_volume_share_20")
TREND = (
    "ret_20",
    "trend_slope_50",
    "sma_ratio_20_50",
    "sma_ratio_50_200",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
    "macd_hist",
    "rsi_14",
    "d_ret_20",
    "d_adx_14",
    "d_trend_slope_50",
    "d_sma_ratio_50_200",
)
PATTERN_PREFIX = "cdl_"
# Label columns must never reach a module as features: label_up, fwd_ret_<h> and the triple-barrier
# outcomes long_* / short_* of models/labels.py (label_columns).
LEAKAGE_PREFIXES = ("label_", "fwd_ret", "long_", "short_")


def pattern_columns(columns: Iterable[str]) -> list[str]:
    """The candlestick pattern columns (``cdl_<name>``), in frame order."""
    return [c for c in columns if str(c).startswith(PATTERN_PREFIX)]
