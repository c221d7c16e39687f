"""File-based market-data sources: layouts, row-level quarantine, file-level errors, the corpus."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from clm.data.schema import QUARANTINE_SCHEMA, RAW_BAR_SCHEMA
from clm.data.sources.files import (
    SUPPORTED_SUFFIXES,
    FolderSource,
    detect_timeframe_seconds,
    file_time_range,
    read_market_file,
    symbol_from_filename,
)

DATA = Path(__file__).resolve().parents[1] / "data"
DEFECTS = DATA / "defects"
SPOT = DATA / "binance_spot_5m"
FUTURES = DATA / "binance_futures"
EXPECTED = json.loads((DEFECTS / "EXPECTED.json").read_text())
UTC = timezone.utc
BARS_COLS = ["symbol", "timestamp", "open", "high", "low", "close", "volume", "spread_bps"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def row_level(q: pl.DataFrame) -> pl.DataFrame:
    return q.filter(pl.col("row").is_not_null())


def reason_counts(q: pl.DataFrame) -> dict[str, int]:
    keys = q["reason"].str.split(":").list.first()
    return dict(keys.value_counts().iter_rows())


def check_invariant(bars: pl.DataFrame, q: pl.DataFrame, report) -> None:
    assert report.rows_read == bars.height + row_level(q).height
    assert report.rows_parsed == bars.height
    assert report.rows_quarantined == row_level(q).height
    assert bars.schema == pl.Schema(RAW_BAR_SCHEMA)
    assert q.schema == pl.Schema(QUARANTINE_SCHEMA)
    for c in ("open", "high", "low", "close", "volume"):
        assert bars[c].null_count() == 0
        assert bars[c].is_finite().all()
    assert bars["timestamp"].null_count() == 0
    assert bars["symbol"].null_count() == 0
    if report.error:
        assert bars.height == 0 and q.height == 1 and q["row"][0] is None


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------


def test_real_ada_btc_feather():
    bars, q, report = read_market_file(SPOT / "ADA_BTC-5m.feather")
    check_invariant(bars, q, report)
    assert q.height == 0
    assert report.layout == "freqtrade_feather"
    assert report.symbols == ["ADA_BTC"]
    assert report.timeframe_seconds == 300
    assert 5_700 <= bars.height <= 5_760
    assert bars["timestamp"].min() == utc(2018, 1, 10, 4, 55)
    assert bars["timestamp"].max() == utc(2018, 1, 30, 4, 50)
    assert bars["source_row"].to_list() == list(range(1, bars.height + 1))
    assert bars["spread_bps"].null_count() == bars.height
    raw = pl.read_ipc(SPOT / "ADA_BTC-5m.feather")
    assert bars["close"].to_list() == raw["close"].to_list()


def test_real_spot_folder():
    batch = FolderSource(SPOT).load()
    assert batch.source == FolderSource(SPOT).name == f"files:{SPOT.resolve()}"
    assert len(batch.files) == 10
    assert [f.path for f in batch.files] == sorted(p.name for p in SPOT.glob("*.feather"))
    assert all(f.timeframe_seconds == 300 and f.error is None for f in batch.files)
    assert batch.bars["symbol"].n_unique() == 10
    assert "ETH_BTC" in batch.bars["symbol"].unique().to_list()
    assert batch.quarantine.height == 0
    assert batch.rows_read == batch.bars.height == sum(f.rows_read for f in batch.files)


def test_real_futures_folder_skips_funding_rate():
    batch = FolderSource(FUTURES).load()
    by_name = {f.path: f for f in batch.files}
    xrp = by_name["XRP_USDT_USDT-5m-futures.feather"]
    assert xrp.symbols == ["XRP_USDT_USDT"]
    assert xrp.rows_read == xrp.rows_parsed == 1_999
    assert xrp.timeframe_seconds == 300
    funding = by_name["XRP_USDT_USDT-8h-funding_rate.feather"]
    assert funding.error.startswith("file_error: XRP_USDT_USDT-8h-funding_rate.feather:")
    assert "funding_rate" in funding.error
    assert batch.bars["symbol"].unique().to_list() == ["XRP_USDT_USDT"]
    assert batch.bars["timestamp"].min() == utc(2021, 11, 15)


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------

BTC_CSV = DEFECTS / "BTCUSDT-5m-2024-01-01.csv"
BINANCE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def _scale_times(line: str, factor: int) -> str:
    f = line.split(",")
    f[0], f[6] = str(int(f[0]) * factor), str(int(f[6]) * factor)
    return ",".join(f)


def test_binance_ms_equals_us(tmp_path):
    lines = BTC_CSV.read_text().splitlines()
    us = tmp_path / BTC_CSV.name
    us.write_text("\n".join(_scale_times(x, 1000) for x in lines) + "\n")
    a, qa, _ = read_market_file(BTC_CSV)
    b, qb, rb = read_market_file(us)
    assert qa.height == qb.height == 0 and rb.layout == "binance_kline_csv"
    assert_frame_equal(a, b)
    assert a["timestamp"][0] == utc(2024, 1, 1)


def test_ms_and_us_mixed_in_one_file(tmp_path):
    lines = BTC_CSV.read_text().splitlines()
    mixed = tmp_path / BTC_CSV.name
    mixed.write_text("\n".join(_scale_times(x, 1000) if i % 2 else x for i, x in enumerate(lines)))
    a, _, _ = read_market_file(BTC_CSV)
    b, _, _ = read_market_file(mixed)
    assert_frame_equal(a, b)


def test_binance_header_equals_no_header(tmp_path):
    with_header = tmp_path / BTC_CSV.name
    with_header.write_text(BINANCE_HEADER + "\n" + BTC_CSV.read_text())
    a, _, ra = read_market_file(BTC_CSV)
    b, _, rb = read_market_file(with_header)
    assert ra.layout == rb.layout == "binance_kline_csv"
    assert_frame_equal(a.drop("source_row"), b.drop("source_row"))
    assert b["source_row"].to_list() == [r + 1 for r in a["source_row"].to_list()]


def test_gzip_csv_equals_plain(tmp_path):
    plain = tmp_path / "BTCUSDT-5m-2024-01-03.csv"
    plain.write_bytes(gzip.decompress((DEFECTS / "BTCUSDT-5m-2024-01-03.csv.gz").read_bytes()))
    a, _, _ = read_market_file(plain)
    b, _, rb = read_market_file(DEFECTS / "BTCUSDT-5m-2024-01-03.csv.gz")
    assert rb.symbols == ["BTCUSDT"] and b.height == 12
    assert_frame_equal(a.drop("source_file"), b.drop("source_file"))


def test_freqtrade_json_equals_feather(tmp_path):
    raw = pl.read_ipc(SPOT / "ETH_BTC-5m.feather")
    rows = raw.with_columns(pl.col("date").dt.epoch("ms")).rows()
    path = tmp_path / "ETH_BTC-5m.json"
    path.write_text(json.dumps([list(r) for r in rows]))
    a, _, ra = read_market_file(SPOT / "ETH_BTC-5m.feather")
    b, qb, rb = read_market_file(path)
    assert qb.height == 0
    assert rb.layout == "freqtrade_json" and rb.timeframe_seconds == 300 and rb.symbols == ["ETH_BTC"]
    assert_frame_equal(a.drop("source_file"), b.drop("source_file"))


def test_freqtrade_json_pretty_printed(tmp_path):
    path = tmp_path / "ADA_BTC-1h.json"
    candles = [[1704067200000, 1.0, 2.0, 0.5, 1.5, 10], [1704070800000, 1.5, 2.5, 1.0, 2.0, 0]]
    path.write_text(json.dumps(candles, indent=2))
    bars, q, report = read_market_file(path)
    assert q.height == 0 and bars.height == 2 and report.timeframe_seconds == 3600


def test_generic_csv_mixed_case_spread_and_iso_styles():
    bars, q, report = read_market_file(DEFECTS / "DOGE_USDT-5m.csv")
    assert report.layout == "generic_csv" and report.symbols == ["DOGE_USDT"]
    assert report.timeframe_seconds == 300
    assert bars["spread_bps"].is_between(1.999, 2.001).all()
    # Z, +00:00, +01:00 and naive styles all land on the 5-minute UTC grid of 2024-01-01.
    assert (bars["timestamp"].dt.epoch("s") % 300 == 0).all()
    assert bars["timestamp"].dt.date().unique().to_list() == [datetime(2024, 1, 1).date()]
    assert bars["timestamp"].is_sorted() and bars["timestamp"].n_unique() == bars.height


def test_generic_parquet_symbol_column():
    bars, q, report = read_market_file(DEFECTS / "multi_symbol.parquet")
    assert report.layout == "generic_parquet"
    assert report.symbols == ["BTC_USDT", "ETH_USDT"]
    assert report.timeframe_seconds == 300
    assert bars["spread_bps"].unique().to_list() == [1.5]
    assert bars.filter(pl.col("symbol") == "BTC_USDT")["timestamp"].min() == utc(2024, 1, 2)


@pytest.mark.parametrize("unit,factor", [("s", 1), ("ms", 1_000), ("us", 1_000_000), ("ns", 1_000_000_000)])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_generic_epoch_units(tmp_path, unit, factor, fmt):
    secs = [1704067200 + 300 * i for i in range(4)]
    frame = pl.DataFrame({"DATE": [s * factor for s in secs], "Open": [1.0] * 4, "High": [2.0] * 4,
                          "Low": [0.5] * 4, "Close": [1.5] * 4, "Volume": [3.0] * 4})
    path = tmp_path / f"EUR_USD-5m.{fmt}"
    frame.write_csv(path) if fmt == "csv" else frame.write_parquet(path)
    bars, q, report = read_market_file(path)
    assert q.height == 0, q
    assert bars["timestamp"].to_list() == [datetime.fromtimestamp(s, UTC) for s in secs]
    assert report.symbols == ["EUR_USD"] and report.timeframe_seconds == 300


def test_generic_iso_offsets_and_naive_are_utc(tmp_path):
    path = tmp_path / "X.csv"
    path.write_text(
        "date,open,high,low,close,volume\n"
        "2024-01-01T00:00:00Z,1,1,1,1,1\n"
        "2024-01-01 01:05:00+01:00,1,1,1,1,1\n"
        '"2024-01-01 00:10:00",1,1,1,1,1\n'
        "2024-01-01T00:15:00.000000+00:00,1,1,1,1,1\n"
        "2023-12-31T19:20:00-05:00,1,1,1,1,1\n"
        "2024/01/01 00:25,1,1,1,1,1\n"
    )
    bars, q, _ = read_market_file(path)
    assert q.height == 0
    assert bars["timestamp"].to_list() == [utc(2024, 1, 1, 0, m) for m in (0, 5, 10, 15, 20, 25)]


def test_column_map_and_symbol_override(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("Time,O,H,L,C,Vol,spread_bps\n1704067200,1,2,0.5,1.5,3,4.5\n1704067260,1,2,0.5,1.5,3,\n")
    bars, q, report = read_market_file(
        path,
        column_map={"time": "date", "O": "open", "h": "high", "L": "low", "C": "close", "VOL": "volume"},
        symbol="btc/usd",
    )
    assert q.height == 0
    assert report.symbols == ["BTC_USD"] and report.timeframe_seconds == 60
    assert bars["spread_bps"].to_list() == [4.5, None]  # an empty spread is not a defect


def test_semicolon_delimiter(tmp_path):
    path = tmp_path / "X.csv"
    path.write_text("date;open;high;low;close;volume\n2024-01-01 00:00;1;2;0.5;1.5;3\n")
    bars, q, report = read_market_file(path)
    assert q.height == 0 and bars.height == 1 and report.timeframe_seconds is None


@pytest.mark.parametrize(
    "name,symbol",
    [
        ("BTCUSDT-5m-2024-01-01.csv", "BTCUSDT"),
        ("BTCUSDT-1mo-2024-01.csv", "BTCUSDT"),
        ("ADA_BTC-5m.feather", "ADA_BTC"),
        ("XRP_USDT_USDT-5m-futures.feather", "XRP_USDT_USDT"),
        ("ETH_USDT-1h.json", "ETH_USDT"),
        ("eth-usdt.parquet", "ETH-USDT"),
        ("BTCUSDT-5m-2024-01-03.csv.gz", "BTCUSDT"),
    ],
)
def test_symbol_from_filename(name, symbol):
    assert symbol_from_filename(name) == symbol


def test_detect_timeframe_seconds():
    ts = pl.Series([utc(2024, 1, 1, 0, m) for m in (0, 5, 10, 20, 25, 25, 30)])
    assert detect_timeframe_seconds(ts) == 300
    assert detect_timeframe_seconds(ts.reverse()) == 300
    assert detect_timeframe_seconds(pl.Series([utc(2024, 1, 1)])) is None
    assert detect_timeframe_seconds(pl.Series([], dtype=pl.Datetime("us", "UTC"))) is None
    jitter = pl.Series(
        [datetime(2021, 11, 18, 8 * i, 0, 0, 17_000 - 3_000 * i, tzinfo=UTC) for i in range(3)]
    )
    assert detect_timeframe_seconds(jitter) == 8 * 3600


def test_file_time_range():
    first, last = file_time_range(SPOT / "ADA_BTC-5m.feather")
    assert (first, last) == (utc(2018, 1, 10, 4, 55), utc(2018, 1, 30, 4, 50))
    assert file_time_range(DEFECTS / "BTCUSDT-5m-2024-01-01.csv") == (utc(2024, 1, 1), utc(2024, 1, 1, 1, 55))
    assert file_time_range(DEFECTS / "empty.csv") is None
    assert file_time_range(DEFECTS / "BNB_USDT-5m.feather") is None


# --------------------------------------------------------------------------------------------
# the defect corpus
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def defects_batch():
    return FolderSource(DEFECTS).load()


def test_corpus_files_match_expected_list(defects_batch):
    assert [f.path for f in defects_batch.files] == sorted(EXPECTED["files"])
    for ignored in EXPECTED["ignored"]:
        assert (DEFECTS / ignored).exists()
        assert ignored not in defects_batch.quarantine["source_file"].to_list()


@pytest.mark.parametrize("name", sorted(EXPECTED["files"]))
def test_corpus_file(name, defects_batch):
    exp = EXPECTED["files"][name]
    report = next(f for f in defects_batch.files if f.path == name)
    bars = defects_batch.bars.filter(pl.col("source_file") == name)
    q = defects_batch.quarantine.filter(pl.col("source_file") == name)
    check_invariant(bars, q, report)
    assert report.rows_read == exp["rows_read"]
    assert bars.height == exp["bars"]
    assert report.layout == exp["layout"]
    assert report.symbols == exp["symbols"]
    assert report.timeframe_seconds == exp["timeframe_seconds"]
    assert reason_counts(q) == exp["source"]
    got_rows = sorted(row_level(q).select("row", "field", "reason").rows())
    assert got_rows == sorted(tuple(r) for r in exp["source_rows"])
    assert (report.error is not None) == exp["file_error"]
    if exp["file_error"]:
        assert q["reason"][0] == "file_error" and q["value"][0] == report.error
        assert report.error.startswith(f"file_error: {name}: ")


def test_corpus_defect_details(defects_batch):
    q = defects_batch.quarantine
    doge = q.filter(pl.col("source_file") == "DOGE_USDT-5m.csv").sort("row")
    assert doge["value"].to_list()[:2] == ["abc", "not-a-date"]
    assert doge.filter(pl.col("reason") == "wrong_field_count")["value"][0].endswith(",extra")
    assert doge.filter(pl.col("reason") == "invalid_number")["timestamp"][0] == utc(2024, 1, 1, 0, 10)
    utf8 = q.filter(pl.col("reason") == "invalid_utf8")
    assert utf8["value"].str.starts_with("b'").all()
    assert utf8["value"].str.contains(r"\xff", literal=True).any()
    assert (utf8["value"].str.len_chars() <= 200).all()
    parquet = q.filter(pl.col("source_file") == "multi_symbol.parquet").sort("row")
    assert parquet["symbol"].to_list() == ["BTC_USDT", "ETH_USDT", None]
    unknown = q.filter(pl.col("source_file") == "unknown_layout.csv")["value"][0]
    assert "foo" in unknown and "open" in unknown and "Binance" in unknown
    # Validation-stage defects pass through the source untouched.
    btc = defects_batch.bars.filter(pl.col("source_file") == "BTCUSDT-5m-2024-01-01.csv")
    assert btc.filter(pl.col("source_row") == 5)["close"][0] == -1.0
    eth = defects_batch.bars.filter(pl.col("source_file") == "ETHUSDT-5m-2024-01-01.csv")
    assert eth["timestamp"].n_unique() == eth.height - 1 and not eth["timestamp"].is_sorted()
    sol = defects_batch.bars.filter(pl.col("source_file") == "SOL_USDT-5m.json")
    assert sol.filter(pl.col("source_row") == 15)["timestamp"][0] == utc(2024, 1, 1, 1, 13)


def test_batch_invariant_and_every_file_reported(defects_batch):
    b = defects_batch
    assert b.rows_read == b.bars.height + row_level(b.quarantine).height
    assert b.rows_read == sum(e["rows_read"] for e in EXPECTED["files"].values())
    file_level = b.quarantine.filter(pl.col("row").is_null())
    assert sorted(file_level["source_file"].to_list()) == sorted(
        n for n, e in EXPECTED["files"].items() if e["file_error"]
    )


@pytest.mark.parametrize("folder", [SPOT, FUTURES, DEFECTS])
def test_invariant_every_corpus_file(folder):
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.startswith("README"):
            continue
        check_invariant(*read_market_file(path))


def test_load_is_deterministic():
    a, b = FolderSource(DEFECTS).load(), FolderSource(DEFECTS).load()
    assert_frame_equal(a.bars, b.bars)
    assert_frame_equal(a.quarantine, b.quarantine)
    assert a.files == b.files
    files = a.bars["source_file"].unique(maintain_order=True).to_list()
    assert files == sorted(files)


def test_fixture_generator_reproduces_committed_corpus(tmp_path):
    spec = importlib.util.spec_from_file_location("make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.build_defects(tmp_path)
    assert json.loads(json.dumps(expected)) == EXPECTED
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (DEFECTS / path.name).read_bytes(), path.name


# --------------------------------------------------------------------------------------------
# FolderSource behaviour and robustness
# --------------------------------------------------------------------------------------------


def test_missing_path_raises_file_not_found(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
        FolderSource(missing).load()


def test_folder_without_supported_files_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(ValueError, match="no supported market-data files"):
        FolderSource(tmp_path).load()
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="sub"):
        FolderSource(tmp_path / "sub").load()


def test_single_file_source_and_nested_folders(tmp_path):
    single = FolderSource(BTC_CSV).load()
    assert single.bars["source_file"].unique().to_list() == [BTC_CSV.name]
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / BTC_CSV.name).write_bytes(BTC_CSV.read_bytes())
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.csv").write_text("junk")
    batch = FolderSource(tmp_path).load()
    assert [f.path for f in batch.files] == [f"a/b/{BTC_CSV.name}"]
    assert_frame_equal(single.bars.drop("source_file"), batch.bars.drop("source_file"))


def test_invalid_symbol_argument_raises():
    with pytest.raises(ValueError):
        FolderSource(BTC_CSV, symbol="bad symbol!")


def test_truncated_json_between_elements(tmp_path):
    path = tmp_path / "ADA_USDT-5m.json"
    path.write_text("[[1704067200000, 1, 2, 0.5, 1.5, 3], [1704067500000, 1, 2, 0.5, 1.5, 3],")
    bars, q, report = read_market_file(path)
    check_invariant(bars, q, report)
    assert bars.height == 2 and report.rows_read == 2
    assert q["reason"].to_list() == ["truncated_document"] and q["row"][0] is None


def test_long_bad_line_value_is_truncated(tmp_path):
    path = tmp_path / BTC_CSV.name
    path.write_text(BTC_CSV.read_text() + "1," * 500 + "\n")
    bars, q, report = read_market_file(path)
    check_invariant(bars, q, report)
    assert q["reason"].to_list() == ["wrong_field_count"] and q["row"][0] == 25
    assert q["value"].str.len_chars()[0] == 200


def test_supported_suffixes():
    assert {".csv", ".feather", ".arrow", ".ipc", ".json", ".parquet"} <= set(SUPPORTED_SUFFIXES)


@pytest.mark.parametrize("seed", range(3))
def test_random_corruption_never_crashes(tmp_path, seed):
    rng = random.Random(seed)
    sources = [BTC_CSV, DEFECTS / "DOGE_USDT-5m.csv", DEFECTS / "SOL_USDT-5m.json",
               DEFECTS / "TRX_USDT-5m.feather", DEFECTS / "multi_symbol.parquet"]
    for i in range(40):
        src = rng.choice(sources)
        data = bytearray(src.read_bytes())
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            pos = rng.randrange(len(data))
            if op < 0.4:
                data[pos] = rng.randrange(256)
            elif op < 0.7:
                del data[pos : pos + rng.randint(1, 30)]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 10)))
        path = tmp_path / f"{i}" / src.name
        path.parent.mkdir()
        path.write_bytes(bytes(data))
        bars, q, report = read_market_file(path)
        check_invariant(bars, q, report)
        assert all(not math.isnan(v) for v in bars["close"].to_list())


def test_files_module_does_not_import_dagster():
    code = "import sys, clm.data.sources.files; assert 'dagster' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
