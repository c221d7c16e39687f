"""validate_bars: quarantine rules, gap repair, calendars, vendor mismatch, outliers, invariants."""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pydantic
import pytest

from clm.data.schema import (
    CANDLE_SCHEMA,
    GAP_SCHEMA,
    MISMATCH_SCHEMA,
    QUARANTINE_SCHEMA,
    RAW_BAR_SCHEMA,
)
from clm.data.schemas import validate_candles
from clm.data import validation
from clm.data.validation import ValidationConfig, validate_bars

UTC = UTC
T0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
FIVE_MIN = timedelta(minutes=5)
DATA = Path(__file__).resolve().parents[1] / "data"
VALUES = ("open", "high", "low", "close", "volume")


def ts(i: int, start: datetime = T0, step: timedelta = FIVE_MIN) -> datetime:
    return start + i * step


def raw_frame(rows: list[tuple]) -> pl.DataFrame:
    """rows: (source_file, symbol, timestamp, open, high, low, close, volume[, spread_bps]).

    ``source_row`` is 1-based in the order the rows of each file appear in ``rows``.
    """
    counters: dict[str, int] = {}
    data: dict[str, list] = {c: [] for c in RAW_BAR_SCHEMA}
    for row in rows:
        source_file, symbol, t, o, h, low, c, v, *rest = row
        counters[source_file] = counters.get(source_file, 0) + 1
        data["source_file"].append(source_file)
        data["source_row"].append(counters[source_file])
        data["symbol"].append(symbol)
        data["timestamp"].append(t)
        for name, value in zip(VALUES, (o, h, low, c, v), strict=True):
            data[name].append(float(value))
        data["spread_bps"].append(rest[0] if rest else None)
    return pl.DataFrame(data, schema=RAW_BAR_SCHEMA)


def flat_rows(
    n: int,
    *,
    symbol: str = "AAA",
    source: str = "a.csv",
    price: float = 100.0,
    skip=(),
    start: datetime = T0,
    step: timedelta = FIVE_MIN,
) -> list[tuple]:
    """n consistent bars near ``price`` (seeded noise), skipping indices in ``skip``."""
    noise = np.random.default_rng(n).normal(0.0, 1e-3, n)
    out = []
    for i in range(n):
        if i in skip:
            continue
        c = price * (1 + float(noise[i]))
        out.append(
            (
                source,
                symbol,
                ts(i, start, step),
                price,
                max(price, c) * 1.001,
                min(price, c) * 0.999,
                c,
                10.0 + i,
                2.0,
            )
        )
    return out


