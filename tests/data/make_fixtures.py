"""Generate the committed market-data fixture corpus under tests/data/ (deterministic).

Run ``python tests/data/make_fixtures.py`` from the project root. It rewrites:

* ``binance_spot_5m/`` and ``binance_futures/``: copies of the real files in ``../shared/data``
  (skipped with a message when that folder is not there; the committed copies stay valid);
* ``defects/``: small synthetic files covering every layout and every defect class, plus
  ``defects/EXPECTED.json`` describing what the file source and, later, validation must report.

EXPECTED.json format::

    {"files": {"<path relative to defects/>": {
        "layout": str | null, "symbols": [...], "timeframe_seconds": int | null,
        "rows_read": int,            # rows the source counts (row-level quarantine + bars)
        "bars": int,                 # rows that leave the source stage as raw bars
        "file_error": bool,          # whole file rejected: one quarantine row with row = null
        "source": {reason: count},   # quarantine rows at the source stage ("file_error" for the
                                     # file-level row, whose full reason is "file_error: <file>: ...")
        "source_rows": [[row, field, reason], ...],   # row-level quarantine detail
        "validation_expected": {reason: count},       # defects that pass the source stage
        "notes": str}},
     "ignored": [files the source must skip silently]}
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parents[1].parent / "shared" / "data"
STEP = timedelta(minutes=5)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def make_bars(start: datetime, n: int, base: float) -> list[dict]:
    """A deterministic, well-formed 5-minute OHLCV path."""
    out = []
    for i in range(n):
        o = round(base * (1 + 0.002 * (((i * 7) % 11) - 5) / 5), 8)
        c = round(o * (1 + 0.0005 * ((i % 3) - 1)), 8)
        h = round(max(o, c) * 1.001, 8)
        lo = round(min(o, c) * 0.999, 8)
        volume = round(10 + i * 1.5, 4)
        out.append({"ts": start + i * STEP, "open": o, "high": h, "low": lo, "close": c, "volume": volume})
    return out


def fmt(x: float) -> str:
    return repr(float(x))


def binance_line(bar: dict, *, unit: str = "ms") -> str:
    mult = 1000 if unit == "us" else 1
    open_time = _ms(bar["ts"]) * mult
    close_time = (_ms(bar["ts"] + STEP) - 1) * mult + (999 if unit == "us" else 0)
    qv = bar["volume"] * bar["close"]
    fields = [
        str(open_time), fmt(bar["open"]), fmt(bar["high"]), fmt(bar["low"]), fmt(bar["close"]),
        fmt(bar["volume"]), str(close_time), f"{qv:.8f}", str(100 + int(bar["volume"])),
        fmt(round(bar["volume"] / 2, 4)), f"{qv / 2:.8f}", "0",
    ]
    return ",".join(fields)


BINANCE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
DAY1 = datetime(2024, 1, 1, tzinfo=timezone.utc)
DAY2 = datetime(2024, 1, 2, tzinfo=timezone.utc)
DAY3 = datetime(2024, 1, 3, tzinfo=timezone.utc)


def entry(
    *, layout, symbols, rows_read, bars, source=None, source_rows=(), file_error=False,
    validation=None, timeframe=300, notes="",
) -> dict:
    return {
        "layout": layout,
        "symbols": symbols,
        "timeframe_seconds": None if file_error else timeframe,
        "rows_read": rows_read,
        "bars": bars,
        "file_error": file_error,
        "source": source or {},
        "source_rows": [list(r) for r in source_rows],
        "validation_expected": validation or {},
        "notes": notes,
    }


def file_error_entry(notes: str) -> dict:
    return entry(
        layout=None, symbols=[], rows_read=0, bars=0, source={"file_error": 1}, file_error=True, notes=notes
    )


def build_defects(out: Path) -> dict:
    files: dict[str, bytes] = {}
    expected: dict[str, dict] = {}

    # 1. Binance kline CSV, no header, milliseconds; validation defects only.
    bars = make_bars(DAY1, 24, 42000.0)
    bars[4].update(open=-1.0, high=-1.0, low=-1.0, close=-1.0)  # line 5: negative prices, OHLC consistent
    b = bars[7]
    b["high"], b["low"] = b["low"], b["high"]  # line 8: high < low
    files["BTCUSDT-5m-2024-01-01.csv"] = ("\n".join(binance_line(x) for x in bars) + "\n").encode()
    expected["BTCUSDT-5m-2024-01-01.csv"] = entry(
        layout="binance_kline_csv", symbols=["BTCUSDT"], rows_read=24, bars=24,
        validation={"non_positive_price": 1, "high_low_inconsistent": 1},
        notes="no header, open_time in ms; line 5 all prices -1.0; line 8 high and low swapped",
    )

    # 2. Binance kline CSV with header, microseconds; out-of-order and duplicate rows.
    bars = make_bars(DAY1, 24, 2300.0)
    bars[9], bars[10] = bars[10], bars[9]  # data rows 10/11 swapped -> one row earlier than its predecessor
    bars.insert(16, dict(bars[15]))  # exact duplicate of data row 16
    lines = [BINANCE_HEADER] + [binance_line(x, unit="us") for x in bars]
    files["ETHUSDT-5m-2024-01-01.csv"] = ("\n".join(lines) + "\n").encode()
    expected["ETHUSDT-5m-2024-01-01.csv"] = entry(
        layout="binance_kline_csv", symbols=["ETHUSDT"], rows_read=25, bars=25,
        validation={"out_of_order": 1, "duplicate_timestamp": 1},
        notes="header row, open_time in microseconds (16 digits); lines 11/12 swapped "
        "(line 12 is earlier than line 11); line 18 duplicates line 17",
    )

    # 3. freqtrade JSON (one line, NaN written as a bare NaN token as Python's json does).
    bars = make_bars(DAY1, 24, 95.0)
    rows = [[_ms(x["ts"]), x["open"], x["high"], x["low"], x["close"], x["volume"]] for x in bars]
    rows[5][4] = math.nan  # element 6 close NaN
    rows[8][5] = None  # element 9 volume null
    rows[14][0] += 3 * 60 * 1000  # element 15 at 01:13 -> misaligned
    files["SOL_USDT-5m.json"] = json.dumps(rows).encode()
    expected["SOL_USDT-5m.json"] = entry(
        layout="freqtrade_json", symbols=["SOL_USDT"], rows_read=24, bars=22,
        source={"non_finite": 1, "missing_value": 1},
        source_rows=[(6, "close", "non_finite"), (9, "volume", "missing_value")],
        validation={"misaligned_timestamp": 1},
        notes="rows are 1-based element indexes; element 15 is at 01:13 (misaligned, leaves a gap at 01:10)",
    )

    # 4. Generic CSV, mixed-case header, absolute spread, CRLF, blank lines, mixed ISO styles.
    bars = make_bars(DAY1, 24, 0.09)
    iso_styles = [
        lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        lambda t: t.strftime("%Y-%m-%d %H:%M:%S"),
        lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        lambda t: (t + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00"),
        lambda t: t.strftime("%Y-%m-%d %H:%M"),
    ]
    data_lines = []
    for i, x in enumerate(bars):
        spread = round(x["close"] * 2e-4, 10)  # 2 bps
        cells = [iso_styles[i % len(iso_styles)](x["ts"]), fmt(x["open"]), fmt(x["high"]),
                 fmt(x["low"]), fmt(x["close"]), fmt(x["volume"]), repr(spread)]
        data_lines.append(cells)
    data_lines[2][1] = "abc"  # invalid_number Open
    data_lines[5][0] = "not-a-date"  # invalid_timestamp Date
    data_lines[8].append("extra")  # wrong_field_count
    data_lines[11][2] = ""  # missing_value HIGH
    data_lines[14][3] = "inf"  # non_finite low
    data_lines[17][5] = "-5.0"  # negative volume: validation
    text_lines = ["Date,Open,HIGH,low,Close,Volume,Spread"]
    line_no = {}
    for i, cells in enumerate(data_lines):
        if i in (7, 20):
            text_lines.append("")  # blank lines: skipped, not counted, but they shift line numbers
        text_lines.append(",".join(cells))
        line_no[i] = len(text_lines)
    files["DOGE_USDT-5m.csv"] = ("\r\n".join(text_lines) + "\r\n").encode()
    expected["DOGE_USDT-5m.csv"] = entry(
        layout="generic_csv", symbols=["DOGE_USDT"], rows_read=24, bars=19,
        source={"invalid_number": 1, "invalid_timestamp": 1, "wrong_field_count": 1,
                "missing_value": 1, "non_finite": 1},
        source_rows=[
            (line_no[2], "Open", "invalid_number"),
            (line_no[5], "Date", "invalid_timestamp"),
            (line_no[8], None, "wrong_field_count"),
            (line_no[11], "HIGH", "missing_value"),
            (line_no[14], "low", "non_finite"),
        ],
        validation={"negative_volume": 1},
        notes="CRLF line endings, blank lines before data rows 8 and 21; Spread is absolute "
        "(ask-bid) = 2 bps of close; dates mix Z, +00:00, +01:00 and naive styles",
    )

    # 5. Generic Parquet with a symbol column (two symbols) and epoch-ms dates.
    recs = []
    for sym, base in (("btc/usdt", 43000.0), ("ETH/USDT", 2350.0)):
        for x in make_bars(DAY2, 12, base):
            recs.append({"date": _ms(x["ts"]), "open": x["open"], "high": x["high"], "low": x["low"],
                         "close": x["close"], "volume": x["volume"], "spread_bps": 1.5, "symbol": sym})
    recs[3]["close"] = math.nan  # row 4
    recs[15]["volume"] = None  # row 16
    recs[20]["date"] += 2 * 60 * 1000  # row 21: ETH bar at 00:42 -> misaligned
    recs.append(dict(recs[-1], symbol="???", date=recs[-1]["date"] + 300_000))  # row 25
    frame = pl.DataFrame(recs, schema={"date": pl.Int64, "open": pl.Float64, "high": pl.Float64,
                                       "low": pl.Float64, "close": pl.Float64, "volume": pl.Float64,
                                       "spread_bps": pl.Float64, "symbol": pl.String})
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="uncompressed", statistics=False)
    files["multi_symbol.parquet"] = buf.getvalue()
    expected["multi_symbol.parquet"] = entry(
        layout="generic_parquet", symbols=["BTC_USDT", "ETH_USDT"], rows_read=25, bars=22,
        source={"non_finite": 1, "missing_value": 1, "invalid_symbol": 1},
        source_rows=[
            (4, "close", "non_finite"), (16, "volume", "missing_value"), (25, "symbol", "invalid_symbol")
        ],
        validation={"misaligned_timestamp": 1},
        notes="date is epoch ms; symbols btc/usdt and ETH/USDT normalised; row 21 at 00:42 (misaligned)",
    )

    # 6. Truncated Binance CSV: the last line is cut in the middle of a field, no final newline.
    bars = make_bars(DAY1, 24, 70.0)
    lines = [binance_line(x) for x in bars]
    last = lines[-1]
    third_comma = last.index(",", last.index(",", last.index(",") + 1) + 1)
    lines[-1] = last[: third_comma + 3]  # cut 2 characters into "low"
    files["LTCUSDT-5m-2024-01-01.csv"] = "\n".join(lines).encode()
    expected["LTCUSDT-5m-2024-01-01.csv"] = entry(
        layout="binance_kline_csv", symbols=["LTCUSDT"], rows_read=24, bars=23,
        source={"wrong_field_count": 1}, source_rows=[(24, None, "wrong_field_count")],
        notes="file ends mid-field on line 24",
    )

    # 7. Non-UTF-8 bytes in two lines of a Binance CSV.
    bars = make_bars(DAY1, 24, 0.6)
    raw_lines = [binance_line(x).encode() for x in bars]
    raw_lines[2] = raw_lines[2].replace(b",", b"\xff,", 1)  # line 3: invalid start byte
    raw_lines[6] = raw_lines[6] + b"\xe9t\xe9"  # line 7: latin-1 text
    files["ADAUSDT-5m-2024-01-01.csv"] = b"\n".join(raw_lines) + b"\n"
    expected["ADAUSDT-5m-2024-01-01.csv"] = entry(
        layout="binance_kline_csv", symbols=["ADAUSDT"], rows_read=24, bars=22,
        source={"invalid_utf8": 2}, source_rows=[(3, None, "invalid_utf8"), (7, None, "invalid_utf8")],
        notes="value is repr() of the raw line bytes",
    )

    # 8. freqtrade Feather with a tz-naive ms date column and a NaN volume.
    bars = make_bars(DAY1, 24, 0.0000021)
    frame = pl.DataFrame({
        "date": [x["ts"].replace(tzinfo=None) for x in bars],
        **{k: [x[k] for x in bars] for k in ("open", "high", "low", "close", "volume")},
    }).with_columns(pl.col("date").cast(pl.Datetime("ms")))
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 6).then(float("nan")).otherwise(pl.col("volume")).alias("volume")
    )
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="uncompressed")
    files["TRX_USDT-5m.feather"] = buf.getvalue()
    expected["TRX_USDT-5m.feather"] = entry(
        layout="freqtrade_feather", symbols=["TRX_USDT"], rows_read=24, bars=23,
        source={"non_finite": 1}, source_rows=[(7, "volume", "non_finite")],
        notes="tz-naive datetime[ms] dates are read as UTC; tiny prices (2e-6)",
    )

    # 9. Truncated Feather.
    bars = make_bars(DAY1, 24, 600.0)
    frame = pl.DataFrame({"date": [x["ts"] for x in bars],
                          **{k: [x[k] for x in bars] for k in ("open", "high", "low", "close", "volume")}})
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="uncompressed")
    full = buf.getvalue()
    files["BNB_USDT-5m.feather"] = full[: len(full) * 3 // 5]
    expected["BNB_USDT-5m.feather"] = file_error_entry("truncated to 60% of its bytes")

    # 10. Truncated freqtrade JSON: salvaged.
    bars = make_bars(DAY1, 24, 0.11)
    text = json.dumps([[_ms(x["ts"]), x["open"], x["high"], x["low"], x["close"], x["volume"]] for x in bars])
    cut = text.rindex("[") + 20  # inside the last element
    files["XLM_USDT-5m.json"] = text[:cut].encode()
    expected["XLM_USDT-5m.json"] = entry(
        layout="freqtrade_json", symbols=["XLM_USDT"], rows_read=24, bars=23,
        source={"truncated_record": 1}, source_rows=[(24, None, "truncated_record")],
        notes="document cut inside element 24: the 23 complete elements are kept",
    )

    # 11. gzip-compressed Binance CSV (mtime=0 keeps the bytes deterministic).
    bars = make_bars(DAY3, 12, 44000.0)
    plain = ("\n".join(binance_line(x) for x in bars) + "\n").encode()
    files["BTCUSDT-5m-2024-01-03.csv.gz"] = gzip.compress(plain, mtime=0)
    expected["BTCUSDT-5m-2024-01-03.csv.gz"] = entry(
        layout="binance_kline_csv", symbols=["BTCUSDT"], rows_read=12, bars=12, notes="clean, gzip",
    )

    # 12. File-level errors.
    files["empty.csv"] = b""
    expected["empty.csv"] = file_error_entry("0 bytes")
    files["blank_lines.csv"] = b"\n  \n\r\n\n"
    expected["blank_lines.csv"] = file_error_entry("only blank lines")
    files["header_only.csv"] = b"date,open,high,low,close,volume\n"
    expected["header_only.csv"] = file_error_entry("only a header")
    files["unknown_layout.csv"] = b"foo,bar,baz\n1,2,3\n4,5,6\n"
    expected["unknown_layout.csv"] = file_error_entry("columns foo,bar,baz")
    files["garbage.json"] = b'[[1704067200000, 1.0, 1.1, 0.9, 1.0, 10.0], {"oops": 1}]'
    expected["garbage.json"] = file_error_entry("not a list of arrays (structural damage, not truncation)")
    files["BAD+SYM-5m.csv"] = ("\n".join(binance_line(x) for x in make_bars(DAY1, 3, 1.0)) + "\n").encode()
    expected["BAD+SYM-5m.csv"] = file_error_entry("symbol BAD+SYM fails normalise_symbol")
    files["notes.txt"] = b"not market data\n"
    expected["notes.txt"] = file_error_entry("unsupported suffix")
    expected["EXPECTED.json"] = file_error_entry(
        "this file: a JSON object, not a freqtrade candle list (unknown layout)"
    )

    # Silently ignored.
    files["README.md"] = b"# Defect corpus\n\nGenerated by ../make_fixtures.py; see EXPECTED.json.\n"
    files[".hidden.csv"] = b"this,is,ignored\n"

    for name, content in files.items():
        (out / name).write_bytes(content)
    return {
        "_about": "Generated by tests/data/make_fixtures.py; see its docstring for the format.",
        "files": dict(sorted(expected.items())),
        "ignored": [".hidden.csv", "README.md"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder with the real data")
    args = parser.parse_args()

    for sub in ("binance_spot_5m", "binance_futures"):
        src = args.shared / sub
        if not src.is_dir():
            print(f"skip {sub}: {src} not found (committed copies are kept)")
            continue
        dst = HERE / sub
        dst.mkdir(exist_ok=True)
        for f in sorted(src.glob("*.feather")):
            shutil.copyfile(f, dst / f.name)
            (dst / f.name).chmod(0o644)

    defects = HERE / "defects"
    if defects.exists():
        shutil.rmtree(defects)
    defects.mkdir()
    expected = build_defects(defects)
    (defects / "EXPECTED.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {len(list(defects.iterdir()))} files to {defects}")


if __name__ == "__main__":
    main()
