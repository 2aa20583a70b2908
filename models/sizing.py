"""Position sizing: ATR risk budget x the module's performance multiplier, capped, in whole shares.

Seed 000 section 2.2, exactly:

- accuracy >= ``accuracy_high`` (0.75): x ``multiplier_high`` (1.2); accuracy < ``accuracy_low`` (0.60):
  x ``multiplier_low`` (0.7); in between, or no accuracy measured: x 1.0;
- performance score < ``performance_score_floor`` (50): a further x ``score_penalty`` (0.8).

Accuracy is a fraction (0-1, as ``benchmarks.accuracy`` stores it); the performance score is 0-100.
A module with no benchmark at all gets 1.0 (the seed sizes it at the base size).

Shares = floor(min(equity x risk_per_trade / stop_distance x multiplier, caps / price)), where the caps
are the max position notional, the gross exposure still allowed and the buying power. Zero shares is a
rejection with a reason, never a silent no-op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qtrader.settings import SizingSettings


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def performance_multiplier(
    accuracy: float | None, performance_score: float | None, cfg: SizingSettings | None = None
) -> tuple[float, str]:
    """(multiplier, reason) from a module's benchmarked accuracy (fraction) and performance score."""
    cfg = cfg or SizingSettings()
    if not cfg.performance_sizing:
        return 1.0, "uniform sizing: x1"
    if _finite(accuracy) and accuracy >= cfg.accuracy_high:
        mult, why = (
            cfg.multiplier_high,
            f"accuracy {accuracy:.3f} >= {cfg.accuracy_high:g}: x{cfg.multiplier_high:g}",
        )
    elif _finite(accuracy) and accuracy < cfg.accuracy_low:
        mult, why = (
            cfg.multiplier_low,
            f"accuracy {accuracy:.3f} < {cfg.accuracy_low:g}: x{cfg.multiplier_low:g}",
        )
    elif _finite(accuracy):
        mult, why = 1.0, f"accuracy {accuracy:.3f}: x1"
    else:
        mult, why = 1.0, "no accuracy: x1"
    if _finite(performance_score) and performance_score < cfg.performance_score_floor:
        mult *= cfg.score_penalty
        why += f"; score {performance_score:.1f} < {cfg.performance_score_floor:g}: x{cfg.score_penalty:g}"
    return mult, why


@dataclass(frozen=True)
class SizeCaps:
    """Notional limits for one new position (currency units); ``None`` means no limit of that kind."""

    max_notional: float | None = None
    gross_exposure_remaining: float | None = None
    buying_power: float | None = None

    @classmethod
    def from_account(
        cls, equity: float, gross_exposure: float, buying_power: float, cfg: SizingSettings | None = None
    ) -> SizeCaps:
        cfg = cfg or SizingSettings()
        return cls(
            max_notional=equity * cfg.max_position_pct,
            gross_exposure_remaining=max(0.0, equity * cfg.max_gross_exposure_pct - gross_exposure),
            buying_power=buying_power,
        )


@dataclass(frozen=True)
class SizeDecision:
    shares: int
    multiplier: float
    reason: str
    capped_by: tuple[str, ...] = ()
    risk_shares: float = 0.0  # before caps and rounding

    @property
    def rejected(self) -> bool:
        return self.shares == 0


def position_size(
    equity: float,
    risk_per_trade: float,
    stop_distance: float,
    multiplier: float,
    price: float,
    caps: SizeCaps | None = None,
) -> SizeDecision:
    """Whole shares for one entry; ``shares == 0`` comes with the rejection reason."""
    caps = caps or SizeCaps()

    def reject(why: str, risk_shares: float = 0.0, capped: tuple[str, ...] = ()) -> SizeDecision:
        return SizeDecision(0, multiplier, f"rejected: {why}", capped, risk_shares)

    if not _finite(equity) or equity <= 0:
        return reject(f"equity {equity!r} <= 0")
    if not _finite(stop_distance) or stop_distance <= 0:
        return reject(f"stop distance {stop_distance!r} must be > 0")
    if not _finite(price) or price <= 0:
        return reject(f"price {price!r} must be > 0")
    if not _finite(risk_per_trade) or risk_per_trade <= 0:
        return reject(f"risk per trade {risk_per_trade!r} must be > 0")
    if not _finite(multiplier) or multiplier <= 0:
        return reject(f"multiplier {multiplier!r} must be > 0")

    risk_shares = equity * risk_per_trade / stop_distance * multiplier
    limits = {"risk": risk_shares}
    for name in ("max_notional", "gross_exposure_remaining", "buying_power"):
        cap = getattr(caps, name)
        if cap is not None:
            limits[name] = max(0.0, cap) / price
    binding = min(limits.values())
    # Integer floor with a little float slack, so 9.999999999 risk shares is 10, not 9.
    shares = int(math.floor(binding + 1e-9))
    capped_by = tuple(
        k for k, v in limits.items() if k != "risk" and v < risk_shares and v <= binding + 1e-12
    )
    reason = (
        f"{equity:.2f} x {risk_per_trade:g} / {stop_distance:.4f} x {multiplier:g} = {risk_shares:.2f} shares"
    )
    if capped_by:
        reason += f", capped by {', '.join(capped_by)} at {binding:.2f}"
    if shares <= 0:
        why = (
            f"size rounds to 0 shares ({reason})"
            if not capped_by
            else f"{capped_by[0]} leaves 0 shares ({reason})"
        )
        return reject(why, risk_shares, capped_by)
    return SizeDecision(shares, multiplier, reason, capped_by, risk_shares)