def random_walk(
    n: int,
    *,
    symbol: str = "RW",
    source: str = "rw.csv",
    seed: int = 7,
    sigma: float = 1e-3,
    start: datetime = T0,
    step: timedelta = FIVE_MIN,
    jumps: dict[int, float] | None = None,
) -> pl.DataFrame:
    """Consistent OHLC from a log random walk; ``jumps`` adds a level shift of size x at bar i."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, sigma, n)
    for i, x in (jumps or {}).items():
        r[i] += x
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, sigma / 4, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, sigma / 4, n)))
    return pl.DataFrame(
        {
            "source_file": [source] * n,
            "source_row": np.arange(1, n + 1),
            "symbol": [symbol] * n,
            "timestamp": [start + i * step for i in range(n)],
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.exponential(5.0, n),
            "spread_bps": rng.uniform(1, 3, n),
        },
        schema=RAW_BAR_SCHEMA,
    )


def q_rows(result) -> list[tuple]:
    return result.quarantine.select("source_file", "row", "field", "value", "reason").rows()


def check_invariants(result) -> None:
    assert result.rows_in == result.rows_kept + result.rows_quarantined
    assert result.candles.height == result.rows_kept + result.filled_bars
    assert result.candles.schema == pl.Schema(CANDLE_SCHEMA)
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert result.gaps.schema == pl.Schema(GAP_SCHEMA)
    assert result.mismatches.schema == pl.Schema(MISMATCH_SCHEMA)
    assert result.candles.equals(result.candles.sort("symbol", "timestamp"))
    assert result.candles.select(pl.struct("symbol", "timestamp").is_unique().all()).item()
    assert validate_candles(result.candles) is None


# --------------------------------------------------------------------------------------- config


def test_config_defaults_and_errors():
    cfg = ValidationConfig()
    assert (cfg.max_fill_bars, cfg.timeframe_seconds, cfg.outlier_window) == (3, None, 288)
    assert (cfg.outlier_z, cfg.mismatch_tolerance_bps, cfg.calendars) == (10.0, 5.0, {})
    for bad in (
        {"max_fill_bars": -1},
        {"max_fill_bars": 1001},
        {"outlier_window": 19},
        {"outlier_z": 0},
        {"timeframe_seconds": 0},
        {"mismatch_tolerance_bps": -1},
        {"calendars": {"X": "sometimes"}},
        {"max_fil_bars": 3},  # typo: extra fields are rejected
    ):
        with pytest.raises(pydantic.ValidationError) as err:
            ValidationConfig(**bad)
        assert next(iter(bad)) in str(err.value)


# ------------------------------------------------------------------------------------- row rules


def test_clean_series_passes_untouched():
    raw = raw_frame(flat_rows(30))
    res = validate_bars(raw)
    check_invariants(res)
    assert res.rows_quarantined == 0 and res.filled_bars == 0 and res.gaps.height == 0
    c = res.candles
    assert c.height == 30
    assert c["close"].to_list() == raw["close"].to_list()
    assert c["quote_volume"].to_list() == (raw["close"] * raw["volume"]).to_list()
    assert set(c["source"]) == {"a.csv"} and set(c["segment_id"]) == {0}
    assert not c["is_filled"].any() and not c["is_outlier"].any()
    # 30 bars on one day: too little history to infer sessions, so 24/7 (gaps get reported)
    assert res.calendars.rows() == [("AAA", "24/7", 300)]


def test_price_volume_and_high_low_rules():
    rows = flat_rows(20)  # enough clean bars for the timeframe to be detected
    t = [r[2] for r in rows]
    rows[1] = ("a.csv", "AAA", t[1], 0.0, 101.0, 99.0, 100.0, 1.0)  # open <= 0
    rows[2] = ("a.csv", "AAA", t[2], 100.0, 101.0, -5.0, 100.0, 1.0)  # low <= 0
    rows[3] = ("a.csv", "AAA", t[3], 100.0, 101.0, 99.0, 100.0, -2.0)  # negative volume
    rows[4] = ("a.csv", "AAA", t[4], 100.0, 100.5, 99.0, 101.0, 1.0)  # high < close
    rows[5] = ("a.csv", "AAA", t[5], 100.0, 102.0, 100.5, 101.0, 1.0)  # low > open
    rows[6] = ("a.csv", "AAA", t[6], -1.0, -1.0, -3.0, 100.0, -1.0)  # several: price first
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert q_rows(res) == [
        ("a.csv", 2, "open", "0.0", "non_positive_price"),
        ("a.csv", 3, "low", "-5.0", "non_positive_price"),
        ("a.csv", 4, "volume", "-2.0", "negative_volume"),
        ("a.csv", 5, "high", "100.5", "high_low_inconsistent"),
        ("a.csv", 6, "low", "100.5", "high_low_inconsistent"),
        ("a.csv", 7, "open", "-1.0", "non_positive_price"),
    ]
    assert res.quarantine["symbol"].to_list() == ["AAA"] * 6
    assert res.quarantine["timestamp"].to_list() == t[1:7]
    assert res.rows_kept == 14


def test_out_of_order_and_duplicate_timestamp():
    rows = flat_rows(6)
    t = [r[2] for r in rows]
    o = rows
    raw_rows = [o[0], o[1], o[2], o[1], o[2], o[3], o[3], o[4], o[5]]
    res = validate_bars(raw_frame(raw_rows))
    check_invariants(res)
    iso = [x.strftime("%Y-%m-%dT%H:%M:%SZ") for x in t]
    assert q_rows(res) == [
        ("a.csv", 4, "timestamp", iso[1], "out_of_order"),
        ("a.csv", 5, "timestamp", iso[2], "duplicate_timestamp"),
        ("a.csv", 7, "timestamp", iso[3], "duplicate_timestamp"),
    ]
    assert res.candles["timestamp"].to_list() == t
    assert res.gaps.height == 0


def test_ordering_is_per_symbol_and_file():
    # a long-format file with two symbols interleaved: each symbol is ordered on its own
    a, b = flat_rows(4, symbol="AAA"), flat_rows(4, symbol="BBB")
    rows = [a[0], b[2], a[1], b[3], a[2], b[0], a[3]]  # b[0] comes after b[3] -> out of order
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert [(r[1], r[4]) for r in q_rows(res)] == [(6, "out_of_order")]
    assert res.quarantine["symbol"].to_list() == ["BBB"]


def test_misaligned_timestamp():
    rows = flat_rows(30)
    bad_t = ts(10) + timedelta(seconds=150)
    rows.insert(11, ("a.csv", "AAA", bad_t, 100.0, 101.0, 99.0, 100.0, 1.0))
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert q_rows(res) == [
        ("a.csv", 12, "timestamp", "2024-01-01T00:52:30Z", "misaligned_timestamp")
    ]
    assert res.calendars["timeframe_seconds"].to_list() == [300]
    assert res.gaps.height == 0 and res.candles.height == 30


def test_timeframe_from_config_overrides_detection():
    rows = flat_rows(12, step=timedelta(minutes=1))  # 1-minute bars ...
    res = validate_bars(raw_frame(rows), ValidationConfig(timeframe_seconds=300))
    check_invariants(res)
    # ... with a 5-minute timeframe: only the bars on the 5-minute grid survive
    assert res.candles.height == 3
    assert {r[4] for r in q_rows(res)} == {"misaligned_timestamp"}
    assert res.calendars["timeframe_seconds"].to_list() == [300]


# ------------------------------------------------------------------------------ cross-vendor rows


def test_duplicate_from_other_source_and_mismatch_tolerance():
    b = flat_rows(7, source="b_vendor.csv")
    a = [("a_vendor.csv", *r[1:]) for r in b[:6]]  # the same bars, one fewer
    close3 = b[3][6]
    b[3] = (*b[3][:6], close3 * (1 + 10e-4), *b[3][7:])  # close 10 bps higher: reported
    b[4] = (*b[4][:6], b[4][6] * (1 + 2e-4), *b[4][7:])  # 2 bps: within tolerance
    b[5] = (*b[5][:7], b[5][7] * 2)  # volume doubled: reported
    rows = b + a  # the later file first: the winner is picked by sorted file name, not order
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    q = res.quarantine
    assert set(q["reason"]) == {"duplicate_from_other_source"}
    assert q["source_file"].unique().to_list() == ["b_vendor.csv"]
    assert q["row"].to_list() == [1, 2, 3, 4, 5, 6]
    assert res.candles["source"].to_list() == ["a_vendor.csv"] * 6 + ["b_vendor.csv"]
    mm = res.mismatches
    assert mm.select("timestamp", "field", "kept_source", "other_source").rows() == [
        (ts(3), "close", "a_vendor.csv", "b_vendor.csv"),
        (ts(5), "volume", "a_vendor.csv", "b_vendor.csv"),
    ]
    assert mm["diff_bps"][0] == pytest.approx(10.0, rel=1e-6)
    assert mm["diff_bps"][1] == pytest.approx(1e4)
    assert mm["kept_value"][0] == pytest.approx(close3)
    # a looser tolerance drops the close mismatch, a tighter one adds the 2 bps one
    loose = validate_bars(raw_frame(rows), ValidationConfig(mismatch_tolerance_bps=20))
    assert loose.mismatches["field"].to_list() == ["volume"]
    tight = validate_bars(raw_frame(rows), ValidationConfig(mismatch_tolerance_bps=1))
    assert tight.mismatches["field"].to_list() == ["close", "close", "volume"]


def test_mismatches_on_the_first_rows_and_with_three_vendors():
    # the first bar of the frame duplicated by two later vendors: both compared with a.csv's
    a = flat_rows(5, source="a.csv")
    b = [("b.csv", *r[1:]) for r in a]
    c = [("c.csv", *r[1:]) for r in a[:2]]
    b[0] = (*b[0][:7], b[0][7] * 3)  # volume tripled
    c[0] = (*c[0][:7], c[0][7] * 2)  # volume doubled
    res = validate_bars(raw_frame(c + b + a))
    check_invariants(res)
    assert res.mismatches.select("timestamp", "field", "kept_source", "other_source").rows() == [
        (ts(0), "volume", "a.csv", "b.csv"),
        (ts(0), "volume", "a.csv", "c.csv"),
    ]
    assert res.mismatches["kept_value"].to_list() == [a[0][7], a[0][7]]
    assert res.mismatches["other_value"].to_list() == [a[0][7] * 3, a[0][7] * 2]
    assert res.quarantine["reason"].to_list() == ["duplicate_from_other_source"] * 7


# ------------------------------------------------------------------------------------------ gaps


def test_fill_one_and_three_bar_gaps():
    rows = flat_rows(20, skip={5, 10, 11, 12})
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert res.filled_bars == 4 and res.candles.height == 20
    assert res.gaps.rows() == [
        ("AAA", ts(4), ts(6), 1, "filled"),
        ("AAA", ts(9), ts(13), 3, "filled"),
    ]
    c = res.candles
    assert c["timestamp"].to_list() == [ts(i) for i in range(20)]
    filled = c.filter("is_filled")
    assert filled["timestamp"].to_list() == [ts(5), ts(10), ts(11), ts(12)]
    prev_close = {5: rows[4][6], 10: rows[8][6]}
    for row in filled.iter_rows(named=True):
        expect = prev_close[5] if row["timestamp"] == ts(5) else prev_close[10]
        assert row["open"] == row["high"] == row["low"] == row["close"] == expect
        assert row["volume"] == 0.0 and row["quote_volume"] == 0.0
        assert row["spread_bps"] == 2.0 and row["source"] == "a.csv"
        assert row["is_outlier"] is False and row["outlier_z"] is None
    assert set(c["segment_id"]) == {0}


def test_four_bar_gap_breaks_segment():
    rows = flat_rows(20, skip={5, 6, 7, 8})
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert res.filled_bars == 0
    assert res.gaps.rows() == [("AAA", ts(4), ts(9), 4, "segment_break")]
    seg = res.candles["segment_id"].to_list()
    assert seg == [0] * 5 + [1] * 11
    # with a larger fill budget the same gap is filled instead
    res = validate_bars(raw_frame(rows), ValidationConfig(max_fill_bars=4))
    assert res.filled_bars == 4 and set(res.candles["segment_id"]) == {0}
    # and with no fill budget even one missing bar is a break
    res = validate_bars(raw_frame(flat_rows(10, skip={3})), ValidationConfig(max_fill_bars=0))
    assert res.gaps["action"].to_list() == ["segment_break"] and res.filled_bars == 0


def test_segment_ids_count_per_symbol():
    rows = flat_rows(30, symbol="AAA", skip={5, 6, 7, 8, 20, 21, 22, 23, 24}) + flat_rows(
        30, symbol="BBB", source="b.csv", skip={10, 11, 12, 13, 14}
    )
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    segs = res.candles.group_by("symbol").agg(pl.col("segment_id").max()).sort("symbol")
    assert segs.rows() == [("AAA", 2), ("BBB", 1)]


# slot grid anchoring: timeframes that do not divide the 4 days from the epoch to Monday 0


def filled_at(res) -> list[datetime]:
    return res.candles.filter("is_filled")["timestamp"].to_list()


@pytest.mark.parametrize("n", [30, 2000])  # one day and ~9.7 days
def test_seven_minute_bars_fill_on_their_grid(n):
    step = timedelta(minutes=7)
    start = datetime.fromtimestamp(int(T0.timestamp()) // 420 * 420, UTC)  # on the epoch grid
    rows = flat_rows(n, start=start, step=step, skip={20})
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert res.rows_quarantined == 0
    assert res.calendars.rows() == [("AAA", "24/7", 420)]
    expected = start + 20 * step
    assert res.gaps.rows() == [("AAA", expected - step, expected + step, 1, "filled")]
    assert filled_at(res) == [expected]
    assert res.candles["timestamp"].to_list() == [start + i * step for i in range(n)]


def test_seven_minute_weekday_calendar():
    # Mon-Fri 7-minute bars: the grid point before Monday 0 is Sunday 23:54, outside the week
    step = timedelta(minutes=7)
    start = datetime.fromtimestamp(int(T0.timestamp()) // 420 * 420, UTC)
    grid = [start + i * step for i in range(2 * 1440 + 10)]
    friday_last = max(t for t in grid if t.weekday() == 4 and t.day == 5)
    rows = [
        ("w.csv", "W", t, 10.0, 10.01, 9.99, 10.0, 1.0)
        for t in grid
        if t.weekday() < 5 and t != friday_last
    ]
    for calendars in ({}, {"W": "weekdays"}):
        res = validate_bars(raw_frame(rows), ValidationConfig(calendars=calendars))
        check_invariants(res)
        assert res.calendars.rows() == [("W", "sessions", 420)]
        assert res.gaps.select("gap_start", "missing_bars", "action").rows() == [
            (friday_last - step, 1, "filled")
        ]
        assert filled_at(res) == [friday_last]


def test_three_day_bars_fill_on_their_grid():
    step = timedelta(days=3)
    start = datetime(2023, 12, 31, tzinfo=UTC)  # epoch day 19722, a multiple of 3
    res = validate_bars(raw_frame(flat_rows(30, start=start, step=step, skip={10, 11})))
    check_invariants(res)
    assert res.rows_quarantined == 0
    assert res.calendars.rows() == [("AAA", "24/7", 3 * 86_400)]
    assert res.gaps.select("missing_bars", "action").rows() == [(2, "filled")]
    assert filled_at(res) == [start + 10 * step, start + 11 * step]


def test_weekly_bars_on_the_epoch_grid_fill_on_thursdays():
    step = timedelta(weeks=1)
    start = datetime(2024, 1, 4, tzinfo=UTC)  # a Thursday, like the epoch
    res = validate_bars(raw_frame(flat_rows(30, start=start, step=step, skip={20})))
    check_invariants(res)
    assert res.rows_quarantined == 0
    assert filled_at(res) == [datetime(2024, 5, 23, tzinfo=UTC)]


def test_monday_open_weekly_bars_are_aligned_and_fill_on_mondays():
    # Binance weekly klines open on Mondays: a constant phase of 4 days against the epoch grid
    step = timedelta(weeks=1)
    rows = flat_rows(30, start=T0, step=step, skip={20})
    tuesday = T0 + 25 * step + timedelta(days=1)
    at = [r[2] for r in rows].index(T0 + 25 * step) + 1
    rows.insert(at, ("a.csv", "AAA", tuesday, 100.0, 101.0, 99.0, 100.0, 1.0))
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    # only the Tuesday bar is off the Monday grid
    assert q_rows(res) == [
        ("a.csv", at + 1, "timestamp", tuesday.strftime("%Y-%m-%dT%H:%M:%SZ"), "misaligned_timestamp")
    ]
    assert res.calendars["timeframe_seconds"].to_list() == [7 * 86_400]
    missing = datetime(2024, 5, 20, tzinfo=UTC)  # T0 + 20 weeks, a Monday
    assert res.gaps.rows() == [("AAA", missing - step, missing + step, 1, "filled")]
    assert filled_at(res) == [missing] and missing.weekday() == 0
    assert {t.weekday() for t in res.candles["timestamp"]} == {0}


def test_five_minute_grid_unchanged():
    # 9 days of 5-minute bars (24/7): fills and misalignment as before the anchoring change
    n = 9 * 288
    rows = flat_rows(n, skip={100, 2000, 2001})
    bad_t = ts(500) + timedelta(seconds=150)
    at = [r[2] for r in rows].index(ts(500)) + 1
    rows.insert(at, ("a.csv", "AAA", bad_t, 100.0, 101.0, 99.0, 100.0, 1.0))
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert res.calendars.rows() == [("AAA", "24/7", 300)]
    assert [r[4] for r in q_rows(res)] == ["misaligned_timestamp"]
    assert res.gaps.rows() == [
        ("AAA", ts(99), ts(101), 1, "filled"),
        ("AAA", ts(1999), ts(2002), 2, "filled"),
    ]
    assert filled_at(res) == [ts(100), ts(2000), ts(2001)]


def test_constant_phase_is_aligned():
    # a whole series shifted by one minute has a constant phase: aligned, filled on its own grid
    shift = timedelta(minutes=1)
    res = validate_bars(raw_frame(flat_rows(40, start=T0 + shift, skip={10})))
    check_invariants(res)
    assert res.rows_quarantined == 0
    assert filled_at(res) == [ts(10) + shift]


def weekday_bars(weeks: int, day_hours: tuple[int, int] | None = None, skip=()) -> list[tuple]:
    """5-minute bars Mon-Fri (all day, or between day_hours UTC) for ``weeks`` weeks."""
    rows, i = [], 0
    t = T0
    end = T0 + timedelta(weeks=weeks)
    while t < end:
        open_hours = day_hours is None or day_hours[0] <= t.hour < day_hours[1]
        if t.weekday() < 5 and open_hours:
            if t not in skip:
                p = 50.0 + (i % 5) * 0.01
                rows.append(("eq.csv", "EQ", t, p, p * 1.001, p * 0.999, p, 3.0))
            i += 1
        t += FIVE_MIN
    return rows


def test_weekend_closed_series_has_no_weekend_gaps():
    rows = weekday_bars(3)
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert res.calendars.rows() == [("EQ", "sessions", 300)]
    assert res.gaps.height == 0 and res.filled_bars == 0
    assert set(res.candles["segment_id"]) == {0}
    # a missing bar just before the weekend is one missing bar, not a weekend-long gap
    friday_last = datetime(2024, 1, 12, 23, 55, tzinfo=UTC)
    res = validate_bars(raw_frame(weekday_bars(3, skip={friday_last})))
    assert res.gaps.rows() == [
        ("EQ", friday_last - FIVE_MIN, datetime(2024, 1, 15, tzinfo=UTC), 1, "filled")
    ]
    assert res.candles.filter("is_filled")["timestamp"].to_list() == [friday_last]
    # a 24/7 override turns every weekend into a segment break
    res = validate_bars(raw_frame(rows), ValidationConfig(calendars={"EQ": "24/7"}))
    assert res.calendars["calendar"].to_list() == ["24/7"]
    assert res.gaps["action"].to_list() == ["segment_break"] * 2
    assert res.gaps["missing_bars"].to_list() == [576, 576]


def test_equity_like_series_has_no_overnight_gaps():
    rows = weekday_bars(3, day_hours=(14, 21))
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert res.calendars["calendar"].to_list() == ["sessions"]
    assert res.gaps.height == 0
    # in-session holes are still gaps: 2 missing mid-session, 5 missing spanning the close
    mid = {datetime(2024, 1, 10, 15, 0, tzinfo=UTC), datetime(2024, 1, 10, 15, 5, tzinfo=UTC)}
    close = {datetime(2024, 1, 16, 20, 35, tzinfo=UTC) + i * FIVE_MIN for i in range(5)}
    res = validate_bars(raw_frame(weekday_bars(3, day_hours=(14, 21), skip=mid | close)))
    check_invariants(res)
    assert res.gaps.select("missing_bars", "action").rows() == [(2, "filled"), (5, "segment_break")]
    assert res.gaps["gap_end"][1] == datetime(2024, 1, 17, 14, 0, tzinfo=UTC)
    assert sorted(res.candles.filter("is_filled")["timestamp"].to_list()) == sorted(mid)


def test_fx_week_sunday_open_to_friday_close_has_no_weekend_gaps():
    # FX trades from Sunday 22:00 to Friday 22:00 UTC: six weekdays, so not 24/7
    rows, t = [], datetime(2024, 1, 7, 22, 0, tzinfo=UTC)
    while t < datetime(2024, 1, 26, 22, 0, tzinfo=UTC):
        closed = (
            (t.weekday() == 4 and t.hour >= 22)
            or t.weekday() == 5
            or (t.weekday() == 6 and t.hour < 22)
        )
        if not closed and t != datetime(2024, 1, 17, 3, 0, tzinfo=UTC):
            rows.append(("fx.csv", "EURUSD", t, 1.1, 1.1001, 1.0999, 1.1, 0.0))
        t += FIVE_MIN
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert res.calendars["calendar"].to_list() == ["sessions"]
    assert res.gaps.select("gap_start", "missing_bars", "action").rows() == [
        (datetime(2024, 1, 17, 2, 55, tzinfo=UTC), 1, "filled")
    ]


def test_short_history_is_24_7_so_a_missing_day_is_reported_not_hidden():
    # Monday and Wednesday of a crypto pair: Tuesday is missing, not a closed session
    monday = flat_rows(288)
    wednesday = flat_rows(288, start=T0 + timedelta(days=2))
    res = validate_bars(raw_frame(monday + wednesday))
    check_invariants(res)
    assert res.calendars["calendar"].to_list() == ["24/7"]
    assert res.gaps.select("missing_bars", "action").rows() == [(288, "segment_break")]


def test_weekdays_calendar_override():
    # Mon-Fri 14-21h data declared "weekdays": the nights become in-calendar gaps
    rows = weekday_bars(1, day_hours=(14, 21))
    res = validate_bars(raw_frame(rows), ValidationConfig(calendars={"EQ": "weekdays"}))
    check_invariants(res)
    assert res.calendars["calendar"].to_list() == ["sessions"]
    assert res.gaps["action"].to_list() == ["segment_break"] * 4  # 4 nights, no weekend
    assert res.gaps["missing_bars"].to_list() == [204] * 4  # 17 h of 5-minute bars


# -------------------------------------------------------------------------------------- outliers


def test_outlier_flagged_on_planted_jump_only():
    raw = random_walk(1200, jumps={700: 20 * 1e-3})
    res = validate_bars(raw)
    check_invariants(res)
    c = res.candles
    flagged = c.filter("is_outlier")
    assert flagged["timestamp"].to_list() == [ts(700)]
    assert flagged["outlier_z"][0] == pytest.approx(20, rel=0.25)
    z = c["outlier_z"].drop_nulls()
    assert z.len() == 1200 - 21  # first return at bar 1, scored from the 20th return on
    assert (z.abs() < 10).sum() == z.len() - 1
    assert c["outlier_z"][:21].null_count() == 21


def test_outlier_z_has_no_look_ahead():
    raw = random_walk(1500, jumps={900: 0.05, 1300: -0.04})
    full = validate_bars(raw).candles
    for cut in (400, 901, 1100):
        prefix = validate_bars(raw.head(cut)).candles
        assert prefix["outlier_z"].equals(full["outlier_z"].head(cut))
        assert prefix["is_outlier"].equals(full["is_outlier"].head(cut))


def test_filled_bars_are_never_outliers_and_segments_restart_returns():
    raw = random_walk(400)
    keep = ~pl.int_range(400, eager=True).is_in([100, 250, 251, 252, 253, 254])
    raw = raw.filter(keep)
    # make the first bar after the segment break a huge move: it has no return, so no z
    raw = raw.with_columns(
        pl.when(pl.col("timestamp") >= ts(255)).then(pl.col(c) * 3).otherwise(pl.col(c))
        for c in ("open", "high", "low", "close")
    )
    res = validate_bars(raw)
    check_invariants(res)
    c = res.candles
    assert res.gaps["action"].to_list() == ["filled", "segment_break"]
    assert c.filter("is_filled")["outlier_z"].null_count() == 1
    first_of_segment = c.filter(pl.col("timestamp") == ts(255))
    assert first_of_segment["segment_id"].item() == 1
    assert first_of_segment["outlier_z"].item() is None
    assert not c["is_outlier"].any()


def test_flat_series_uses_mean_deviation_fallback():
    # a mostly unchanged price (MAD = 0, common for illiquid pairs) still gets a z for a jump
    closes = [1.0] * 200
    for i in range(0, 200, 9):
        closes[i] = 1.001
    closes[150:] = [1.05] * 50
    rows = [("f.csv", "FLAT", ts(i), c, c, c, c, 1.0) for i, c in enumerate(closes)]
    res = validate_bars(raw_frame(rows))
    z = res.candles["outlier_z"]
    assert res.candles.filter("is_outlier")["timestamp"].to_list() == [ts(150)]
    assert math.isfinite(z[150]) and z[150] > 10


def reference_outlier_z(candles: pl.DataFrame, window: int) -> pl.Series:
    """outlier_z recomputed from the candles the plain way (``.over`` per symbol, real bars only,
    a return within a segment), to check the sliced, chunked computation bit for bit."""
    real = candles.with_row_index("_pos").filter(~pl.col("is_filled"))
    same = (pl.col("symbol") == pl.col("symbol").shift(1)) & (
        pl.col("segment_id") == pl.col("segment_id").shift(1)
    )
    r = (
        real.select(
            "_pos", "symbol", pl.when(same).then((pl.col("close") / pl.col("close").shift(1)).log())
        )
        .rename({"close": "r"})
        .filter(pl.col("r").is_not_null())
        .with_columns(pl.col("r").rolling_median(window, min_samples=1).over("symbol").alias("m"))
        .with_columns((pl.col("r") - pl.col("m")).abs().alias("dev"))
        .with_columns(
            pl.col("dev").rolling_median(window, min_samples=1).over("symbol").alias("mad"),
            pl.col("dev").rolling_mean(window, min_samples=1).over("symbol").alias("mean_ad"),
            pl.int_range(pl.len()).over("symbol").alias("n"),
        )
    )
    scale = (
        pl.when(pl.col("mad") > 0)
        .then(pl.col("mad") * 1.4826)
        .when(pl.col("mean_ad") > 0)
        .then(pl.col("mean_ad") * 1.2533)
    )
    z = r.select(
        "_pos",
        pl.when(pl.col("n") >= 20)
        .then((pl.col("r") - pl.col("m").shift(1).over("symbol")) / scale.shift(1).over("symbol"))
        .alias("z"),
    )
    out = pl.Series("outlier_z", [None] * candles.height, dtype=pl.Float64)
    return out.scatter(z["_pos"], z["z"])


@pytest.mark.parametrize("window", [20, 288])
def test_outlier_z_matches_plain_per_symbol_computation(window, monkeypatch):
    # several symbols of different lengths, dropped bars (fills and segment breaks), a tick-bound
    # stretch (MAD 0), a symbol shorter than the window and a single bar; 4 rolling slices
    monkeypatch.setattr(pl, "thread_pool_size", lambda: 4)
    parts = [
        random_walk(3000, symbol="AAA", seed=1).filter(
            ~pl.int_range(3000).is_in([100, 700, 701, 1500, 1501, 1502, 1503, 1504, 2999])
        ),
        random_walk(900, symbol="BBB", seed=2, jumps={400: 0.05}).with_columns(
            pl.col("open", "high", "low", "close").round(1)  # tick-bound: mostly unchanged
        ),
        random_walk(15, symbol="CCC", seed=3),
        random_walk(1, symbol="DDD", seed=4),
    ]
    raw = pl.concat(parts).with_columns(
        pl.max_horizontal("open", "high", "close").alias("high"),
        pl.min_horizontal("open", "low", "close").alias("low"),
    )
    res = validate_bars(raw, ValidationConfig(outlier_window=window))
    check_invariants(res)
    assert res.filled_bars > 0 and "segment_break" in res.gaps["action"].to_list()
    assert res.candles["outlier_z"].equals(reference_outlier_z(res.candles, window))


def test_file_order_without_the_packed_key(monkeypatch):
    # the running maximum per file falls back to ``.over`` when the packed key could overflow
    expected = validate_bars(messy_frame())
    monkeypatch.setattr(validation, "PACKED_KEY_LIMIT", 0)
    res = validate_bars(messy_frame())
    for name in ("candles", "quarantine", "gaps", "mismatches", "calendars"):
        assert getattr(res, name).equals(getattr(expected, name)), name


def test_timeframe_per_symbol_and_first_spacing_not_the_mode():
    # AAA 5-minute bars, BBB hourly bars (8+ days: 24/7), CCC 5-minute bars whose first spacing
    # (bar 1 is missing) is not the most common one
    hour = timedelta(hours=1)
    rows = (
        flat_rows(30, symbol="AAA", skip={7})
        + flat_rows(200, symbol="BBB", source="b.csv", step=hour, skip={50})
        + flat_rows(30, symbol="CCC", source="c.csv", skip={1})
    )
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert res.calendars.rows() == [
        ("AAA", "24/7", 300),
        ("BBB", "24/7", 3600),
        ("CCC", "24/7", 300),
    ]
    assert res.gaps.select("symbol", "missing_bars", "action").rows() == [
        ("AAA", 1, "filled"),
        ("BBB", 1, "filled"),
        ("CCC", 1, "filled"),
    ]
    assert filled_at(res) == [ts(7), ts(50, step=hour), ts(1)]


def test_misaligned_rows_from_two_vendors_are_misaligned_not_duplicates():
    a = flat_rows(20, source="a.csv")
    b = [("b.csv", *r[1:]) for r in a]
    off = ("AAA", ts(10) + timedelta(seconds=30), 100.0, 101.0, 99.0, 100.0, 1.0)
    a.insert(11, ("a.csv", *off))
    b.insert(11, ("b.csv", *off))
    res = validate_bars(raw_frame(a + b))
    check_invariants(res)
    reasons = res.quarantine.group_by("reason").len().sort("reason").rows()
    assert reasons == [("duplicate_from_other_source", 20), ("misaligned_timestamp", 2)]
    assert res.candles.height == 20 and set(res.candles["source"]) == {"a.csv"}


# -------------------------------------------------------------------- invariants and determinism


def messy_frame() -> pl.DataFrame:
    rows = flat_rows(40, symbol="AAA", source="a.csv", skip={7, 20, 21, 22, 23, 24})
    rows[3] = (*rows[3][:3], -1.0, *rows[3][4:])
    rows.insert(10, rows[9])  # duplicate
    rows.insert(12, rows[2])  # out of order
    rows += flat_rows(40, symbol="AAA", source="b.csv", skip={1, 2})
    rows += flat_rows(30, symbol="BBB", source="b.csv", skip={15})
    rows += weekday_bars(3, day_hours=(14, 21), skip={datetime(2024, 1, 3, 15, tzinfo=UTC)})
    return raw_frame(rows)


def test_invariant_on_messy_input():
    res = validate_bars(messy_frame())
    check_invariants(res)
    assert res.rows_quarantined > 0 and res.filled_bars > 0
    reasons = set(res.quarantine["reason"])
    assert reasons == {
        "non_positive_price",
        "duplicate_timestamp",
        "out_of_order",
        "duplicate_from_other_source",
    }
    # b.csv fills a.csv's holes at bars 7 and 20-24, so AAA has no gaps left
    assert res.gaps["symbol"].to_list() == ["BBB", "EQ"]


def test_deterministic_and_independent_of_row_order():
    raw = messy_frame()
    first = validate_bars(raw)
    second = validate_bars(raw.sample(fraction=1.0, shuffle=True, seed=3))
    for name in ("candles", "quarantine", "gaps", "mismatches", "calendars"):
        assert getattr(first, name).equals(getattr(second, name)), name
    assert (first.rows_in, first.rows_kept, first.filled_bars) == (
        second.rows_in,
        second.rows_kept,
        second.filled_bars,
    )


def test_empty_input():
    res = validate_bars(pl.DataFrame(schema=RAW_BAR_SCHEMA))
    check_invariants(res)
    assert res.candles.height == 0 and res.calendars.height == 0


def test_everything_quarantined_and_single_bar_symbols():
    rows = [("a.csv", "AAA", T0, -1.0, 1.0, 1.0, 1.0, 1.0)]
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert (res.rows_kept, res.rows_quarantined, res.calendars.height) == (0, 1, 0)
    rows = [("a.csv", "ONE", T0, 1.0, 1.0, 1.0, 1.0, 1.0)] + flat_rows(5, symbol="TWO")
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    # a single bar has no timeframe to detect: kept, no gaps, timeframe unknown
    assert res.calendars.rows() == [("ONE", "24/7", None), ("TWO", "24/7", 300)]


def test_non_finite_values_are_quarantined_defensively():
    rows = flat_rows(20)
    rows[4] = (*rows[4][:6], float("nan"), *rows[4][7:])
    rows[6] = (*rows[6][:7], float("inf"))
    res = validate_bars(raw_frame(rows))
    check_invariants(res)
    assert q_rows(res) == [
        ("a.csv", 5, "close", "NaN", "non_finite_value"),
        ("a.csv", 7, "volume", "inf", "non_finite_value"),
    ]


def test_naive_timestamps_are_taken_as_utc():
    raw = raw_frame(flat_rows(5)).with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    res = validate_bars(raw)
    assert res.candles["timestamp"].to_list() == [ts(i) for i in range(5)]


# ---------------------------------------------------------------------------- pandera + real data


def test_pandera_schema_catches_a_bad_frame():
    good = validate_bars(raw_frame(flat_rows(10))).candles
    assert validate_candles(good) is None
    bad = pl.concat([good, good.head(1)]).with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(-1.0).otherwise(pl.col("close")).alias("close"),
        pl.when(pl.int_range(pl.len()) == 4).then(1.0).otherwise(pl.col("high")).alias("high"),
    )
    cases = validate_candles(bad)
    assert cases is not None
    checks = set(cases["check"])
    assert "greater_than(0)" in checks
    assert "high >= max(open, close)" in checks
    assert "multiple_fields_uniqueness" in checks
    wrong_dtype = validate_candles(good.with_columns(pl.col("segment_id").cast(pl.Int64)))
    assert wrong_dtype is not None and wrong_dtype["column"].to_list() == ["segment_id"]


ADA = DATA / "binance_spot_5m" / "ADA_BTC-5m.feather"


@pytest.mark.skipif(not ADA.exists(), reason="tests/data/binance_spot_5m not present")
def test_real_binance_ada_btc_gaps():
    df = pl.read_ipc(ADA)
    raw = df.select(
        pl.lit("ADA_BTC-5m.feather").alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
        pl.lit("ADA_BTC").alias("symbol"),
        pl.col("date").dt.cast_time_unit("us").dt.convert_time_zone("UTC").alias("timestamp"),
        "open",
        "high",
        "low",
        "close",
        "volume",
        pl.lit(None, pl.Float64).alias("spread_bps"),
    )
    res = validate_bars(raw, ValidationConfig(max_fill_bars=3))
    check_invariants(res)
    assert res.calendars.rows() == [("ADA_BTC", "24/7", 300)]
    gaps = res.gaps.with_columns(
        ((pl.col("gap_end") - pl.col("gap_start")).dt.total_minutes()).alias("minutes")
    )
    by_minutes = {m: (n, a) for m, n, a in gaps.select("minutes", "missing_bars", "action").rows()}
    assert by_minutes[10] == (1, "filled")
    assert by_minutes[25] == (4, "segment_break")
    assert by_minutes[170] == (33, "segment_break")
    ten = gaps.filter(pl.col("minutes") == 10)
    assert res.filled_bars == ten.height
    assert gaps.filter(pl.col("action") == "segment_break").height == 2
    assert res.candles["segment_id"].max() == 2
    expected = {g + FIVE_MIN for g in ten["gap_start"]}
    assert set(res.candles.filter("is_filled")["timestamp"]) == expected


# ------------------------------------------------------------------------------------------ bench


def bench_frame(n_symbols: int = 50, days: int = 180, seed: int = 0) -> pl.DataFrame:
    """A 5-minute random walk for many symbols, with ~0.05% of bars dropped (1-bar gaps)."""
    n = days * 288
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, (n_symbols, n)), axis=1))
    open_ = np.concatenate([np.full((n_symbols, 1), 100.0), close[:, :-1]], axis=1)
    wick = np.abs(rng.normal(0, 5e-4, (2, n_symbols, n)))
    start = int(T0.timestamp()) * 1_000_000
    frame = pl.DataFrame(
        {
            "source_file": np.repeat([f"S{i:03d}.feather" for i in range(n_symbols)], n),
            "source_row": np.tile(np.arange(1, n + 1), n_symbols),
            "symbol": np.repeat([f"S{i:03d}" for i in range(n_symbols)], n),
            "timestamp": np.tile(start + np.arange(n) * 300_000_000, n_symbols),
            "open": open_.ravel(),
            "high": (np.maximum(open_, close) * (1 + wick[0])).ravel(),
            "low": (np.minimum(open_, close) * (1 - wick[1])).ravel(),
            "close": close.ravel(),
            "volume": rng.exponential(10, n_symbols * n),
            "spread_bps": rng.uniform(1, 3, n_symbols * n),
        }
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    return frame.filter(pl.Series(rng.random(frame.height) > 0.0005))


def test_bench_small_scale():
    """A 20x smaller version of the benchmark, so a slow regression shows up in the suite."""
    raw = bench_frame(n_symbols=5, days=18)
    start = time.perf_counter()
    res = validate_bars(raw)
    elapsed = time.perf_counter() - start
    check_invariants(res)
    assert res.filled_bars == res.gaps.height > 0
    assert elapsed < 5.0


@pytest.mark.skipif(not os.environ.get("CLM_BENCH"), reason="set CLM_BENCH=1 to run")
def test_bench_full_scale():
    """50 symbols x 180 days of 5-minute bars (2.59M rows): target < 5 s on 2 cores."""
    raw = bench_frame()
    start = time.perf_counter()
    res = validate_bars(raw)
    elapsed = time.perf_counter() - start
    print(f"validate_bars: {raw.height} rows in {elapsed:.2f}s")
    assert res.rows_kept == raw.height
    assert elapsed < 10.0
