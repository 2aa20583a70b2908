"""Exit plan: the adaptive TP/SL profile (seed 000 section 1.1) and the dynamic stop rules (1.2, 1.3).

Profile, in ATR multiples of the entry bar's ATR (defaults from ``ExitSettings``):

- each take-profit level k has a multiplier from **its own** benchmarked hit rate, with the seed's TP1
  rule shape: rate > ``tpk_rate_high`` (0.80) -> x1.2, rate < ``tpk_rate_low`` (0.70) -> x0.8, else (or
  no rate) x1.0. TP2 and TP3 default to TP1's thresholds, as the issue asks ("the same way"); their raw
  rates are structurally lower (a farther target), so with the defaults they mostly shrink toward the
  price: set ``tp2_rate_*`` / ``tp3_rate_*`` lower to change that.
- TP1 = 1.0 x tp1_mult; **TP2 = 2.5 x (tp1_mult + tp2_mult) / 2** (the seed's formula, kept: TP2's rate
  rests on fewer trades, so it borrows half of TP1's adjustment; ``tp2_blend_tp1=False`` uses tp2_mult
  alone); TP3 = 4.0 x tp3_mult.
- stop = 1.5 x regime (HIGH_VOLATILITY x1.3, LOW_VOLATILITY x0.9, NORMAL x1) x learned factor, where the
  learned ``stop_distance_atr`` threshold (models/thresholds.py: an *upper* bound on a normal stop,
  default 1.95 ATR) caps the stop: factor = min(1, learned / (1.5 x regime)).
- confidence = min(tp1_rate, 0.95) as in the seed.

Dynamic stop rules are pure functions returning a ``StopUpdate`` (new stop and reason) or ``None``. They
only ever tighten: a candidate looser than the active stop is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from models.brackets import Side
from models.signals.volatility import VolState
from qtrader.settings import ExitSettings


def _rate(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def tp_multiplier(rate: float | None, high: float, low: float, up: float, down: float) -> float:
    """Seed 1.1's rule: rate > high -> up (further), rate < low -> down (closer), else (or no rate) 1."""
    r = _rate(rate)
    if r is None:
        return 1.0
    if r > high:
        return up
    if r < low:
        return down
    return 1.0


@dataclass(frozen=True)
class ExitProfile:
    """Distances from the entry price (price units), the multipliers behind them, and why."""

    atr: float
    tp1: float
    tp2: float
    tp3: float
    stop: float
    tp1_mult: float
    tp2_mult: float
    tp3_mult: float
    regime_mult: float
    learned_factor: float
    confidence: float | None
    vol_state: str
    reason: str

    def __post_init__(self) -> None:
        if not 0 < self.tp1 < self.tp2 < self.tp3:
            raise ValueError(f"take-profit distances must satisfy 0 < tp1 < tp2 < tp3: {self.reason}")
        if not self.stop > 0:
            raise ValueError(f"stop distance must be > 0: {self.reason}")

    @property
    def take_profits(self) -> tuple[float, float, float]:
        return self.tp1, self.tp2, self.tp3


@dataclass(frozen=True)
class ProfileShape:
    """What an adaptive profile is before the ATR scales it: the same for every candidate of a bar with
    the same volatility state (``profile_shape``), so a bar computes it once per state."""

    m1: float
    m2: float
    m3: float
    tp2_eff: float
    stop_atr: float
    regime: float
    factor: float
    confidence: float | None
    vol_state: str
    reason: str
    tp1_atr: float
    tp2_atr: float
    tp3_atr: float

    def at(self, atr: float) -> ExitProfile:
        if not (isinstance(atr, int | float) and math.isfinite(atr) and atr > 0):
            raise ValueError(f"ATR must be a finite number > 0, got {atr!r}")
        return ExitProfile(
            atr=float(atr),
            tp1=atr * self.tp1_atr * self.m1,
            tp2=atr * self.tp2_atr * self.tp2_eff,
            tp3=atr * self.tp3_atr * self.m3,
            stop=atr * self.stop_atr * self.factor,
            tp1_mult=self.m1,
            tp2_mult=self.m2,
            tp3_mult=self.m3,
            regime_mult=self.regime,
            learned_factor=self.factor,
            confidence=self.confidence,
            vol_state=self.vol_state,
            reason=self.reason,
        )


