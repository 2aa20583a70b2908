"""The table renderer as plain functions: formats per column kind, fitting a width, never cutting
dates or money, right-aligned numbers."""

from __future__ import annotations

import decimal
import math

import pandas as pd
import pytest
from rich.console import Console

from qtrader.tables import KEEP, LOW, Column, Kind, format_cell, frame_columns, is_midnight, jsonable, render


def _text(table, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(table)
    return console.export_text()


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (39.0, Kind.int, "39"),
        (15040, Kind.int, "15,040"),
        (-366.456, Kind.money, "-366.46"),
        (104000, Kind.money, "104,000.00"),
        (decimal.Decimal("99.5"), Kind.price, "99.50"),
        (0.08932, Kind.r, "0.09"),
        (-0.001, Kind.r, "0.00"),  # never "-0.00"
        (0.6667, Kind.rate, "66.7%"),
        (12.345, Kind.pct, "12.35%"),  # 12.345 is stored as 12.3449999...: rounds half-even in binary
        (0.52734, Kind.metric, "0.527"),
        (71.25, Kind.score, "71.2"),
        (0.000123456, Kind.sig, "0.0001235"),
        (None, Kind.money, ""),
        (math.nan, Kind.r, ""),
        (pd.NaT, Kind.ts, ""),
        (pd.Timestamp("2026-11-20 21:05:07.123456", tz="UTC"), Kind.ts, "2026-11-20 21:05"),
        (pd.Timestamp("2026-11-20 16:05", tz="America/New_York"), Kind.ts, "2026-11-20 21:05"),  # as UTC
        (pd.Timestamp("2026-11-20 21:05"), Kind.date, "2026-11-20"),
        ("text", Kind.text, "text"),
    ],
)
def test_format_cell(value, kind, expected):
    assert format_cell(value, kind) == expected


def test_daily_timestamps_print_as_dates():
    days = list(pd.date_range("2026-11-02", periods=3, freq="D", tz="UTC"))
    assert is_midnight(days) and not is_midnight([*days, pd.Timestamp("2026-11-05 14:30", tz="UTC")])
    table = render([Column("ts", "bar", Kind.ts)], [{"ts": d} for d in days], 80)
    assert "2026-11-02" in _text(table, 80) and "00:00" not in _text(table, 80)


COLUMNS = [
    Column("exit_ts", "exit", Kind.ts, KEEP),
    Column("symbol", "symbol", Kind.text, KEEP),
    Column("side", "side"),
    Column("qty", "qty", Kind.int),
    Column("entry_price", "entry", Kind.price),
    Column("exit_price", "exit price", Kind.price),
    Column("pnl", "P&L", Kind.money, KEEP),
    Column("r_multiple", "R", Kind.r),
    Column("exit_reason", "exit reason", Kind.text),
    Column("legs", "legs", Kind.text, LOW),
    Column("contributors", "modules that voted", Kind.text, LOW, short="modules"),
]
ROWS = [
    {"exit_ts": pd.Timestamp("2026-11-06 15:30", tz="UTC"), "symbol": "AAPL", "side": "buy", "qty": 39.0,
     "entry_price": 188.1234, "exit_price": 179.0, "pnl": -366.4567, "r_multiple": -1.02345,
     "exit_reason": "stop", "legs": "tp1:stop, tp2:stop, tp3:stop", "contributors": "regime,direction,patterns"},
    {"exit_ts": pd.Timestamp("2026-11-09 20:00", tz="UTC"), "symbol": "MSFT", "side": "sell", "qty": 12.0,
     "entry_price": 401.5, "exit_price": 395.25, "pnl": 75.0, "r_multiple": 0.61,
     "exit_reason": "take_profit_3_after_trailing_stop_moved_twice", "legs": "tp1:TP1, tp2:TP2, tp3:trail",
     "contributors": "imbalance"},
]  # fmt: skip


@pytest.mark.parametrize("width", [60, 80, 100, 140])
def test_fits_the_width_and_never_cuts_dates_or_money(width):
    text = _text(render(COLUMNS, ROWS, width), width)
    assert max(len(line) for line in text.splitlines()) <= width, text
    for whole in ("2026-11-06 15:30", "2026-11-09 20:00", "-366.46", "75.00", "AAPL", "MSFT"):
        assert whole in text, text


def test_low_value_columns_go_first_and_the_caption_names_them():
    text = _text(render(COLUMNS, ROWS, 80), 80)
    assert "legs" not in text.splitlines()[0] and "tp1:TP1" not in text
    assert "hidden at 80 columns:" in text and "legs" in text.split("hidden")[1]
    assert "P&L" in text and "exit price" in text  # normal columns kept while low-value ones could go


def test_everything_shown_when_there_is_room():
    text = _text(render(COLUMNS, ROWS, 200), 200)
    assert "modules that voted" in text and "take_profit_3_after_trailing_stop_moved_twice" in text
    assert "hidden" not in text


def test_long_text_is_shortened_before_normal_columns_are_dropped():
    text = _text(render(COLUMNS, ROWS, 100), 100)
    assert "…" in text  # the long exit reason
    assert "R" in text.splitlines()[0].split() and "qty" in text


def test_numbers_are_right_aligned():
    text = _text(render(COLUMNS, ROWS, 140), 140)
    lines = [line for line in text.splitlines() if "AAPL" in line or "MSFT" in line]
    assert lines[0].index("-366.46") + len("-366.46") == lines[1].index("75.00") + len("75.00")
    assert lines[0].index("39") + 2 == lines[1].index("12 ") + 2


def test_frame_columns_and_json():
    df = pd.DataFrame(
        {"n": [1, 2], "x": [0.5, 1.25], "ts": pd.to_datetime(["2026-11-02", "2026-11-03"], utc=True),
         "name": ["a", None]}
    )  # fmt: skip
    kinds = [c.kind for c in frame_columns(df)]
    assert kinds == [Kind.int, Kind.number, Kind.ts, Kind.text]
    text = _text(render(frame_columns(df), df.to_dict("records"), 80), 80)
    assert "1.25" in text and "0.50" in text and "2026-11-02" in text and "None" not in text
    assert jsonable(pd.Timestamp("2026-11-02", tz="UTC")) == "2026-11-02T00:00:00+00:00"
    assert jsonable(decimal.Decimal("1.5")) == 1.5 and jsonable(math.nan) is None and jsonable(pd.NaT) is None


def test_daily_rows_of_a_mixed_interval_table_print_as_dates():
    cols = [Column("interval", "interval"), Column("last", "last bar", Kind.ts, interval_key="interval")]
    rows = [
        {"interval": "1d", "last": pd.Timestamp("2026-12-02", tz="UTC")},
        {"interval": "5m", "last": pd.Timestamp("2026-12-03 17:40", tz="UTC")},
    ]
    text = _text(render(cols, rows, 80), 80)
    assert "2026-12-02 00:00" not in text and "2026-12-02" in text and "2026-12-03 17:40" in text


def test_headers_are_abbreviated_one_at_a_time_from_the_right():
    cols = [
        Column("a", "alpha wide header", Kind.int, short="a"),
        Column("b", "beta wide header", Kind.int, short="b"),
    ]
    rows = [{"a": 1, "b": 2}]
    assert _text(render(cols, rows, 200), 200).split()[:6] == [
        "alpha",
        "wide",
        "header",
        "beta",
        "wide",
        "header",
    ]
    narrow = _text(render(cols, rows, 22), 22)
    assert "alpha wide header" in narrow and "beta" not in narrow  # only the right one abbreviated
