"""tasks.decide.member_predictions (the live bar's member P(up), also every backtest bar's) against the
per-module pandas version it replaced, kept here as the reference: stored rows placed by symbol, missing
ones predicted by the champion, the detail of each."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.training import live_predictions
from tasks.decide import PREDICTION_COLUMNS, member_predictions

MEMBERS = ["direction", "momentum", "regime"]
TS = pd.Timestamp("2026-03-02", tz="UTC")


class _Model:
    """A champion artifact whose P(up) is a fixed function of the features (live_predictions' inputs)."""

    def __init__(self, module: str, version: int) -> None:
        self.module, self.version, self.label_horizon = module, version, 5
        self.calibrator, self.seed_accuracy = None, 0.55
        self.train_end = "2026-01-01T00:00:00+00:00"

    def predict_p_up(self, X: pd.DataFrame):
        return 1 / (1 + np.exp(-X["x"].to_numpy(dtype=float) * (1 + self.version))), 0.5


def _reference(
    champions: dict[str, Any],
    members: list[str],
    features: pd.DataFrame,
    stored: pd.DataFrame,
    interval: str,
    ts: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, Any]]]:
    """(P(up) per symbol x member, new prediction rows, per-symbol detail for the decisions row).

    A stored prediction of the bar (walk-forward or live, written by the retrain) is used as is; a missing
    one is made by the champion's artifact on the bar's features (``models.training.live_predictions``),
    ``out_of_sample`` true only when the bar is after the champion's training window.
    """
    symbols = features["symbol"].astype(str).tolist()
    p = pd.DataFrame(index=pd.Index(symbols, name="symbol"), columns=members, dtype="float64")
    detail: dict[str, dict[str, Any]] = {s: {} for s in symbols}
    new_rows = []
    for m in members:
        art = champions[m].artifact
        have = stored[stored["module"] == m].set_index("symbol")
        have = have[have.index.isin(symbols)]
        p.loc[have.index, m] = have["p_up"].astype(float)
        for sym, pu, pc, v in zip(
            have.index, have["p_up"], have["p_up_calibrated"], have["model_version"], strict=True
        ):
            detail[str(sym)][m] = {
                "p_up": round(float(pu), 4),
                "p_up_calibrated": round(float(pc), 4),
                "version": int(v),
            }
        missing = features[~features["symbol"].isin(have.index)]
        if missing.empty:
            continue
        keys = missing[["symbol"]].assign(interval=interval, ts=ts).reset_index(drop=True)
        frame = live_predictions(art, keys, missing.reset_index(drop=True))
        frame["out_of_sample"] = bool(ts > pd.Timestamp(art.train_end))
        new_rows.append(frame)
        p.loc[frame["symbol"].to_numpy(), m] = frame["p_up"].to_numpy()
        for sym, pu, pc in zip(frame["symbol"], frame["p_up"], frame["p_up_calibrated"], strict=True):
            detail[str(sym)][m] = {"p_up": round(float(pu), 4), "p_up_calibrated": round(float(pc), 4),
                                   "version": int(art.version)}  # fmt: skip
    new = pd.concat(new_rows, ignore_index=True) if new_rows else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return p, new, detail


def _case(seed: int):
    rng = np.random.default_rng(seed)
    symbols = [f"S{i:03d}" for i in rng.permutation(40)[: int(rng.integers(1, 30))]]
    features = pd.DataFrame({"symbol": symbols, "x": rng.normal(size=len(symbols))})
    rows = []
    for v, m in enumerate(MEMBERS, 1):
        for sym in rng.permutation(symbols + ["ZZZ"])[: int(rng.integers(0, len(symbols) + 2))]:
            rows.append({"symbol": str(sym), "module": m, "p_up": rng.random(), "p_up_calibrated": rng.random(),
                         "model_version": v, "ts": TS})  # fmt: skip
    stored = pd.DataFrame(
        rows, columns=["symbol", "module", "p_up", "p_up_calibrated", "model_version", "ts"]
    )
    champions = {m: SimpleNamespace(artifact=_Model(m, v)) for v, m in enumerate(MEMBERS, 1)}
    return champions, features, stored


@pytest.mark.parametrize("seed", range(40))
def test_member_predictions_equal_the_per_module_reference(seed):
    champions, features, stored = _case(seed)
    got = member_predictions(champions, MEMBERS, features, stored, "1d", TS)
    want = _reference(champions, MEMBERS, features, stored, "1d", TS)
    pd.testing.assert_frame_equal(got[0], want[0])
    pd.testing.assert_frame_equal(got[1].drop(columns="latency_ms", errors="ignore"),
                                  want[1].drop(columns="latency_ms", errors="ignore"))  # fmt: skip
    assert got[2] == want[2]
    assert list(got[2]) == list(want[2]) and all(list(got[2][s]) == list(want[2][s]) for s in got[2])