def profile_shape(
    hit_rates: Mapping[str, float | None] | None = None,
    learned_stop_threshold: float | None = None,
    vol_state: VolState | str | None = VolState.NORMAL,
    cfg: ExitSettings | None = None,
) -> ProfileShape:
    """The adaptive profile's multipliers and reason (``adaptive_profile`` without the ATR)."""
    cfg = cfg or ExitSettings()
    rates = {k: _rate((hit_rates or {}).get(k)) for k in ("tp1", "tp2", "tp3")}
    m1 = tp_multiplier(rates["tp1"], cfg.tp1_rate_high, cfg.tp1_rate_low, cfg.tp_mult_up, cfg.tp_mult_down)
    m2 = tp_multiplier(rates["tp2"], cfg.tp2_rate_high, cfg.tp2_rate_low, cfg.tp_mult_up, cfg.tp_mult_down)
    m3 = tp_multiplier(rates["tp3"], cfg.tp3_rate_high, cfg.tp3_rate_low, cfg.tp_mult_up, cfg.tp_mult_down)
    tp2_eff = (m1 + m2) / 2 if cfg.tp2_blend_tp1 else m2

    state = VolState(vol_state) if vol_state else VolState.NORMAL
    regime = {
        VolState.HIGH_VOLATILITY: cfg.high_vol_stop_mult,
        VolState.LOW_VOLATILITY: cfg.low_vol_stop_mult,
    }.get(state, 1.0)
    stop_atr = cfg.stop_atr * regime
    learned = _rate(learned_stop_threshold)
    factor = min(1.0, learned / stop_atr) if learned is not None and learned > 0 else 1.0

    confidence = min(rates["tp1"], cfg.max_confidence) if rates["tp1"] is not None else None

    def fmt(r: float | None) -> str:
        return "n/a" if r is None else f"{r:.2f}"

    reason = (
        f"Adaptive TP/SL: TP1_rate={fmt(rates['tp1'])} x{m1:g}, TP2_rate={fmt(rates['tp2'])} x{m2:g}"
        f"{' (blended x' + format(tp2_eff, 'g') + ')' if cfg.tp2_blend_tp1 else ''}, "
        f"TP3_rate={fmt(rates['tp3'])} x{m3:g}, regime={state.value} stop x{regime:g}, "
        f"learned_stop={'n/a' if learned is None else format(learned, 'g')} x{factor:.3g}"
    )
    return ProfileShape(m1, m2, m3, tp2_eff, stop_atr, regime, factor, confidence, state.value, reason,
                        cfg.tp1_atr, cfg.tp2_atr, cfg.tp3_atr)  # fmt: skip


def adaptive_profile(
    atr: float,
    hit_rates: Mapping[str, float | None] | None = None,
    learned_stop_threshold: float | None = None,
    vol_state: VolState | str | None = VolState.NORMAL,
    cfg: ExitSettings | None = None,
) -> ExitProfile:
    """Seed 1.1's adaptive TP/SL profile. ``hit_rates``: {"tp1": .., "tp2": .., "tp3": ..} (missing = none).

    ``learned_stop_threshold`` is the learned ``stop_distance_atr`` bound in ATR multiples (None: no cap).
    """
    cfg = cfg or ExitSettings()
    if not (isinstance(atr, int | float) and math.isfinite(atr) and atr > 0):
        raise ValueError(f"ATR must be a finite number > 0, got {atr!r}")
    if not cfg.adaptive:
        return fixed_profile(atr, cfg)
    return profile_shape(hit_rates, learned_stop_threshold, vol_state, cfg).at(atr)


def fixed_profile(atr: float, cfg: ExitSettings | None = None) -> ExitProfile:
    """The old system's profile (``exits.adaptive = False``): TPs at tp*_atr and the stop at stop_atr."""
    cfg = cfg or ExitSettings()
    return ExitProfile(
        atr=float(atr), tp1=atr * cfg.tp1_atr, tp2=atr * cfg.tp2_atr, tp3=atr * cfg.tp3_atr,
        stop=atr * cfg.stop_atr, tp1_mult=1.0, tp2_mult=1.0, tp3_mult=1.0, regime_mult=1.0,
        learned_factor=1.0, confidence=None, vol_state=VolState.NORMAL.value,
        reason=f"Fixed TP/SL: TP {cfg.tp1_atr:g}/{cfg.tp2_atr:g}/{cfg.tp3_atr:g} ATR, stop {cfg.stop_atr:g} ATR",
    )  # fmt: skip


