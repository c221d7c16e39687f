"""integrity_report / integrity_markdown on hand-built frames and on a validate_bars result."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl

from clm.data.integrity import integrity_markdown, integrity_report
from clm.data.schema import (
    CANDLE_SCHEMA,
    GAP_SCHEMA,
    MISMATCH_SCHEMA,
    QUARANTINE_SCHEMA,
    RAW_BAR_SCHEMA,
)
from clm.data.validation import validate_bars

T0 = datetime(2024, 3, 4, tzinfo=UTC)
M5 = timedelta(minutes=5)


def candles_frame() -> pl.DataFrame:
    # AAA: 6 bars, bar 2 filled, segment break before bar 4, one outlier
    # BBB: 3 bars, no gaps
    rows = []
    for i, (filled, seg, outlier) in enumerate(
        [
            (False, 0, False),
            (False, 0, False),
            (True, 0, False),
            (False, 0, True),
            (False, 1, False),
            (False, 1, False),
        ]
    ):
        t = T0 + i * M5 if i < 4 else T0 + (i + 10) * M5
        rows.append(
            (
                "AAA",
                t,
                1.0,
                1.0,
                1.0,
                1.0,
                0.0 if filled else 2.0,
                None,
                0.0,
                filled,
                seg,
                outlier,
                None,
                "a.csv",
            )
        )
    for i in range(3):
        rows.append(
            ("BBB", T0 + i * M5, 2.0, 2.0, 2.0, 2.0, 1.0, 1.5, 2.0, False, 0, False, 0.1, "b.csv")
        )
    return pl.DataFrame(rows, schema=CANDLE_SCHEMA, orient="row")


def side_tables():
    gaps = pl.DataFrame(
        [
            ("AAA", T0 + M5, T0 + 3 * M5, 1, "filled"),
            ("AAA", T0 + 3 * M5, T0 + 14 * M5, 10, "segment_break"),
        ],
        schema=GAP_SCHEMA,
        orient="row",
    )
    quarantine = pl.DataFrame(
        [
            ("a.csv", 3, "open", "-1.0", "non_positive_price", "AAA", T0),
            ("a.csv", 9, "timestamp", "x", "out_of_order", "AAA", T0),
            ("a.csv", 10, "timestamp", "x", "out_of_order", "AAA", T0),
            ("c.csv", 1, "low", "5.0", "high_low_inconsistent", "CCC", T0),
            ("bad.csv", None, None, None, "unreadable_file", None, None),
        ],
        schema=QUARANTINE_SCHEMA,
        orient="row",
    )
    mismatches = pl.DataFrame(
        [("BBB", T0, "close", "b.csv", 2.0, "z.csv", 2.1, 500.0)],
        schema=MISMATCH_SCHEMA,
        orient="row",
    )
    calendars = pl.DataFrame(
        {
            "symbol": ["AAA", "BBB"],
            "calendar": ["24/7", "sessions"],
            "timeframe_seconds": [300, 300],
        }
    )
    return gaps, quarantine, mismatches, calendars


def test_report_numbers_on_hand_built_frames():
    gaps, quarantine, mismatches, calendars = side_tables()
    report = integrity_report(candles_frame(), gaps, quarantine, mismatches, calendars)
    json.dumps(report)  # serialisable as is

    per = {e["symbol"]: e for e in report["per_symbol"]}
    assert list(per) == ["AAA", "BBB", "CCC"]
    aaa = per["AAA"]
    assert aaa == {
        "symbol": "AAA",
        "calendar": "24/7",
        "timeframe_seconds": 300,
        "first": "2024-03-04T00:00:00Z",
        "last": "2024-03-04T01:15:00Z",
        "bars": 6,
        "filled_bars": 1,
        "gaps_filled": 1,
        "gaps_segment_breaks": 1,
        "longest_gap_bars": 10,
        "segments": 2,
        "outliers": 1,
        "quarantined": 3,
        "vendor_mismatches": 0,
        "longest_gap_minutes": 55.0,
        "quarantined_by_reason": {"non_positive_price": 1, "out_of_order": 2},
    }
    bbb = per["BBB"]
    assert (bbb["bars"], bbb["segments"], bbb["quarantined"], bbb["vendor_mismatches"]) == (
        3,
        1,
        0,
        1,
    )
    assert (bbb["longest_gap_bars"], bbb["longest_gap_minutes"], bbb["calendar"]) == (
        0,
        0.0,
        "sessions",
    )
    ccc = per["CCC"]  # every row quarantined: listed with no bars
    assert (ccc["bars"], ccc["first"], ccc["quarantined"], ccc["calendar"]) == (0, None, 1, None)

    totals = report["totals"]
    assert totals["symbols"] == 2
    assert totals["bars"] == 9 and totals["filled_bars"] == 1 and totals["outliers"] == 1
    assert totals["gaps_filled"] == 1 and totals["gaps_segment_breaks"] == 1
    assert totals["segments"] == 3 and totals["longest_gap_bars"] == 10
    assert totals["quarantined"] == 5  # includes the file-level row without a symbol
    assert (totals["first"], totals["last"]) == ("2024-03-04T00:00:00Z", "2024-03-04T01:15:00Z")
    assert report["quarantined_by_reason"] == {
        "high_low_inconsistent": 1,
        "non_positive_price": 1,
        "out_of_order": 2,
        "unreadable_file": 1,
    }
    assert report["vendor_mismatches"] == 1 == totals["vendor_mismatches"]
    assert report["calendars"] == {"AAA": "24/7", "BBB": "sessions"}


def test_report_accepts_lazy_frames_and_missing_tables():
    gaps, quarantine, mismatches, calendars = side_tables()
    eager = integrity_report(candles_frame(), gaps, quarantine, mismatches, calendars)
    lazy = integrity_report(
        candles_frame().lazy(), gaps.lazy(), quarantine.lazy(), mismatches.lazy(), calendars.lazy()
    )
    assert lazy == eager
    bare = integrity_report(candles_frame(), None, None, None)
    assert bare["totals"]["quarantined"] == 0 and bare["vendor_mismatches"] == 0
    assert [e["calendar"] for e in bare["per_symbol"]] == [None, None]


def test_markdown_renders_tables():
    gaps, quarantine, mismatches, calendars = side_tables()
    md = integrity_markdown(
        integrity_report(candles_frame(), gaps, quarantine, mismatches, calendars)
    )
    lines = md.splitlines()
    assert "### Candles per symbol" in lines and "### Quarantine by reason" in lines
    header = next(line for line in lines if line.startswith("| symbol |"))
    n_cols = header.count("|")
    table_rows = [line for line in lines if line.startswith("| ")]
    assert all(line.count("|") == n_cols for line in table_rows[:5])  # header + 3 symbols + total
    assert any(line.startswith("| AAA | 24/7 | 6 |") for line in lines)
    assert any(line.startswith("| **total** |") for line in lines)
    assert "| out_of_order | 2 |" in lines
    empty = integrity_markdown(integrity_report(candles_frame(), None, None, None))
    assert "No rows quarantined." in empty


def test_report_from_validation_result():
    t = [T0 + i * M5 for i in range(12)]
    raw = pl.DataFrame(
        {
            "source_file": ["x.csv"] * 10,
            "source_row": list(range(1, 11)),
            "symbol": ["XYZ"] * 10,
            "timestamp": [t[0], t[1], t[2], t[4], t[5], t[6], t[7], t[8], t[11], t[11]],
            "open": [1.0] * 9 + [-1.0],
            "high": [1.0] * 10,
            "low": [1.0] * 10,
            "close": [1.0] * 10,
            "volume": [1.0] * 10,
            "spread_bps": [None] * 10,
        },
        schema=RAW_BAR_SCHEMA,
    )
    res = validate_bars(raw)
    report = integrity_report(res.candles, res.gaps, res.quarantine, res.mismatches, res.calendars)
    (xyz,) = report["per_symbol"]
    assert (xyz["bars"], xyz["filled_bars"], xyz["gaps_filled"], xyz["quarantined"]) == (
        12,
        3,
        2,
        1,
    )
    assert xyz["longest_gap_bars"] == 2 and xyz["longest_gap_minutes"] == 15.0
    assert xyz["quarantined_by_reason"] == {"non_positive_price": 1}
    assert report["totals"]["bars"] == res.candles.height
