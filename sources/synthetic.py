"""The embedded synthetic market: deterministic OHLCV bars for any ticker, daily and intraday.

The default source: it needs no network, and the same seed always gives the same market. Full model,
parameters and measured figures in ``docs/synthetic.md``; in short:

* **Determinism.** Every random draw comes from a generator seeded by ``(seed, symbol, interval, stream)``
  (intraday: ``(seed, symbol, interval, session)``), and each symbol's daily path is simulated from a
  fixed epoch (:data:`EPOCH`) and then sliced to the window. A symbol's bars therefore do not depend on
  the other symbols requested nor on the window asked for.
* **Daily bars** are stamped on exchange sessions (``qtrader.calendar.expected_bars``). The close follows
  a log random walk whose drift, volatility and mean reversion depend on a hidden :class:`Regime`
  (a Markov chain: TREND_UP, TREND_DOWN, MEAN_REVERTING, HIGH_VOLATILITY), with Student-t (df=4)
  innovations scaled to unit variance. Each day's move is split into an overnight gap (open vs the
  previous close) and the session move; high/low extend beyond open/close by a volatility-scaled amount;
  volume follows the regime and grows with |return|.
* **Intraday bars** ("1m", "5m", "15m", "30m", "1h", ...) fill the real session, early closes included.
  A session opens at its daily bar's open (so the first bar gaps away from the previous close) and walks,
  with a U-shaped volatility profile, towards the daily close (a random-walk bridge: reached exactly with
  ``signal_strength=0``, off by the session's sum of planted terms otherwise, 0.2% in a median session).
  Intraday high/low are not forced to match the daily high/low. Volume follows a U-shaped profile (busy
  open and close, quiet midday) and grows with |return|. Each session has its own generator.
* **Planted predictable component.** The next bar's log return contains
  ``signal_strength * sigma_t * planted_tilt(z_t)`` where ``z_t = close_zscore`` of the last 10 log
  closes (a Bollinger-style z, computable from past bars only) and ``planted_tilt(z) = -z / sqrt(1 + z^2)``:
  weak short-term mean reversion. With ``signal_strength=0`` the term is absent.
* **Reserved symbols** for tests: ``UNKNOWN*`` is reported as an unknown symbol, ``EMPTY*`` as an empty
  download; the other symbols still load.
* **Faults** (:class:`Fault`, :func:`parse_faults`) inject one named data defect into one symbol's
  fetched bars, to exercise the data-quality gate.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from qtrader.calendar import (
    expected_bars,
    get_calendar,
    in_session,
    interval_minutes,
    is_daily,
    last_completed_session,
    sessions,
    utc,
)
from qtrader.settings import DEFAULT_UNIVERSE
from sources.base import FetchRequest, FetchResult, SourceError, empty_bars, to_canonical

# Every daily path starts here, whatever window is asked for: windows are slices of one path.
EPOCH = pd.Timestamp("2000-01-03")
TRADING_DAYS = 252

# Fat tails: Student-t innovations with this many degrees of freedom, scaled to unit variance.
TAIL_DF = 4.0
_T_TO_UNIT = math.sqrt((TAIL_DF - 2.0) / TAIL_DF)

# Per-symbol draws (uniform, log-uniform for price and volume).
BASE_PRICE_RANGE = (10.0, 500.0)
ANNUAL_VOL_RANGE = (0.15, 0.60)
BASE_VOLUME_RANGE = (2e5, 2e7)

# Share of a day's return variance that happens overnight (the open's gap from the previous close).
OVERNIGHT_SHARE = 0.25
# High/low reach beyond max/min(open, close) by RANGE_REACH * bar volatility * |N(0, 1)|.
RANGE_REACH = 0.5
# Volume: lognormal noise, and a multiplier VOLUME_CALM + VOLUME_PER_SHOCK * |return / volatility|.
VOLUME_NOISE = 0.3
VOLUME_CALM = 0.4
VOLUME_PER_SHOCK = 0.75
# Intraday profiles over the session (x = elapsed fraction): base + open bump + close bump, exponential
# bumps with these (height, width) pairs. Volume is strongly U-shaped, volatility mildly so.
VOLUME_PROFILE = (1.0, (2.5, 0.06), (1.5, 0.04))
VOLATILITY_PROFILE = (1.0, (1.2, 0.06), (0.6, 0.04))

# Strength of the planted component: ~54% out-of-sample directional accuracy on daily bars (docs/synthetic.md).
DEFAULT_SIGNAL_STRENGTH = 0.12
# The planted component reads the z-score of the newest log close against the last STATE_WINDOW ones.
STATE_WINDOW = 10
# Mean-reverting regimes pull the log close towards an exponential average with this weight per bar.
ANCHOR_WEIGHT = 0.01


class Regime(StrEnum):
    """The hidden market state of a symbol on a day (intraday bars share their session's regime)."""

    TREND_UP = "TREND_UP"
    TREND_DOWN = "TREND_DOWN"
    MEAN_REVERTING = "MEAN_REVERTING"
    HIGH_VOLATILITY = "HIGH_VOLATILITY"


@dataclass(frozen=True)
class RegimeParams:
    drift: float  # mean daily log return, in units of the symbol's base daily volatility
    vol: float  # multiplier of the symbol's base daily volatility
    mean_reversion: float  # share of the distance to the anchor (slow average of log close) recovered per day
    mean_days: float  # expected stay before switching
    volume: float  # multiplier of the symbol's base volume
    exits: tuple[float, float, float, float]  # relative odds of the next regime on leaving, in Regime order


REGIME_PARAMS: dict[Regime, RegimeParams] = {
    Regime.TREND_UP: RegimeParams(0.06, 0.9, 0.0, 60, 1.0, (0, 0.3, 0.5, 0.2)),
    Regime.TREND_DOWN: RegimeParams(-0.08, 1.2, 0.0, 40, 1.15, (0.25, 0, 0.4, 0.35)),
    Regime.MEAN_REVERTING: RegimeParams(0.0, 0.8, 0.02, 80, 0.9, (0.4, 0.3, 0, 0.3)),
    Regime.HIGH_VOLATILITY: RegimeParams(-0.02, 2.0, 0.0, 20, 1.6, (0.3, 0.2, 0.5, 0)),
}
_REGIMES = list(Regime)


def transition_matrix() -> np.ndarray:
    """Daily regime transition probabilities, rows = from, columns = to (Regime order)."""
    p = np.zeros((len(_REGIMES), len(_REGIMES)))
    for i, reg in enumerate(_REGIMES):
        prm = REGIME_PARAMS[reg]
        leave = 1.0 / prm.mean_days
        exits = np.asarray(prm.exits, dtype=float)
        p[i] = leave * exits / exits.sum()
        p[i, i] = 1.0 - leave
    return p


def _stationary(p: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eig(p.T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return v / v.sum()


_TRANSITIONS = transition_matrix()
# A uniform u moves regime g to the number of cumulative thresholds <= u (the last column is 1: dropped).
_CUM_TRANSITIONS = np.cumsum(_TRANSITIONS, axis=1)[:, :-1]
_CUM_STATIONARY = np.cumsum(_stationary(_TRANSITIONS))[:-1]
_DRIFT = np.array([REGIME_PARAMS[r].drift for r in _REGIMES])
_VOL = np.array([REGIME_PARAMS[r].vol for r in _REGIMES])
_REVERSION = np.array([REGIME_PARAMS[r].mean_reversion for r in _REGIMES])
_VOLUME = np.array([REGIME_PARAMS[r].volume for r in _REGIMES])


def planted_tilt(z: np.ndarray | float) -> np.ndarray:
    """f(z) = -z / sqrt(1 + z^2): bounded, odd, tanh-like, and exact under any vectorisation (no libm)."""
    z = np.asarray(z, dtype=np.float64)
    return -z / np.sqrt(1.0 + z * z)


def close_zscore(close: np.ndarray | pd.Series, window: int = STATE_WINDOW) -> np.ndarray:
    """The planted component's observable state, from past bars only.

    z_t = (log C_t - mean) / std over the last ``window`` log closes (population std); 0 before ``window``
    closes exist or when they are all equal. Matches the generator's state up to rounding (~1e-9).
    """
    y = pd.Series(np.log(np.asarray(close, dtype=np.float64)))
    roll = y.rolling(window)
    sd = roll.std(ddof=0).to_numpy()
    dev = (y - roll.mean()).to_numpy()
    z = np.divide(dev, sd, out=np.zeros(len(y)), where=np.isfinite(sd) & (sd > 1e-12))
    return np.nan_to_num(z)


class _RollingZScore:
    """z of the newest value against the last ``window`` values, per column, in O(1) per step.

    Elementwise arithmetic only (no reductions, no libm), so a column's result never depends on the
    other columns: that keeps each symbol's path independent of what else was requested.
    """

    def __init__(self, first: np.ndarray, window: int = STATE_WINDOW) -> None:
        self.window = window
        self.ring = np.repeat(first[None, :], window, axis=0)
        self.mean = first.copy()
        self.m2 = np.zeros_like(first)
        self.pos = 0
        self.count = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        old = self.ring[self.pos].copy()
        self.ring[self.pos] = x
        self.pos = (self.pos + 1) % self.window
        self.count += 1
        delta = x - old
        mean_old = self.mean
        self.mean = mean_old + delta / self.window
        # Sliding-window Welford update (replace ``old`` by ``x``).
        self.m2 = np.maximum(self.m2 + delta * (x - self.mean + old - mean_old), 0.0)
        if self.count < self.window:
            return np.zeros_like(x)
        sd = np.sqrt(self.m2 / self.window)
        return np.divide(x - self.mean, sd, out=np.zeros_like(x), where=sd > 1e-12)


# --------------------------------------------------------------------------------------------- faults


class FaultKind(StrEnum):
    NAN_PRICE = "nan_price"
    NEGATIVE_PRICE = "negative_price"
    HIGH_BELOW = "high_below"
    LOW_ABOVE = "low_above"
    NEGATIVE_VOLUME = "negative_volume"
    DUPLICATE_TS = "duplicate_ts"
    OUT_OF_ORDER = "out_of_order"
    OUTSIDE_SESSION = "outside_session"
    GAP = "gap"
    STALE = "stale"
    BIG_MOVE = "big_move"


# n for gap/stale is a bar count; 20 exceeds the gate's default tolerances for daily (5/3) and intraday (12/12).
_DEFAULT_FAULT_N = {FaultKind.GAP: 20, FaultKind.STALE: 20}
BIG_MOVE_FACTOR = 3.0
_FAULT_STAMP_HOUR = 3  # intraday outside_session bars are stamped 03:00 UTC (outside XNYS hours)


@dataclass(frozen=True)
class Fault:
    """One injected data defect on one symbol, applied to the fetched (windowed) bars of any interval.

    ``n``: for ``gap`` the run of consecutive bars removed, for ``stale`` the trailing bars removed (both
    default 20); for every other kind the number of defective rows (default 1).
    ``at``: position of the (first) defect in the symbol's fetched bars (negative counts from the end);
    default: drawn by the symbol's fault generator in the middle half of the window, so deterministic.

    Kinds and exactly what they do (nothing else about the symbol changes):

    * ``nan_price``: the close is NaN.
    * ``negative_price``: close and low become ``-close`` (non-positive; high/open still bracket them).
    * ``high_below``: high is set just below min(open, close) (low lowered under it if needed).
    * ``low_above``: low is set just above max(open, close) (high raised over it if needed).
    * ``negative_volume``: volume becomes ``-volume``.
    * ``duplicate_ts``: a second row with the same ts and different values (prices x1.002, half the
      volume) follows the original.
    * ``out_of_order``: the row is swapped with the next one, so ts goes backwards once in delivery order.
    * ``outside_session``: an extra flat bar (at the previous close) is inserted in order, stamped outside
      the session: daily, on the Saturday between two sessions; intraday, 03:00 UTC on a session date
      (before that session's first bar). Falls back to the next Saturday after the last bar.
    * ``gap``: ``n`` consecutive bars are removed, with bars left on both sides.
    * ``stale``: the last ``n`` bars are removed, so the last bar is old.
    * ``big_move``: from the row on, every price is multiplied by 3 (an unadjusted split in reverse), so
      exactly one bar's close jumps x3 vs the previous close with OHLC still consistent.
    """

    kind: FaultKind
    symbol: str
    n: int | None = None
    at: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        object.__setattr__(self, "symbol", str(self.symbol).strip().upper())
        if self.n is not None and self.n < 1:
            raise ValueError(f"fault {self.kind.value}:{self.symbol}: n must be >= 1, got {self.n}")

    @property
    def count(self) -> int:
        return self.n if self.n is not None else _DEFAULT_FAULT_N.get(self.kind, 1)


def parse_faults(specs: Iterable[str]) -> list[Fault]:
    """Faults from CLI strings ``kind:SYMBOL`` or ``kind:SYMBOL:n``, e.g. ``nan_price:MSFT``, ``stale:TSLA:8``."""
    faults = []
    kinds = ", ".join(k.value for k in FaultKind)
    for spec in specs:
        parts = [p.strip() for p in str(spec).split(":")]
        if len(parts) not in (2, 3) or not parts[1]:
            raise SourceError(
                f"bad fault {spec!r}: use kind:SYMBOL or kind:SYMBOL:n with kind one of {kinds}"
            )
        try:
            kind = FaultKind(parts[0].lower())
        except ValueError:
            raise SourceError(f"unknown fault kind {parts[0]!r} in {spec!r}: use one of {kinds}") from None
        n = None
        if len(parts) == 3:
            if not parts[2].isdigit() or int(parts[2]) < 1:
                raise SourceError(f"bad fault {spec!r}: n must be a positive integer")
            n = int(parts[2])
        faults.append(Fault(kind, parts[1], n))
    return faults


# ----------------------------------------------------------------------------------------- the source

_TICKER = re.compile(r"^[A-Z0-9][A-Z0-9.\-^=_/]{0,19}$")
UNKNOWN_PREFIX = "UNKNOWN"
EMPTY_PREFIX = "EMPTY"
DEFAULT_DAILY_LOOKBACK = pd.Timedelta(days=365)
DEFAULT_INTRADAY_SESSIONS = 20


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass
class _Bars:
    """Generated bars for several symbols, flat in delivery order (symbol blocks, time ascending)."""

    symbols: list[str]
    counts: np.ndarray
    ts: np.ndarray  # datetime64[ns], UTC
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    regime: np.ndarray  # index into Regime order


@dataclass
class _DailyPaths:
    """Daily simulation for S symbols over sessions [0, n) from the epoch, arrays shaped [n, S]."""

    log_open: np.ndarray
    log_close: np.ndarray
    log_high: np.ndarray
    log_low: np.ndarray
    volume: np.ndarray
    regime: np.ndarray
    sigma: np.ndarray  # the bar's daily volatility (base x regime multiplier)
    first: int  # session index of row 0 (paths are kept from here on to save memory)


class SyntheticSource:
    """Deterministic synthetic market (see the module docstring and docs/synthetic.md)."""

    name = "synthetic"

    def __init__(
        self,
        seed: int = 7,
        signal_strength: float = DEFAULT_SIGNAL_STRENGTH,
        exchange: str = "XNYS",
        faults: list[Fault] | None = None,
        now: pd.Timestamp | None = None,
        trend: float = 0.0,
        market_regime: bool = False,
        trend_start: pd.Timestamp | str | None = None,
    ) -> None:
        if signal_strength < 0:
            raise ValueError(f"signal_strength must be >= 0, got {signal_strength}")
        if not math.isfinite(trend):
            raise ValueError(f"trend must be finite, got {trend}")
        self.seed = int(seed) % 2**63
        self.signal_strength = float(signal_strength)
        # Annual log drift added to every symbol (ln 2 = prices double in a year, on top of the regimes),
        # from the session ``trend_start`` on (default: the epoch).
        self.trend = float(trend)
        self.trend_start = (
            pd.Timestamp(trend_start).tz_localize(None).normalize() if trend_start is not None else None
        )
        # One regime path for the whole market (as an index's constituents share a market regime) instead
        # of one per symbol.
        self.market_regime = bool(market_regime)
        self.exchange = exchange
        self.faults = list(faults or [])
        self.now = utc(now) if now is not None else None
        # Session dates from the epoch: a session's index here is its step in every daily path.
        self._sessions = sessions(EPOCH, pd.Timestamp.max.normalize(), exchange)

    # ------------------------------------------------------------------------------------ public API

    def fetch(self, request: FetchRequest) -> FetchResult:
        """Bars for the request's symbols and window; reserved symbols are reported in ``failures``."""
        try:
            interval_minutes(request.interval)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
        notes: list[str] = []
        failures: dict[str, str] = {}
        if request.symbols is None:
            notes.append(f"no symbols given: the default universe of {len(DEFAULT_UNIVERSE)} symbols")
        requested = list(DEFAULT_UNIVERSE) if request.symbols is None else list(request.symbols)
        loadable = self._screen(requested, failures, notes)
        start, end = self._window(request, notes)
        bars = self._generate(loadable, request.interval, start, end)
        frame = self._frame(bars, request.interval)
        if self.faults:
            frame = self._inject(frame, bars, request.interval, notes)
        return FetchResult(bars=frame, failures=failures, notes=notes)

    def regimes(self, symbol: str, interval: str, start, end) -> pd.Series:
        """The hidden regime of each bar (as fetched, without faults), indexed by bar ts."""
        bars = self._generate([symbol.strip().upper()], interval, utc(start), utc(end))
        names = np.array([r.value for r in _REGIMES], dtype=object)[bars.regime]
        return pd.Series(names, index=pd.DatetimeIndex(bars.ts).tz_localize("UTC"), name="regime")

    # ---------------------------------------------------------------------------- request handling

    def _screen(self, requested: list[str], failures: dict[str, str], notes: list[str]) -> list[str]:
        loadable: list[str] = []
        for raw in requested:
            sym = str(raw).strip().upper()
            if sym in loadable or sym in failures:
                notes.append(f"{sym} requested twice: loaded once")
            elif not _TICKER.match(sym):
                failures[str(raw)] = "not a ticker symbol"
            elif sym.startswith(UNKNOWN_PREFIX):
                failures[sym] = "unknown symbol"
            elif sym.startswith(EMPTY_PREFIX):
                failures[sym] = "empty download: no rows for the window"
            else:
                loadable.append(sym)
        return loadable

    def _clock(self) -> pd.Timestamp:
        return self.now if self.now is not None else pd.Timestamp.now(tz="UTC")

    def _window(self, request: FetchRequest, notes: list[str]) -> tuple[pd.Timestamp, pd.Timestamp]:
        """The UTC window actually served: defaults filled in, never past ``now``, never before the epoch."""
        now = self._clock()
        daily = is_daily(request.interval)
        if daily:
            done = pd.Timestamp(last_completed_session(now, self.exchange)).tz_localize("UTC")
        else:
            # Only completed bars: a bar stamped ts is complete at ts + interval.
            done = now - pd.Timedelta(minutes=interval_minutes(request.interval))
        # Never serve a bar that is not complete at ``now``, even if the request's end is later.
        end = min(utc(request.end), done) if request.end is not None else done
        if request.start is not None:
            start = utc(request.start)
        elif daily:
            start = (end - DEFAULT_DAILY_LOOKBACK).normalize()
        else:
            recent = sessions(end - pd.Timedelta(days=3 * DEFAULT_INTRADAY_SESSIONS + 10), end, self.exchange)
            first = (
                recent[-DEFAULT_INTRADAY_SESSIONS] if len(recent) >= DEFAULT_INTRADAY_SESSIONS else recent[0]
            )
            start = expected_bars(request.interval, first, first + pd.Timedelta(days=1), self.exchange)[0]
        epoch = EPOCH.tz_localize("UTC")
        if start < epoch:
            notes.append(f"synthetic history starts {EPOCH.date()}: window start {start} clipped")
            start = epoch
        return start, end

    # ----------------------------------------------------------------------------------- generation

    def _rng(self, *parts: str | int) -> np.random.Generator:
        words = [p if isinstance(p, int) else _crc(p) for p in parts]
        return np.random.default_rng([self.seed, *words])

    def _generate(self, symbols: list[str], interval: str, start: pd.Timestamp, end: pd.Timestamp) -> _Bars:
        start = max(start, EPOCH.tz_localize("UTC"))
        if not symbols or start > end:
            return _empty(symbols)
        if is_daily(interval):
            return self._daily_bars(symbols, start, end)
        return self._intraday_bars(symbols, interval, start, end)

    def _session_positions(self, dates: pd.DatetimeIndex) -> np.ndarray:
        pos = self._sessions.get_indexer(dates)
        if (pos < 0).any():
            raise SourceError(f"session {dates[pos < 0][0]} is not in the {self.exchange} calendar")
        return pos

    def _simulate_daily(self, symbols: list[str], n: int, keep_from: int = 0) -> _DailyPaths:
        """Daily log paths for sessions [0, n) from the epoch, vectorised across symbols.

        The loop runs over time because the planted term and mean reversion feed back on past closes;
        every operation inside is elementwise, so a symbol's column never depends on the other columns.
        """
        n_sym = len(symbols)
        base_price, base_vol, base_volume = np.empty(n_sym), np.empty(n_sym), np.empty(n_sym)
        for i, sym in enumerate(symbols):
            u = self._rng(sym, "1d", "symbol").random(3)
            base_price[i] = _log_uniform(u[0], *BASE_PRICE_RANGE)
            base_vol[i] = (
                ANNUAL_VOL_RANGE[0] + u[1] * (ANNUAL_VOL_RANGE[1] - ANNUAL_VOL_RANGE[0])
            ) / math.sqrt(TRADING_DAYS)
            base_volume[i] = _log_uniform(u[2], *BASE_VOLUME_RANGE)

        # One stream per quantity: a prefix of a stream does not depend on its length, so a longer
        # simulation (a later window end) reproduces the shorter one exactly.
        if self.market_regime:  # one market-wide stream: still independent of the symbols requested
            switch_u = np.repeat(self._rng("market", "1d", "regime").random(n)[:, None], n_sym, axis=1)
        else:
            switch_u = self._draws(symbols, "regime", lambda r: r.random(n))
        shocks = self._draws(symbols, "returns", lambda r: r.standard_t(TAIL_DF, n) * _T_TO_UNIT)

        # Regime walk: the next regime for every (step, symbol, current regime) at once, then a cheap lookup.
        following = (
            (switch_u[:, :, None, None] >= _CUM_TRANSITIONS).sum(axis=-1, dtype=np.int8).reshape(n, -1)
        )
        slot = len(_REGIMES) * np.arange(n_sym)
        regime = (switch_u[0][:, None] >= _CUM_STATIONARY).sum(axis=1)
        regimes = np.empty((n, n_sym), dtype=np.int8)
        regimes[0] = regime
        for t in range(1, n):
            regime = following[t][slot + regime]
            regimes[t] = regime
        del following

        sigma = base_vol * _VOL[regimes]
        drift = base_vol * _DRIFT[regimes]
        if self.trend:
            first = 0 if self.trend_start is None else int(self._sessions.searchsorted(self.trend_start))
            drift = drift + np.where(np.arange(n) >= first, self.trend / TRADING_DAYS, 0.0)[:, None]
        reversion = _REVERSION[regimes]
        kick = sigma * shocks
        tilt_scale = self.signal_strength * sigma
        level = np.zeros(n_sym)  # log close relative to the base price
        anchor = np.zeros(n_sym)
        zscore = _RollingZScore(level)
        tilt = np.zeros(n_sym)
        closes = np.empty((n, n_sym))
        for t in range(n):
            level = level + drift[t] - reversion[t] * (level - anchor) + kick[t] + tilt_scale[t] * tilt
            closes[t] = level
            anchor = anchor + ANCHOR_WEIGHT * (level - anchor)
            tilt = planted_tilt(zscore.push(level))
        del drift, reversion, kick, tilt_scale, sigma
        del switch_u, shocks

        prev = np.vstack([np.zeros((1, n_sym)), closes[:-1]])[keep_from:]
        closes = closes[keep_from:]
        regimes = regimes[keep_from:]
        rows = n - keep_from
        noise = self._draws(symbols, "bar", lambda r: _normals_from(r, keep_from, rows))
        sigma = base_vol * _VOL[regimes]
        ret = closes - prev
        # Overnight share of the day's move: the conditional split of a random walk given its total.
        gap = (
            OVERNIGHT_SHARE * ret + sigma * math.sqrt(OVERNIGHT_SHARE * (1 - OVERNIGHT_SHARE)) * noise[..., 0]
        )
        log_open = prev + gap
        log_base = np.log(base_price)
        shock = np.abs(ret) / sigma
        volume = (
            base_volume
            * _VOLUME[regimes]
            * np.exp(VOLUME_NOISE * noise[..., 3] - VOLUME_NOISE**2 / 2)
            * (VOLUME_CALM + VOLUME_PER_SHOCK * shock)
        )
        del shock
        return _DailyPaths(
            log_open=log_base + log_open,
            log_close=log_base + closes,
            log_high=log_base + np.maximum(log_open, closes) + RANGE_REACH * sigma * np.abs(noise[..., 1]),
            log_low=log_base + np.minimum(log_open, closes) - RANGE_REACH * sigma * np.abs(noise[..., 2]),
            volume=volume,
            regime=regimes,
            sigma=sigma,
            first=keep_from,
        )

    def _draws(
        self, symbols: list[str], stream: str, draw: Callable[[np.random.Generator], np.ndarray]
    ) -> np.ndarray:
        """Per-symbol draws stacked on axis 1 (time first, so each step's row is contiguous)."""
        return np.stack([draw(self._rng(sym, "1d", stream)) for sym in symbols], axis=1)

    def _daily_bars(self, symbols: list[str], start: pd.Timestamp, end: pd.Timestamp) -> _Bars:
        ts = expected_bars("1d", start, end, self.exchange)
        if len(ts) == 0:
            return _empty(symbols)
        pos = self._session_positions(ts.tz_localize(None))
        paths = self._simulate_daily(symbols, int(pos[-1]) + 1, keep_from=int(pos[0]))
        rows = pos - paths.first

        def flat(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a[rows].T).reshape(-1)

        n_sym = len(symbols)
        return _Bars(
            symbols=symbols,
            counts=np.full(n_sym, len(ts)),
            ts=np.tile(ts.tz_localize(None).as_unit("ns").to_numpy(), n_sym),
            open=np.exp(flat(paths.log_open)),
            high=np.exp(flat(paths.log_high)),
            low=np.exp(flat(paths.log_low)),
            close=np.exp(flat(paths.log_close)),
            volume=flat(paths.volume),
            regime=flat(paths.regime),
        )

    def _intraday_bars(
        self, symbols: list[str], interval: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> _Bars:
        """Each session walks from its daily open towards its daily close, from its own generator."""
        days = sessions(start.tz_localize(None), end.tz_localize(None), self.exchange)
        if len(days) == 0:
            return _empty(symbols)
        # Every bar of the touched sessions (full sessions, so a window is a slice of the same path).
        all_ts = expected_bars(interval, days[0], days[-1] + pd.Timedelta(days=1), self.exchange)
        opens = pd.DatetimeIndex(get_calendar(self.exchange).schedule.loc[days, "open"])
        day_of_bar = np.searchsorted(opens, all_ts, side="right") - 1
        per_day = np.bincount(day_of_bar, minlength=len(days))
        days = days[per_day > 0]
        if len(days) == 0:
            return _empty(symbols)
        per_day = per_day[per_day > 0]
        k_max = int(per_day.max())

        pos = self._session_positions(days)
        daily = self._simulate_daily(symbols, int(pos[-1]) + 1, keep_from=int(pos[0]))
        rows = pos - daily.first
        n_sym, n_day = len(symbols), len(days)
        n_pair = n_sym * n_day  # column j = symbol j // n_day, session j % n_day

        def pairs(a: np.ndarray) -> np.ndarray:  # [n_day, S] -> [P]
            return np.ascontiguousarray(a[rows].T).reshape(-1)

        day_open, day_close = pairs(daily.log_open), pairs(daily.log_close)
        day_sigma, day_volume = pairs(daily.sigma), pairs(daily.volume)

        shocks = np.zeros((k_max, n_pair))
        noise = np.zeros((k_max, n_pair, 3))
        ordinals = [d.toordinal() for d in days]
        for i, sym in enumerate(symbols):
            for d in range(n_day):
                k = int(per_day[d])
                rng = self._rng(sym, interval, ordinals[d])
                shocks[:k, i * n_day + d] = rng.standard_t(TAIL_DF, k) * _T_TO_UNIT
                noise[:k, i * n_day + d] = rng.standard_normal((k, 3))

        var_share = np.tile(_profile_matrix(per_day, k_max, VOLATILITY_PROFILE), (1, n_sym))
        volume_share = np.tile(_profile_matrix(per_day, k_max, VOLUME_PROFILE), (1, n_sym))
        sigma = day_sigma * np.sqrt((1.0 - OVERNIGHT_SHARE) * var_share)
        # Bridge: the session's free walk plus a drift, spread like the variance, that lands it on the
        # daily close. A random walk conditioned on its end and an end drawn with the walk's variance
        # is again a random walk, so the drift adds nothing predictable.
        free_walk = np.zeros(n_pair)
        for k in range(k_max):  # an explicit sum: numpy's pairwise reduction would depend on the shape
            free_walk = free_walk + sigma[k] * shocks[k]
        drift = (day_close - day_open - free_walk) * var_share
        level = np.zeros(n_pair)  # log close relative to the session's open
        zscore = _RollingZScore(level)
        tilt = np.zeros(n_pair)
        closes = np.empty((k_max, n_pair))
        surprise = np.empty((k_max, n_pair))  # the bar's return beyond its drift, in units of its volatility
        for k in range(k_max):
            surprise[k] = shocks[k] + self.signal_strength * tilt
            level = level + drift[k] + sigma[k] * surprise[k]
            closes[k] = level
            tilt = planted_tilt(zscore.push(level))
        opens = np.vstack([np.zeros((1, n_pair)), closes[:-1]])
        high = np.maximum(opens, closes) + RANGE_REACH * sigma * np.abs(noise[..., 0])
        low = np.minimum(opens, closes) - RANGE_REACH * sigma * np.abs(noise[..., 1])
        volume = (
            day_volume
            * volume_share
            * np.exp(VOLUME_NOISE * noise[..., 2] - VOLUME_NOISE**2 / 2)
            * (VOLUME_CALM + VOLUME_PER_SHOCK * np.abs(surprise))
        )

        # Flatten to delivery order (symbol, session, bar) and keep the window's bars.
        valid = (np.arange(k_max)[:, None] < np.tile(per_day, n_sym)[None, :]).T.reshape(-1)
        ts_all = np.tile(all_ts.tz_localize(None).as_unit("ns").to_numpy(), n_sym)
        in_window = (all_ts >= start) & (all_ts <= end)
        keep = np.tile(np.asarray(in_window), n_sym)

        def flat(a: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
            a = a + offset if offset is not None else a
            return np.ascontiguousarray(a.T).reshape(-1)[valid][keep]

        regime = np.broadcast_to(pairs(daily.regime), (k_max, n_pair))
        return _Bars(
            symbols=symbols,
            counts=np.full(n_sym, int(in_window.sum())),
            ts=ts_all[keep],
            open=np.exp(flat(opens, day_open)),
            high=np.exp(flat(high, day_open)),
            low=np.exp(flat(low, day_open)),
            close=np.exp(flat(closes, day_open)),
            volume=flat(volume),
            regime=flat(regime),
        )

    # ------------------------------------------------------------------------------- frame and faults

    def _frame(self, bars: _Bars, interval: str) -> pd.DataFrame:
        if len(bars.ts) == 0:
            return empty_bars()
        frame = pd.DataFrame(
            {
                "symbol": np.repeat(np.array(bars.symbols, dtype=object), bars.counts),
                "interval": interval,
                "ts": pd.DatetimeIndex(bars.ts).tz_localize("UTC"),
                "open": bars.open,
                "high": bars.high,
                "low": bars.low,
                "close": bars.close,
                "volume": bars.volume,
            }
        )
        return to_canonical(frame)

    def _inject(self, frame: pd.DataFrame, bars: _Bars, interval: str, notes: list[str]) -> pd.DataFrame:
        """Apply the faults of the symbols present, in the order given, each to its own symbol's rows."""
        by_symbol: dict[str, list[Fault]] = {}
        for fault in self.faults:
            by_symbol.setdefault(fault.symbol, []).append(fault)
        if not set(by_symbol) & set(bars.symbols):
            return frame
        bounds = np.concatenate([[0], np.cumsum(bars.counts)])
        blocks = []
        for i, sym in enumerate(bars.symbols):
            block = frame.iloc[bounds[i] : bounds[i + 1]].reset_index(drop=True)
            for fault in by_symbol.get(sym, []):
                rng = self._rng(sym, interval, "fault", fault.kind.value)
                block, note = _apply_fault(block, fault, rng, interval, self.exchange)
                notes.append(note)
            blocks.append(block)
        return to_canonical(pd.concat(blocks, ignore_index=True))


def _empty(symbols: list[str]) -> _Bars:
    z = np.zeros(0)
    return _Bars(
        symbols,
        np.zeros(len(symbols), dtype=int),
        np.zeros(0, "datetime64[ns]"),
        z,
        z,
        z,
        z,
        z,
        np.zeros(0, dtype=np.int8),
    )


def _normals_from(rng: np.random.Generator, first: int, rows: int, width: int = 4) -> np.ndarray:
    """Rows [first, first + rows) of a stream of [*, width] standard normals, without drawing the earlier rows.

    Uniform doubles take exactly one 64-bit draw each, so the generator can jump ahead; Box-Muller turns
    them into normals. This keeps a window's cost independent of how far it is from the epoch.
    """
    rng.bit_generator.advance(first * width)
    u = rng.random((rows, width)).T.copy()
    radius = np.sqrt(-2.0 * np.log1p(-u[0::2]))
    angle = 2.0 * np.pi * u[1::2]
    out = np.empty((rows, width))
    out[:, 0::2] = (radius * np.cos(angle)).T
    out[:, 1::2] = (radius * np.sin(angle)).T
    return out


def _log_uniform(u: float, lo: float, hi: float) -> float:
    return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def _profile_matrix(
    per_day: np.ndarray, k_max: int, profile: tuple[float, tuple[float, float], tuple[float, float]]
) -> np.ndarray:
    """[k_max, n_day] share of a session's total per bar (0 past the session's last bar).

    The profile base + h1 exp(-x / w1) + h2 exp(-(1 - x) / w2) over the elapsed fraction x is integrated
    over each bar, so long bars (1h) get their true share of the open and close bursts.
    """
    base, (h1, w1), (h2, w2) = profile
    out = np.zeros((k_max, len(per_day)))
    for k in np.unique(per_day):
        x0 = np.arange(k) / k
        x1 = (np.arange(k) + 1) / k
        mass = (
            base * (x1 - x0)
            + h1 * w1 * (np.exp(-x0 / w1) - np.exp(-x1 / w1))
            + h2 * w2 * (np.exp(-(1 - x1) / w2) - np.exp(-(1 - x0) / w2))
        )
        out[:k, per_day == k] = (mass / mass.sum())[:, None]
    return out


# ------------------------------------------------------------------------------------- fault helpers


def _positions(rng: np.random.Generator, length: int, fault: Fault, lo: int, hi: int) -> np.ndarray | None:
    """``fault.count`` row positions in [lo, hi) two apart: from ``fault.at`` or drawn in the middle half."""
    count = fault.count
    if fault.at is not None:
        first = fault.at if fault.at >= 0 else length + fault.at
        pos = first + 2 * np.arange(count)
    else:
        mid_lo, mid_hi = max(lo, length // 4), min(hi, max(lo + 1, 3 * length // 4))
        cand = np.arange(mid_lo, mid_hi, 2)
        if len(cand) < count:
            cand = np.arange(lo, hi, 2)
        if len(cand) < count:
            return None
        pos = np.sort(rng.choice(cand, size=count, replace=False))
    if len(pos) == 0 or pos.min() < lo or pos.max() >= hi:
        return None
    return pos


def _stamp(ts: pd.Series, pos: np.ndarray) -> str:
    return ", ".join(str(t) for t in ts.iloc[pos])


def _apply_fault(
    block: pd.DataFrame, fault: Fault, rng: np.random.Generator, interval: str, exchange: str
) -> tuple[pd.DataFrame, str]:
    """One symbol's bars with one fault applied, and a note saying where."""
    kind, sym, length = fault.kind, fault.symbol, len(block)
    label = f"fault {kind.value} on {sym} ({interval})"
    skipped = f"{label} not applied: no room for it in {length} bars"
    if length == 0:
        return block, skipped
    b = block.copy()

    if kind == FaultKind.STALE:
        if fault.count >= length:
            return block, skipped
        return b.iloc[: length - fault.count].reset_index(
            drop=True
        ), f"{label}: last {fault.count} bars removed"
    if kind == FaultKind.GAP:
        room = length - fault.count - 1  # first removable row is 1, last is length - 2
        if room < 1:
            return block, skipped
        if fault.at is not None:
            first = fault.at if fault.at >= 0 else length + fault.at
            if first < 1 or first >= room + 1:
                return block, f"{label} not applied: position {fault.at} leaves no bar on one side"
        else:
            first = int(rng.integers(max(1, room // 4), max(2, 3 * room // 4 + 1)))
        cut = b.iloc[first : first + fault.count]
        kept = b.drop(index=cut.index).reset_index(drop=True)
        return kept, f"{label}: {fault.count} bars removed from {cut['ts'].iloc[0]} to {cut['ts'].iloc[-1]}"
    if kind == FaultKind.OUTSIDE_SESSION:
        return _insert_outside_session(b, fault, rng, interval, exchange, label)

    # Row faults: big_move needs a previous bar, out_of_order a next one.
    lo = 1 if kind == FaultKind.BIG_MOVE else 0
    hi = length - 1 if kind == FaultKind.OUT_OF_ORDER else length
    pos = _positions(rng, length, fault, lo, hi)
    if pos is None:
        return block, skipped
    where = _stamp(b["ts"], pos)
    o, h, low, c = (b[col].to_numpy(copy=True) for col in ("open", "high", "low", "close"))
    if kind == FaultKind.NAN_PRICE:
        b.loc[pos, "close"] = np.nan
    elif kind == FaultKind.NEGATIVE_PRICE:
        b.loc[pos, "close"] = -c[pos]
        b.loc[pos, "low"] = -c[pos]
    elif kind == FaultKind.HIGH_BELOW:
        high = np.minimum(o[pos], c[pos]) * 0.998
        b.loc[pos, "high"] = high
        b.loc[pos, "low"] = np.minimum(low[pos], high * 0.998)
    elif kind == FaultKind.LOW_ABOVE:
        new_low = np.maximum(o[pos], c[pos]) * 1.002
        b.loc[pos, "low"] = new_low
        b.loc[pos, "high"] = np.maximum(h[pos], new_low * 1.002)
    elif kind == FaultKind.NEGATIVE_VOLUME:
        b.loc[pos, "volume"] = -b.loc[pos, "volume"].to_numpy()
    elif kind == FaultKind.BIG_MOVE:
        for p in pos:
            b.loc[p:, ["open", "high", "low", "close"]] *= BIG_MOVE_FACTOR
    elif kind == FaultKind.OUT_OF_ORDER:
        order = np.arange(length)
        order[pos], order[pos + 1] = pos + 1, pos
        b = b.iloc[order].reset_index(drop=True)
    elif kind == FaultKind.DUPLICATE_TS:
        dup = b.iloc[pos].copy()
        dup[["open", "high", "low", "close"]] *= 1.002
        dup["volume"] *= 0.5
        dup.index = pos + 0.5  # sorts right after its original
        b = pd.concat([b, dup]).sort_index(kind="stable").reset_index(drop=True)
    return b, f"{label} at {where}"


def _insert_outside_session(
    b: pd.DataFrame, fault: Fault, rng: np.random.Generator, interval: str, exchange: str, label: str
) -> tuple[pd.DataFrame, str]:
    """Insert flat bars stamped outside the session, in ts order, before the chosen rows."""
    ts = pd.DatetimeIndex(b["ts"])
    daily = is_daily(interval)
    if daily:
        # A Saturday strictly between two consecutive bars.
        prev = ts[:-1]
        saturday = prev.normalize() + pd.to_timedelta((5 - prev.weekday) % 7, unit="D")
        stamps = saturday
        ok = (saturday > prev) & (saturday < ts[1:])
    else:
        # 03:00 UTC on the date of a session's first bar.
        stamps = ts[1:].normalize() + pd.Timedelta(hours=_FAULT_STAMP_HOUR)
        ok = (ts[1:].normalize() != ts[:-1].normalize()) & (stamps > ts[:-1])
    ok = np.asarray(ok) & ~in_session(stamps, interval, exchange)
    cand = np.flatnonzero(ok) + 1  # insert before this row
    if fault.at is not None:
        first = fault.at if fault.at >= 0 else len(b) + fault.at
        cand = cand[cand >= first]
    if len(cand) >= fault.count:
        mid = cand[(cand >= len(b) // 4) & (cand < 3 * len(b) // 4)]
        pool = mid if len(mid) >= fault.count and fault.at is None else cand
        pos = (
            pool[: fault.count]
            if fault.at is not None
            else np.sort(rng.choice(pool, fault.count, replace=False))
        )
        new_ts = [stamps[p - 1] for p in pos]
    else:
        # No room inside the window: append after the last bar, on the following Saturdays.
        last = ts[-1].normalize()
        first_sat = last + pd.Timedelta(days=(5 - last.weekday()) % 7 or 7)
        hour = pd.Timedelta(0) if daily else pd.Timedelta(hours=15)
        pos = np.full(fault.count, len(b))
        new_ts = [first_sat + pd.Timedelta(days=7 * i) + hour for i in range(fault.count)]
    rows = []
    for p, stamp in zip(pos, new_ts, strict=True):
        ref = b.iloc[p - 1] if p > 0 else b.iloc[0]
        price = ref["close"] if p > 0 else ref["open"]
        rows.append(
            {
                "symbol": ref["symbol"],
                "interval": ref["interval"],
                "ts": stamp,
                "open": price,
                "high": price,
                "low": price,
                "close": price,
                "volume": max(ref["volume"] * 0.01, 1.0),
            }
        )
    extra = pd.DataFrame(rows, index=np.asarray(pos, dtype=float) - 0.5 + np.arange(len(pos)) * 1e-3)
    out = pd.concat([b, extra]).sort_index(kind="stable").reset_index(drop=True)
    return out, f"{label}: bar(s) stamped {', '.join(str(t) for t in new_ts)}"