@dataclass(frozen=True)
class ExitLevels:
    side: Side
    entry: float
    tp1: float
    tp2: float
    tp3: float
    stop: float

    @property
    def take_profits(self) -> tuple[float, float, float]:
        return self.tp1, self.tp2, self.tp3


def plan_levels(entry_price: float, side: Side | str, profile: ExitProfile) -> ExitLevels:
    """Absolute prices: a buy takes profit above and stops below the entry; a sell mirrors."""
    side = Side(side)
    s = side.sign
    levels = ExitLevels(
        side,
        entry_price,
        entry_price + s * profile.tp1,
        entry_price + s * profile.tp2,
        entry_price + s * profile.tp3,
        entry_price - s * profile.stop,
    )
    if min(levels.tp1, levels.tp2, levels.tp3, levels.stop) <= 0:
        raise ValueError(f"levels below zero for entry {entry_price:g}: {levels}")
    return levels


# --- dynamic stops ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StopUpdate:
    new_stop: float
    rule: str  # breakeven_after_tp1 | ensemble_degraded | predictive_tightening
    reason: str


def is_tighter(candidate: float, active_stop: float, side: Side | str) -> bool:
    """A buy's stop tightens upward, a sell's downward."""
    return candidate > active_stop if Side(side) is Side.buy else candidate < active_stop


def breakeven_after_tp1(
    entry: float, active_stop: float, side: Side | str, cfg: ExitSettings | None = None
) -> StopUpdate | None:
    """After TP1 fills, the remaining legs' stop moves to the entry (+/- ``breakeven_offset``)."""
    cfg = cfg or ExitSettings()
    side = Side(side)
    target = entry * (1 + side.sign * cfg.breakeven_offset)
    if not is_tighter(target, active_stop, side):
        return None
    return StopUpdate(
        target, "breakeven_after_tp1", f"TP1 filled: stop {active_stop:g} -> breakeven {target:g}"
    )


def dynamic_adjustments_allowed(
    overall_health: float | None, cfg: ExitSettings | None = None, overall_gate: float | None = None
) -> bool:
    """Seed 1.2: health-driven stop changes pause while overall health < its gate: ``overall_gate`` (the
    learned one, models/health.gate_value with ``min_overall_health`` as the seed) or, without it,
    ``min_overall_health`` (70). Unknown health counts as degraded.
    """
    cfg = cfg or ExitSettings()
    gate = cfg.min_overall_health if overall_gate is None else overall_gate
    return overall_health is not None and math.isfinite(overall_health) and overall_health >= gate


def health_gated_adjustment(
    overall_health: float | None,
    ensemble_health: float | None,
    entry: float,
    current: float,
    active_stop: float,
    side: Side | str,
    cfg: ExitSettings | None = None,
    overall_gate: float | None = None,
    ensemble_gate: float | None = None,
) -> StopUpdate | None:
    """Seed 1.2: skipped while overall health < 70; while ensemble health < 60, tighten halfway (the
    gates: ``overall_gate`` / ``ensemble_gate`` when given, learned per module, else the seed's values).

    The seed's candidate is ``entry + (current - entry) * 0.5``. When the position is under water that
    point lies beyond the current price (a stop that would fire at once), so the candidate becomes
    halfway from the active stop to the current price instead. Only tightening is applied.
    """
    cfg = cfg or ExitSettings()
    if not dynamic_adjustments_allowed(overall_health, cfg, overall_gate):
        return None
    degraded = cfg.ensemble_degraded_health if ensemble_gate is None else ensemble_gate
    if ensemble_health is None or not math.isfinite(ensemble_health) or ensemble_health >= degraded:
        return None
    side = Side(side)
    f = cfg.tighten_fraction
    candidate = entry + (current - entry) * f
    if not is_tighter(current, candidate, side):  # candidate at or beyond the current price
        candidate = active_stop + (current - active_stop) * f
    if not is_tighter(candidate, active_stop, side) or not is_tighter(current, candidate, side):
        return None
    return StopUpdate(
        candidate,
        "ensemble_degraded",
        f"ensemble health {ensemble_health:.0f} < {degraded:g}: stop {active_stop:g} -> "
        f"{candidate:g} (halfway toward {current:g})",
    )


