"""End to end through clm.data.ingest: real data, the defect corpus, vendors, idempotent writes."""

import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from clm.cli import main as clm_main
from clm.data import ingest
from clm.data.integrity import integrity_report
from clm.data.sources import open_source, source_date_range
from clm.data.sources.files import FolderSource
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.lake import Lake

DATA = Path(__file__).parents[1] / "data"
EXPECTED = json.loads((DATA / "defects" / "EXPECTED.json").read_text())


@pytest.fixture(scope="module")
def binance():
    return ingest.run_ingest(FolderSource(DATA / "binance_spot_5m"), "binance")


def test_real_binance_pairs_all_land_and_ada_gaps_are_repaired_or_split(binance):
    candles = binance.validation.candles
    assert sorted(candles["symbol"].unique()) == [
        "ADA_BTC", "DASH_BTC", "ETC_BTC", "ETH_BTC", "LTC_BTC", "NXT_BTC", "TRX_BTC", "XLM_BTC", "XMR_BTC", "ZEC_BTC"
    ]
    ada = binance.validation.gaps.filter(pl.col("symbol") == "ADA_BTC")
    minutes = ada.with_columns(
        minutes=(pl.col("gap_end") - pl.col("gap_start")).dt.total_minutes()
    ).select("minutes", "missing_bars", "action").sort("minutes").rows()
    assert (10, 1, "filled") in minutes
    assert (25, 4, "segment_break") in minutes
    assert (170, 33, "segment_break") in minutes
    ada_candles = candles.filter(pl.col("symbol") == "ADA_BTC")
    assert ada_candles["segment_id"].max() == 2
    filled = ada_candles.filter(pl.col("is_filled"))
    assert filled.height >= 1 and (filled["volume"] == 0).all()
    assert binance.rows_read == binance.rows_kept + binance.rows_quarantined


def test_integrity_report_lists_the_ada_segment_breaks(binance):
    v = binance.validation
    report = integrity_report(v.candles, v.gaps, binance.quarantine, v.mismatches)
    ada = next(s for s in report["per_symbol"] if s["symbol"] == "ADA_BTC")
    assert ada["gaps_segment_breaks"] == 2 and ada["segments"] == 3
    assert ada["longest_gap_minutes"] == 170
    assert ada["filled_bars"] >= 1
    listed = [(b["minutes"], b["missing_bars"]) for b in report["segment_breaks"] if b["symbol"] == "ADA_BTC"]
    assert listed == [(25.0, 4), (170.0, 33)]
    assert report["totals"]["bars"] == v.candles.height


def test_defect_corpus_every_bad_row_has_its_reason_and_counts_add_up():
    result = ingest.run_ingest(FolderSource(DATA / "defects"), "defects")
    assert result.rows_read == result.rows_kept + result.rows_quarantined
    reasons = Counter(
        r.split(":")[0] for r in result.quarantine["reason"].to_list()
    )
    expected = Counter()
    for entry in EXPECTED["files"].values():
        expected.update(entry["source"])
        expected.update(entry["validation_expected"])
    assert reasons == expected
    errors = {f.path: f.error for f in result.file_errors}
    for name, entry in EXPECTED["files"].items():
        if entry["file_error"]:
            assert name in errors[name], errors[name]  # the message names the file
    # every validation-stage row points back at its file and row
    stage = result.quarantine.filter(pl.col("stage") == "validate")
    assert stage["source_file"].null_count() == 0 and stage["row"].null_count() == 0


def test_two_vendors_disagreeing_are_reported(tmp_path):
    times = [dt.datetime(2024, 1, 1, 0, 5 * i) for i in range(6)]
    base = pl.DataFrame({"date": times, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "volume": 5.0})
    base.write_csv(tmp_path / "a_AAA-5m.csv")
    other = base.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(100.9).otherwise(pl.col("close")).alias("close"))
    other.write_csv(tmp_path / "b_AAA-5m.csv")
    source = FolderSource(tmp_path, symbol="AAA")
    result = ingest.run_ingest(source, "vendors")
    assert result.validation.candles.height == 6
    assert Counter(result.quarantine["reason"]) == {"duplicate_from_other_source": 6}
    mismatch = result.validation.mismatches
    assert mismatch.height == 1 and mismatch["field"].item() == "close"
    assert result.rows_read == 12 == result.rows_kept + result.rows_quarantined


def test_writing_a_window_twice_gives_identical_bytes(tmp_path):
    lake = Lake(tmp_path)
    result = ingest.run_ingest(SyntheticSource(SyntheticConfig(symbols=2, days=3)), "synthetic")
    start, end = dt.date(2024, 1, 1), dt.date(2024, 1, 4)

    def digest():
        return {str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest()
                for t in lake.tables() for p in lake.files(t)}

    ingest.write_ingest(lake, result, start, end)
    first = digest()
    ingest.write_ingest(lake, result, dt.date(2024, 1, 2), dt.date(2024, 1, 3))
    ingest.write_ingest(lake, result, start, end)
    assert digest() == first
    assert lake.read("candles").height == 2 * 3 * 288


def test_source_specs(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    monkeypatch.setenv("CLM_SYNTH_DAYS", "5")
    assert source_date_range("synthetic", lake) == (dt.date(2024, 1, 1), dt.date(2024, 1, 5))
    assert source_date_range(str(DATA / "binance_spot_5m"), lake) == (dt.date(2018, 1, 10), dt.date(2018, 1, 30))
    _, source_id = open_source(str(DATA / "binance_spot_5m"), lake)
    assert source_id.startswith("files-")
    with pytest.raises(FileNotFoundError, match="no/such/folder"):
        open_source("no/such/folder", lake)


def test_clm_sql_queries_the_lake(tmp_path, monkeypatch, capsys):
    lake = Lake(tmp_path)
    lake.write_table("universe", pl.DataFrame({"symbol": ["AAA", "BBB"]}))
    monkeypatch.setenv("CLM_LAKE", str(tmp_path))
    assert clm_main(["sql", "select count(*) as n from universe"]) == 0
    assert "2" in capsys.readouterr().out
    assert clm_main(["sql", "select * from no_such_table"]) == 2
    assert "no_such_table" in capsys.readouterr().err


def test_clm_run_refuses_a_missing_dagster_home(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLM_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "missing"))
    assert clm_main(["ingest", str(DATA / "binance_spot_5m")]) == 2
    assert "make run" in capsys.readouterr().err
