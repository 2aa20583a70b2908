"""Paper-to-replay parity: the bars the local paper account traded, replayed through the backtest path.

The live decision flow stored, for every bar it decided, the inputs the engine read: the bar's features and
predictions (the live ones too), and on each decision row the health run, the champion version and the
benchmarked record it used. ``replay_paper`` rebuilds each bar from those records and runs it through the
backtest's path (the engine, the trader, a simulated broker in memory, the in-memory order gate), then
compares what came out with what the live run wrote: decisions, bracket orders and fills, row for row.

What it cannot know is a settings override the live run was started with (``decide(overrides=...)``):
pass the same ``overrides``. Alerts are read as they stood at the health run (opened before it, not
resolved by then); an alert updated since then is read with its newest figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from brokers.simulated import SimulatedBroker
from brokers.trader import BarMarket, Recorder, Trader, replay
from models import engine as me
from models.features import FEATURE_SET_VERSION
from models.fills import FillCosts
from qtrader.settings import Settings
from tasks.backtest import order_gate
from tasks.decide import bar_signals, market_open, predict_bar, read_health
from tasks.retrain import Champion
from warehouse import decisions as wd
from warehouse.db import Warehouse
from warehouse.models import load_artifact
from warehouse.paper import WarehouseBars

# What is compared, per table (the golden trade list's columns: what a trade is, not when it was recorded).
COMPARED = {
    "decisions": ["ts", "symbol", "side", "accepted", "reason_code", "qty", "entry_ref", "stop_price", "tp1_price",
                  "tp2_price", "tp3_price", "size_multiplier", "confidence_calibrated", "client_order_ids"],
    "orders": ["client_order_id", "decision_id", "leg", "symbol", "side", "qty", "entry_ref", "take_profit",
               "stop_price"],
    "fills": ["ts", "symbol", "side", "role", "qty", "price", "commission", "client_order_id"],
}  # fmt: skip
KEYS = {
    "decisions": ["ts", "symbol"],
    "orders": ["client_order_id"],
    "fills": ["ts", "client_order_id", "role"],
}


@dataclass
class PaperReplay:
    bars: int
    live: dict[str, pd.DataFrame]
    replayed: dict[str, pd.DataFrame]
    differences: dict[str, pd.DataFrame]  # per table: rows that differ (empty: identical)

    @property
    def identical(self) -> bool:
        return all(d.empty for d in self.differences.values())

    def lines(self) -> list[str]:
        out = [f"replayed {self.bars} decided bars of the local paper account through the backtest path"]
        for t, d in self.differences.items():
            n = len(self.live[t])
            out.append(
                f"{t}: {n} live, {len(self.replayed[t])} replayed, "
                + ("identical" if d.empty else f"{len(d)} differ")
            )
        return out


def _champions(wh: Warehouse, interval: str, versions: dict[str, int]) -> dict[str, Champion]:
    reg = wh.query_df("SELECT * FROM model_registry WHERE interval = ?", [interval])
    out = {}
    for module, version in versions.items():
        row = reg[(reg["module"] == module) & (reg["version"] == version)]
        if len(row):
            r = row.iloc[0].to_dict()
            # The version the bar used, checked against its registry hash like any champion (a changed
            # or missing file raises ArtifactRefused: the replay cannot claim parity without it).
            out[module] = Champion(
                r, load_artifact(r["artifact_path"], r.get("artifact_sha256"), interval=interval)
            )
    return out


def _versions(row: pd.Series, source: str) -> dict[str, int]:
    members = json.loads(row["module_p_up"]) if row["module_p_up"] else {}
    out = {m: int(v["version"]) for m, v in members.items() if v}
    out[source] = int(row["model_version"])
    return out


def canonical(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reindex(columns=COMPARED[table]).copy()
    for c in out.columns:
        if c == "ts":
            out[c] = pd.to_datetime(out[c], utc=True)
        elif not pd.api.types.is_numeric_dtype(out[c]) and c not in (
            "symbol", "side", "role", "reason_code", "client_order_id", "decision_id", "client_order_ids"
        ):  # fmt: skip
            num = pd.to_numeric(out[c], errors="coerce")
            if num.notna().sum() == out[c].notna().sum():
                out[c] = num.astype(float)
    for c in out.select_dtypes("float").columns:
        out[c] = out[c].round(6)
    return out.sort_values(KEYS[table], kind="stable").reset_index(drop=True)


def replay_paper(settings: Settings, interval: str, overrides: dict[str, Any] | None = None) -> PaperReplay:
    """Replay every bar the local paper account decided (module docstring) and compare."""
    from qtrader.settings import load_settings

    s = load_settings(warehouse=settings.warehouse, **(overrides or {}))
    wh = Warehouse.from_settings(s)
    name, source = "local", s.decision.source_module
    decided = wh.query_df(
        "SELECT * FROM decisions WHERE broker = ? AND interval = ? AND strategy = ? ORDER BY ts, symbol",
        [name, interval, s.orders.strategy],
    )
    if decided.empty:
        raise ValueError(f"the local paper account in {wh} decided no {interval} bars yet: nothing to replay")
    acct = wh.query_df("SELECT starting_cash FROM paper_account ORDER BY created_at LIMIT 1")
    p = s.paper
    broker = SimulatedBroker.new(
        acct["starting_cash"].iloc[0] if len(acct) else p.starting_cash,
        FillCosts(p.slippage_bps, p.commission_per_share, p.commission_bps), interval=interval, tick=s.orders.tick,
        feed=WarehouseBars(wh, interval),
    )  # fmt: skip
    trader = Trader(broker, me.EngineConfig.from_settings(s, name), order_gate)
    records = Recorder(name)
    cache: dict[tuple, dict[str, Champion]] = {}
    firsts = decided.groupby("ts", sort=True).head(1).set_index("ts")

    def market_at(t: pd.Timestamp) -> BarMarket:
        first = firsts.loc[t]
        versions = _versions(first, source)
        key = tuple(sorted(versions.items()))
        if key not in cache:
            cache[key] = _champions(wh, interval, versions)
        champions = cache[key]
        members = [m for m in s.signal.members if m in champions and champions[m].artifact is not None]
        data = wd.bar_frame(wh, interval, t, FEATURE_SET_VERSION, members, name)
        preds = predict_bar(champions, members, data, interval, t, "paper-replay", lambda: t)
        feats = data["features"]
        model = me.ModelView(
            source, int(first["model_version"]), first["calibration"], _opt(first["accuracy"]),
            _opt(first["performance_score"]), {k: _opt(first[f"{k}_rate"]) for k in ("tp1", "tp2", "tp3")},
            _opt(first["learned_stop_atr"]),
        )  # fmt: skip
        return BarMarket(
            ts=t, interval=interval, market_open=market_open(t, interval, s.exchange),
            signals=bar_signals(s, champions[source], preds, feats),
            prices=dict(zip(feats["symbol"].astype(str), feats["bar_close"].astype(float), strict=True)),
            health=read_health(wh, pd.Timestamp(first["health_ts"]).tz_convert("UTC")), model=model,
        )  # fmt: skip

    times = [pd.Timestamp(t).tz_convert("UTC") for t in firsts.index]
    firsts.index = times
    replay(trader, times, market_at, records, "paper-replay")
    frames = records.frames()
    replayed = {"decisions": frames["decisions"], "orders": frames["orders"], "fills": frames["fills"]}
    live = {
        "decisions": decided,
        "orders": wh.query_df("SELECT * FROM decision_orders WHERE broker = ?", [name]),
        "fills": wh.query_df("SELECT * FROM broker_fills WHERE broker = ?", [name]),
    }
    live = {k: canonical(k, v) for k, v in live.items()}
    replayed = {k: canonical(k, v) for k, v in replayed.items()}
    diffs = {k: _differences(live[k], replayed[k]) for k in COMPARED}
    return PaperReplay(decided["ts"].nunique(), live, replayed, diffs)


def _opt(x) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def _differences(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    both = a.merge(b, how="outer", indicator=True)
    diff = both[both["_merge"] != "both"].copy()
    diff["only_in"] = diff.pop("_merge").astype(str).map({"left_only": "live", "right_only": "replay"})
    return diff.reset_index(drop=True)