def _alert_field(alert: Any, name: str) -> Any:
    return alert.get(name) if isinstance(alert, Mapping) else getattr(alert, name, None)


def predictive_tightening(
    alerts: Iterable[Any],
    entry: float,
    active_stop: float,
    side: Side | str,
    cfg: ExitSettings | None = None,
    overall_health: float | None = None,
    overall_gate: float | None = None,
) -> StopUpdate | None:
    """Seed 1.3: an alert with ``time_to_threshold_hours`` < 4 moves the stop to breakeven -/+ 0.1%.

    Alerts are models/alerts.py ``Evaluation`` objects or mappings with ``module``, ``metric``,
    ``time_to_threshold_hours`` and ``reason``; ``predictive_modules`` / ``predictive_metrics`` filter
    them (empty: all). Only tightens. Not health-gated unless ``health_gate_applies_to_predictive``.
    """
    cfg = cfg or ExitSettings()
    if cfg.health_gate_applies_to_predictive and not dynamic_adjustments_allowed(
        overall_health, cfg, overall_gate
    ):
        return None
    side = Side(side)
    urgent = []
    for a in alerts:
        hours = _alert_field(a, "time_to_threshold_hours")
        if hours is None or not math.isfinite(float(hours)) or float(hours) >= cfg.predictive_hours:
            continue
        if cfg.predictive_modules and _alert_field(a, "module") not in cfg.predictive_modules:
            continue
        if cfg.predictive_metrics and _alert_field(a, "metric") not in cfg.predictive_metrics:
            continue
        urgent.append(a)
    if not urgent:
        return None
    first = min(urgent, key=lambda a: float(_alert_field(a, "time_to_threshold_hours")))
    target = entry * (1 - side.sign * cfg.predictive_offset)
    if not is_tighter(target, active_stop, side):
        return None
    hours = float(_alert_field(first, "time_to_threshold_hours"))
    what = f"{_alert_field(first, 'module')}/{_alert_field(first, 'metric')}"
    return StopUpdate(
        target,
        "predictive_tightening",
        f"Predictive tightening: {what} breaches in {hours:.1f}h: stop {active_stop:g} -> {target:g}"
        + (f" ({_alert_field(first, 'reason')})" if _alert_field(first, "reason") else ""),
    )


def next_stop(
    *,
    side: Side | str,
    entry: float,
    current: float,
    active_stop: float,
    tp1_filled: bool,
    overall_health: float | None,
    ensemble_health: float | None,
    alerts: Iterable[Any] = (),
    cfg: ExitSettings | None = None,
    overall_gate: float | None = None,
    ensemble_gate: float | None = None,
) -> StopUpdate | None:
    """All rules at once; the tightest candidate wins (None: keep the active stop). ``cfg.adaptive`` off
    drops the health-gated rule, ``cfg.predictive`` off the predictive one; breakeven always applies.
    ``overall_gate`` / ``ensemble_gate``: the learned gates (models/health.gate_value), else the seeds."""
    cfg = cfg or ExitSettings()
    cands = [
        breakeven_after_tp1(entry, active_stop, side, cfg) if tp1_filled else None,
        health_gated_adjustment(
            overall_health,
            ensemble_health,
            entry,
            current,
            active_stop,
            side,
            cfg,
            overall_gate,
            ensemble_gate,
        )  # fmt: skip
        if cfg.adaptive
        else None,
        predictive_tightening(alerts, entry, active_stop, side, cfg, overall_health, overall_gate)
        if cfg.predictive
        else None,
    ]
    cands = [c for c in cands if c is not None]
    if not cands:
        return None
    pick = max if Side(side) is Side.buy else min
    return pick(cands, key=lambda c: c.new_stop)
