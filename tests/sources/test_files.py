"""FilesSource: header and date variants, interval inference, ordering, malformed files, parquet, windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sources.base import BAR_COLUMNS, FetchRequest, MarketDataSource, SourceError
from sources.files import FilesSource

DATA = Path(__file__).resolve().parents[1] / "data" / "files"
GOOD = "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,1000\n2024-01-03,10.5,12,10,11.5,2000\n"


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_text(text)
    return p


def fetch(folder: Path, req_interval: str = "1d", symbols=None, start=None, end=None, **source_kw):
    """Fetch through a FilesSource; source_kw go to FilesSource (interval=..., exchange_tz=...)."""
    req = FetchRequest(
        symbols,
        req_interval,
        pd.Timestamp(start, tz="UTC") if start else None,
        pd.Timestamp(end, tz="UTC") if end else None,
    )
    return FilesSource(folder, **source_kw).fetch(req)


def utc(*ts: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(t, tz="UTC") for t in ts]


def test_is_a_market_data_source(tmp_path):
    assert isinstance(FilesSource(tmp_path), MarketDataSource)
    assert FilesSource.name == "files"


def test_yahoo_export_adjusted_by_adj_close():
    res = fetch(DATA / "yahoo_daily")
    assert res.failures == {}
    bars = res.bars
    assert list(bars.columns) == BAR_COLUMNS and str(bars["ts"].dtype) == "datetime64[ns, UTC]"
    assert set(bars["symbol"]) == {"GOOG"} and set(bars["interval"]) == {"1d"}
    assert len(bars) == 19
    assert bars["ts"].iloc[0] == pd.Timestamp("2004-08-19", tz="UTC")
    assert bars["ts"].iloc[-1] == pd.Timestamp("2004-09-15", tz="UTC")
    first = bars.iloc[0]
    factor = 2.496289 / 2.499133
    assert first["close"] == pytest.approx(2.496289)
    assert first["open"] == pytest.approx(2.490664 * factor)
    assert first["high"] == pytest.approx(2.591785 * factor)
    assert first["low"] == pytest.approx(2.390042 * factor)
    assert first["volume"] == 897427216  # volume is not adjusted
    (note,) = res.notes
    assert "GOOG.csv" in note and "1d bars (inferred)" in note and "adjusted by Adj Close" in note


@pytest.mark.parametrize(
    "header",
    [
        "Date,Open,High,Low,Close,Volume",
        "DATE,OPEN,HIGH,LOW,CLOSE,VOLUME",
        "date,open,high,low,close,vol",
        "Timestamp,open,High,low,Close,Vol",
        "datetime,Open,High,Low,Close,Volume",
        "time,open,high,low,close,volume",
        "Unnamed: 0,Date,Open,High,Low,Close,Volume",
        ",date,open,high,low,close,volume",
    ],
)
def test_header_variants(tmp_path, header):
    index = header.startswith(("Unnamed", ","))
    rows = ["2024-01-02,10,11,9,10.5,1000", "2024-01-03,10.5,12,10,11.5,2000"]
    body = [f"{i},{r}" if index else r for i, r in enumerate(rows)]
    write(tmp_path, "aapl.csv", "\n".join([header, *body]) + "\n")
    res = fetch(tmp_path)
    assert res.failures == {}
    assert list(res.bars["ts"]) == utc("2024-01-02", "2024-01-03")
    assert res.bars["close"].tolist() == [10.5, 11.5]
    assert res.bars["volume"].tolist() == [1000.0, 2000.0]
    assert "prices as delivered" in res.notes[0]


def test_pandas_to_csv_default_index_column(tmp_path):
    df = pd.DataFrame(
        {
            "date": ["2024-01-02", "2024-01-03"],
            "open": [1.0, 2.0],
            "high": [2.0, 3.0],
            "low": [0.5, 1.5],
            "close": [1.5, 2.5],
            "volume": [10, 20],
        }
    )
    df.to_csv(tmp_path / "x.csv")  # header ",date,open,..."
    assert (tmp_path / "x.csv").read_text().startswith(",date,open")
    res = fetch(tmp_path)
    assert res.failures == {} and res.bars["open"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        (["2004-08-19", "2004-08-20"], ["2004-08-19", "2004-08-20"]),
        (["1/4/1999", "12/31/1999"], ["1999-01-04", "1999-12-31"]),  # US month/day/year
        (["20040819", "20040820"], ["2004-08-19", "2004-08-20"]),
        (["2024-03-01 00:00:00", "2024-03-04 00:00:00"], ["2024-03-01", "2024-03-04"]),
        (
            ["2024-03-01T00:00:00-05:00", "2024-03-04T00:00:00-05:00"],
            ["2024-03-01", "2024-03-04"],
        ),  # date as written
    ],
)
def test_daily_date_formats(tmp_path, dates, expected):
    write(
        tmp_path,
        "a.csv",
        "Date,Open,High,Low,Close,Volume\n" + "".join(f"{d},1,2,0.5,1.5,100\n" for d in dates),
    )
    res = fetch(tmp_path)
    assert res.failures == {}
    assert list(res.bars["ts"]) == utc(*expected)
    assert set(res.bars["interval"]) == {"1d"}


def test_intraday_iso_with_and_without_zone(tmp_path):
    # Same three instants, written three ways; 10 March 2024 is the DST change in New York.
    write(
        tmp_path,
        "z.csv",
        "timestamp,open,high,low,close,volume\n2024-03-08T14:30:00Z,1,2,0.5,1.5,10\n2024-03-08T14:35:00Z,1,2,0.5,1.5,10\n2024-03-11T13:30:00Z,1,2,0.5,1.5,10\n",
    )
    write(
        tmp_path,
        "off.csv",
        "timestamp,open,high,low,close,volume\n2024-03-08 09:30:00-05:00,1,2,0.5,1.5,10\n2024-03-08 09:35:00-05:00,1,2,0.5,1.5,10\n2024-03-11 09:30:00-04:00,1,2,0.5,1.5,10\n",
    )
    write(
        tmp_path,
        "naive.csv",
        "timestamp,open,high,low,close,volume\n2024-03-08 09:30:00,1,2,0.5,1.5,10\n2024-03-08 09:35:00,1,2,0.5,1.5,10\n2024-03-11 09:30:00,1,2,0.5,1.5,10\n",
    )
    res = fetch(tmp_path, "5m")
    assert res.failures == {}
    expected = utc("2024-03-08 14:30", "2024-03-08 14:35", "2024-03-11 13:30")
    for sym in ("Z", "OFF", "NAIVE"):
        got = res.bars[res.bars["symbol"] == sym]
        assert list(got["ts"]) == expected, sym
        assert set(got["interval"]) == {"5m"}


def test_naive_times_use_the_exchange_zone(tmp_path):
    write(
        tmp_path,
        "vod.csv",
        "datetime,open,high,low,close,volume\n2024-07-01 08:00,1,2,0.5,1.5,1\n2024-07-01 09:00,1,2,0.5,1.5,1\n",
    )
    res = fetch(tmp_path, "1h", exchange_tz="Europe/London")
    assert list(res.bars["ts"]) == utc("2024-07-01 07:00", "2024-07-01 08:00")


def test_date_and_time_columns(tmp_path):
    write(
        tmp_path,
        "a.csv",
        "Date,Time,Open,High,Low,Close,Volume\n2024-03-08,09:30,1,2,0.5,1.5,10\n2024-03-08,09:45,1,2,0.5,1.5,10\n",
    )
    res = fetch(tmp_path, "15m")
    assert res.failures == {}
    assert list(res.bars["ts"]) == utc("2024-03-08 14:30", "2024-03-08 14:45")


@pytest.mark.parametrize(("step", "label"), [(5, "5m"), (60, "1h"), (15, "15m")])
def test_interval_inferred(tmp_path, step, label):
    times = [pd.Timestamp("2024-03-08 09:30") + pd.Timedelta(minutes=step * i) for i in range(4)]
    times += [pd.Timestamp("2024-03-11 09:30") + pd.Timedelta(minutes=step * i) for i in range(2)]
    times.insert(2, times[1] + pd.Timedelta(minutes=step * 7))  # one gap must not fool the mode
    write(
        tmp_path,
        "a.csv",
        "datetime,open,high,low,close,volume\n" + "".join(f"{t},1,2,0.5,1.5,1\n" for t in times),
    )
    res = fetch(tmp_path, label)
    assert res.failures == {}
    assert set(res.bars["interval"]) == {label}
    assert f"{label} bars (inferred)" in res.notes[0]


def test_interval_mismatch_is_a_failure_unless_given(tmp_path):
    write(
        tmp_path,
        "a.csv",
        "datetime,open,high,low,close,volume\n2024-03-08 09:30,1,2,0.5,1.5,1\n2024-03-08 09:35,1,2,0.5,1.5,1\n",
    )
    write(tmp_path, "b.csv", GOOD)
    res = fetch(tmp_path, "15m")
    assert res.failures["A"] == "a.csv: holds 5m bars, the request is for 15m"
    assert res.failures["B"] == "b.csv: holds 1d bars, the request is for 15m"
    assert res.bars.empty

    res = fetch(tmp_path, "5m", symbols=["A"])
    assert res.failures == {} and len(res.bars) == 2

    # Given explicitly, the interval is trusted: "1h" equals a request for "60m" too.
    write(tmp_path, "a.csv", "datetime,open,high,low,close,volume\n2024-03-08 09:30,1,2,0.5,1.5,1\n")
    res = fetch(tmp_path, "60m", symbols=["A"], interval="1h")
    assert res.failures == {} and list(res.bars["interval"]) == ["60m"]
    assert "(given)" in res.notes[0]


def test_one_bar_per_day_cannot_be_inferred(tmp_path):
    write(
        tmp_path,
        "a.csv",
        "datetime,open,high,low,close,volume\n2024-03-08 16:00,1,2,0.5,1.5,1\n2024-03-11 16:00,1,2,0.5,1.5,1\n",
    )
    res = fetch(tmp_path)
    assert "cannot infer the bar interval" in res.failures["A"]
    # Daily bars stamped at the close: say so, and the date is kept.
    res = fetch(tmp_path, interval="1d")
    assert list(res.bars["ts"]) == utc("2024-03-08", "2024-03-11")


def test_descending_file_reversed(tmp_path):
    write(
        tmp_path,
        "a.csv",
        "Date,Open,High,Low,Close,Volume\n2024-01-04,3,3,3,3,3\n2024-01-03,2,2,2,2,2\n2024-01-02,1,1,1,1,1\n",
    )
    res = fetch(tmp_path)
    assert list(res.bars["ts"]) == utc("2024-01-02", "2024-01-03", "2024-01-04")
    assert res.bars["close"].tolist() == [1.0, 2.0, 3.0]
    assert "newest-first order reversed" in res.notes[0]


def test_out_of_order_and_duplicates_kept_in_delivery_order(tmp_path):
    write(
        tmp_path,
        "a.csv",
        "Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,1,1\n2024-01-04,3,3,3,3,3\n2024-01-03,2,2,2,2,2\n2024-01-03,9,9,9,9,9\n",
    )
    res = fetch(tmp_path)
    assert list(res.bars["ts"]) == utc("2024-01-02", "2024-01-04", "2024-01-03", "2024-01-03")
    assert res.bars["close"].tolist() == [1.0, 3.0, 2.0, 9.0]
    assert "reversed" not in res.notes[0]


def test_nan_cells_pass_through(tmp_path):
    write(
        tmp_path,
        "a.csv",
        "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,2,0.5,,,\n2024-01-03,null,null,null,null,null,null\n2024-01-04,1,2,0.5,1.5,1.5,7\n",
    )
    res = fetch(tmp_path)
    assert res.failures == {}
    b = res.bars
    assert len(b) == 3
    assert b.loc[0, ["close", "volume"]].isna().all()
    assert np.isnan(b.loc[0, "open"])  # no close, no adjustment factor: NaN for the gate, not a guess
    assert b.loc[1, ["open", "high", "low", "close", "volume"]].isna().all()
    assert b.loc[2, "close"] == 1.5


def test_symbol_filter(tmp_path):
    write(tmp_path, "aapl.csv", GOOD)
    write(tmp_path, "msft.csv", GOOD)
    write(tmp_path, "notes.txt", "not data")
    res = fetch(tmp_path, symbols=["msft", "TSLA"])
    assert set(res.bars["symbol"]) == {"MSFT"}
    assert res.failures == {"TSLA": "no file for symbol"}
    res = fetch(tmp_path)
    assert list(dict.fromkeys(res.bars["symbol"])) == ["AAPL", "MSFT"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "aapl.csv",
            "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n\n2024-01-03,1,2,0.5,1.5,10\n2024-13-45,1,2,0.5,1.5,10\n",
            "aapl.csv line 5: cannot parse date '2024-13-45'",
        ),
        (
            "aapl.csv",
            "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n2024-01-03,1,2,abc,1.5,10\n",
            "aapl.csv line 3: non-numeric low 'abc'",
        ),
        (
            "aapl.csv",
            "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n2024-01-03,1,2,0.5,1.5,10,99\n",
            "aapl.csv line 3: ragged row: expected 6 fields, saw 7",
        ),
        (
            "aapl.csv",
            "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n2024-01-03,1,2,0.5\n",
            "aapl.csv line 3: ragged row: expected 6 fields, saw 4",
        ),
        (
            "aapl.csv",
            "Date,Open,High,Low,Volume\n2024-01-02,1,2,0.5,10\n",
            "aapl.csv: no 'close' column (found: Date, Open, High, Low, Volume)",
        ),
        (
            "aapl.csv",
            "Open,High,Low,Close\n1,2,0.5,1.5\n",
            "aapl.csv: no 'date' column (found: Open, High, Low, Close)",
        ),
        (
            "aapl.csv",
            "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n,1,2,0.5,1.5,10\n",
            "aapl.csv line 3: empty date",
        ),
        ("aapl.csv", "", "aapl.csv: empty file"),
        ("aapl.csv", "Date,Open,High,Low,Close,Volume\n", "aapl.csv: no data rows"),
        ("aapl.parquet", "PAR1 this is not parquet", "aapl.parquet: unreadable parquet file"),
    ],
)
def test_malformed_file_reported_with_line_while_others_load(tmp_path, name, text, message):
    write(tmp_path, name, text)
    write(tmp_path, "msft.csv", GOOD)
    res = fetch(tmp_path)
    assert res.failures["AAPL"].startswith(message), res.failures
    assert "\n" not in res.failures["AAPL"]
    assert set(res.bars["symbol"]) == {"MSFT"} and len(res.bars) == 2


def test_parquet_input(tmp_path):
    idx = (
        pd.DatetimeIndex(["2024-03-08 09:30", "2024-03-08 09:35"])
        .tz_localize("America/New_York")
        .rename("Datetime")
    )
    pd.DataFrame(
        {"Open": [1.0, 2.0], "High": [2.0, 3.0], "Low": [0.5, 1.5], "Close": [1.5, 2.5], "Volume": [10, 20]},
        index=idx,
    ).to_parquet(tmp_path / "BRK-B.parquet")
    naive = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-03-08 09:30", "2024-03-08 09:35"]),
            "open": [1.0, 2.0],
            "high": [2.0, 3.0],
            "low": [0.5, 1.5],
            "close": [1.5, 2.5],
            "volume": [1.0, np.nan],
        }
    )
    naive.to_parquet(tmp_path / "naive.parquet", index=False)
    text = pd.DataFrame(
        {
            "Date": ["2024-03-08T14:30:00Z", "2024-03-08T14:35:00Z"],
            "Open": ["1", "x"],
            "High": [2, 3],
            "Low": [0, 1],
            "Close": [1, 2],
            "Volume": [1, 1],
        }
    )
    text.to_parquet(tmp_path / "text.parquet")

    res = fetch(tmp_path, "5m")
    brk = res.bars[res.bars["symbol"] == "BRK-B"]
    assert list(brk["ts"]) == utc("2024-03-08 14:30", "2024-03-08 14:35")
    assert brk["close"].tolist() == [1.5, 2.5] and brk["volume"].tolist() == [10.0, 20.0]
    nv = res.bars[res.bars["symbol"] == "NAIVE"]
    assert list(nv["ts"]) == utc("2024-03-08 14:30", "2024-03-08 14:35")
    assert np.isnan(nv["volume"].iloc[1])
    assert res.failures == {"TEXT": "text.parquet row 2: non-numeric open 'x'"}


def test_start_end_filter_inclusive(tmp_path):
    res = fetch(DATA / "yahoo_daily", start="2004-08-23", end="2004-08-26")
    assert list(res.bars["ts"]) == utc("2004-08-23", "2004-08-24", "2004-08-25", "2004-08-26")
    assert "4 of 19 rows in the window" in res.notes[0]

    write(
        tmp_path,
        "a.csv",
        "timestamp,open,high,low,close,volume\n"
        + "".join(f"2024-03-08T14:{m:02d}:00Z,1,2,0.5,1.5,1\n" for m in range(30, 60, 5)),
    )
    res = fetch(tmp_path, "5m", start="2024-03-08 14:35", end="2024-03-08 14:45")
    assert list(res.bars["ts"]) == utc("2024-03-08 14:35", "2024-03-08 14:40", "2024-03-08 14:45")


def test_semicolon_separated_and_epoch_seconds(tmp_path):
    t0 = int(pd.Timestamp("2024-03-08 14:30", tz="UTC").timestamp())
    write(
        tmp_path, "a.csv", f"time;open;high;low;close;volume\n{t0};1;2;0.5;1.5;1\n{t0 + 300};1;2;0.5;1.5;1\n"
    )
    res = fetch(tmp_path, "5m")
    assert res.failures == {}
    assert list(res.bars["ts"]) == utc("2024-03-08 14:30", "2024-03-08 14:35")


def test_missing_folder_and_bad_interval(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        fetch(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown bar interval"):
        FilesSource(tmp_path, interval="5 minutes")


def test_two_files_for_one_symbol(tmp_path):
    write(tmp_path, "aapl.csv", GOOD)
    pd.read_csv(tmp_path / "aapl.csv").to_parquet(tmp_path / "AAPL.parquet")
    res = fetch(tmp_path)
    assert res.failures == {"AAPL": "more than one file for the symbol: AAPL.parquet, aapl.csv"}


def test_yfinance_to_csv_three_header_lines(tmp_path):
    # yf.download(...).to_csv() with the default multi-level columns.
    write(
        tmp_path,
        "AAPL.csv",
        "Price,Close,High,Low,Open,Volume\nTicker,AAPL,AAPL,AAPL,AAPL,AAPL\nDate,,,,,\n"
        "2024-01-02,184.29,186.86,182.35,185.79,82488700\n2024-01-03,182.91,184.53,182.10,182.88,58414500\n"
        "2024-01-04,180.59,bad,179.86,181.91,71983600\n",
    )
    res = fetch(tmp_path)
    # Line 6 of the file: the three header lines are counted.
    assert res.failures == {"AAPL": "AAPL.csv line 6: non-numeric high 'bad'"}
    (tmp_path / "AAPL.csv").write_text((tmp_path / "AAPL.csv").read_text().replace("bad", "182.76"))
    res = fetch(tmp_path)
    assert res.failures == {}
    assert list(res.bars["ts"]) == utc("2024-01-02", "2024-01-03", "2024-01-04")
    assert res.bars["open"].tolist() == [185.79, 182.88, 181.91]
    assert res.bars["close"].tolist() == [184.29, 182.91, 180.59]


def test_unnamed_datetime_index_and_quoted_cells(tmp_path):
    df = pd.DataFrame(
        {"Open": [1.0, 2.0], "High": [2.0, 3.0], "Low": [0.5, 1.5], "Close": [1.5, 2.5], "Volume": [10, 20]}
    )
    df.index = pd.to_datetime(["2024-01-02", "2024-01-03"])
    df.to_csv(tmp_path / "a.csv")  # header ",Open,High,..." with the dates in the nameless column
    write(
        tmp_path,
        "b.csv",
        '"Date","Open","High","Low","Close","Volume"\n"2024-01-02","1","2","0.5","1.5","10"\n',
    )
    res = fetch(tmp_path)
    assert res.failures == {}
    assert list(res.bars.loc[res.bars["symbol"] == "A", "ts"]) == utc("2024-01-02", "2024-01-03")
    assert res.bars.loc[res.bars["symbol"] == "B", "close"].tolist() == [1.5]


# ------------------------------------------------------------------------- day/month order and symbols


def _dated(folder: Path, name: str, dates: list[str]) -> None:
    write(
        folder, name, "Date,Open,High,Low,Close,Volume\n" + "".join(f"{d},1,2,0.5,1.5,100\n" for d in dates)
    )


def test_day_month_dates_whose_days_are_all_12_or_less_are_refused_not_guessed(tmp_path):
    # 2, 3 and 4 December 2024 written day/month: they also read as 12 February, 12 March, 12 April.
    _dated(tmp_path, "eu.csv", ["02/12/2024", "03/12/2024", "04/12/2024"])
    write(tmp_path, "us.csv", GOOD)
    res = fetch(tmp_path)
    assert set(res.bars["symbol"]) == {"US"}  # the other file still loads
    why = res.failures["EU"]
    assert why.startswith("eu.csv: ambiguous day/month order") and "%d/%m/%Y" in why and "'02/12/2024'" in why


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        (["02/12/2024", "13/12/2024"], ["2024-12-02", "2024-12-13"]),  # a first number above 12: day/month
        (["12/02/2024", "12/13/2024"], ["2024-12-02", "2024-12-13"]),  # a second number above 12: month/day
        (["31.12.1999", "03.01.2000"], ["1999-12-31", "2000-01-03"]),  # dotted, day/month
        (["31-12-1999", "03-01-2000"], ["1999-12-31", "2000-01-03"]),  # dashed, day/month
    ],
)
def test_day_month_order_is_read_from_the_file(tmp_path, dates, expected):
    _dated(tmp_path, "a.csv", dates)
    res = fetch(tmp_path)
    assert res.failures == {}
    assert list(res.bars["ts"]) == utc(*expected)
    assert "dates (a " in res.notes[0]  # the note says how the order was decided


def test_a_configured_date_format_settles_the_order_for_every_file_or_one(tmp_path):
    _dated(tmp_path, "eu.csv", ["02/12/2024", "03/12/2024"])
    _dated(tmp_path, "us.csv", ["12/02/2024", "12/03/2024"])
    _dated(tmp_path, "iso.csv", ["2024-12-02", "2024-12-03"])  # unambiguous: read as before
    res = fetch(tmp_path, date_format="%d/%m/%Y", date_formats={"us.csv": "%m/%d/%Y"})
    assert res.failures == {}
    for sym in ("EU", "US", "ISO"):
        assert list(res.bars.loc[res.bars["symbol"] == sym, "ts"]) == utc("2024-12-02", "2024-12-03"), sym
    assert any("dates read as %d/%m/%Y (configured)" in n for n in res.notes)


def test_a_date_that_does_not_fit_the_configured_format_names_its_line(tmp_path):
    _dated(tmp_path, "eu.csv", ["02/12/2024", "2024-12-03"])
    res = fetch(tmp_path, date_format="%d/%m/%Y")
    assert res.failures == {"EU": "eu.csv line 3: date '2024-12-03' does not match the format '%d/%m/%Y'"}


@pytest.mark.parametrize(
    "name", ["A B.csv", "'X'.csv", 'Q"Q.csv', "ABCDEFGHIJKLMNOPQRSTUVWXYZ.csv", "-X.csv"]
)
def test_a_file_name_that_is_not_a_ticker_fails_that_file_only(tmp_path, name):
    write(tmp_path, name, GOOD)
    write(tmp_path, "ok.csv", GOOD)
    res = fetch(tmp_path)
    assert set(res.bars["symbol"]) == {"OK"}
    (why,) = res.failures.values()
    assert list(res.failures) == [name] and why.startswith(f"{name}: the file name is the symbol")
