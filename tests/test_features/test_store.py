"""The feature store: range-independent, byte-identical, versioned by definition."""

import datetime as dt
import hashlib

import duckdb
import polars as pl
import pytest

from clm.data import ingest
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.features import FeatureConfig, compute_features, select_features
from clm.features.store import (
    FEATURES,
    default_lookback_days,
    lookback_days,
    materialise_features,
    windowed,
)
from clm.labels import LabelConfig
from clm.labels.store import LABELS, lookahead_days, materialise_labels
from clm.lake import Lake

START = dt.date(2024, 1, 1)
DAYS = [START + dt.timedelta(days=i) for i in range(6)]


@pytest.fixture(scope="module")
def market_lake(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("store") / "lake")
    result = ingest.run_ingest(SyntheticSource(SyntheticConfig(symbols=3, days=6, seed=11)), "synthetic")
    ingest.write_ingest(lake, result, DAYS[0], DAYS[-1] + dt.timedelta(days=1))
    return lake


def _digests(lake: Lake, table: str, **partitions) -> dict[str, str]:
    return {str(p.relative_to(lake.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in lake.files(table, **partitions)}


def test_lookback_covers_the_warmup():
    selection = select_features(FeatureConfig(), ["A"], 300)
    days = lookback_days(selection, 300)
    assert days * 288 >= selection.warmup_bars(300) > (days - 1) * 288
    assert default_lookback_days() == days
    assert lookback_days(select_features(FeatureConfig(sets=("ta",)), ["A"], 3600), 3600) >= 561 * 3600 / 86400


def test_windowed_copies_each_bar_into_the_windows_that_need_it():
    bars = pl.DataFrame({"timestamp": [dt.datetime(2024, 1, d, 12, tzinfo=dt.UTC) for d in (1, 2, 3, 4)]})
    out = windowed(bars.lazy(), [dt.date(2024, 1, 3), dt.date(2024, 1, 4)], lookback=1).collect()
    pairs = sorted((r["timestamp"].day, r["__window"].day) for r in out.iter_rows(named=True))
    assert pairs == [(2, 3), (3, 3), (3, 4), (4, 4)]


def test_a_day_does_not_depend_on_the_range_it_was_materialised_with(market_lake):
    first = materialise_features(market_lake, DAYS, FeatureConfig())
    everything = _digests(market_lake, FEATURES, version=[first.version])
    assert first.rows == market_lake.read("candles").height
    for day in DAYS:  # now one day at a time
        materialise_features(market_lake, [day], FeatureConfig())
    assert _digests(market_lake, FEATURES, version=[first.version]) == everything
    # chunking is an implementation detail too
    materialise_features(market_lake, DAYS, FeatureConfig(), chunk_days=1)
    assert _digests(market_lake, FEATURES, version=[first.version]) == everything


def test_stored_days_equal_a_computation_on_the_day_and_its_lookback(market_lake):
    result = materialise_features(market_lake, DAYS, FeatureConfig())
    day = DAYS[4]
    stored = market_lake.read(FEATURES, date=[day]).sort("symbol", "timestamp")
    candles = market_lake.read("candles")
    window = candles.filter(pl.col("date").is_between(day - dt.timedelta(days=result.lookback_days), day))
    direct = compute_features(window, result.selection, timeframe_seconds=300)
    direct = direct.filter(pl.col("timestamp").dt.date() == day).sort("symbol", "timestamp")
    assert stored.select(direct.columns).equals(direct)
    assert stored["warm"].all()  # the lookback covers the warm-up


def test_a_changed_definition_writes_a_new_version_beside_the_old(market_lake):
    old = materialise_features(market_lake, DAYS, FeatureConfig())
    old_files = _digests(market_lake, FEATURES, version=[old.version])
    new = materialise_features(market_lake, DAYS[:2], FeatureConfig(sets=("ta",)))
    assert new.version != old.version
    assert set(market_lake.versions(FEATURES)) >= {old.version, new.version}
    assert market_lake.current_version(FEATURES) == new.version
    assert _digests(market_lake, FEATURES, version=[old.version]) == old_files  # untouched
    manifest = market_lake.version_manifest(FEATURES, new.version)
    assert manifest["sets"] == ["ta"] and len(manifest["features"]) == 13
    # readers and the catalog see the current version only
    assert "mom_5" not in market_lake.read(FEATURES).columns
    market_lake.refresh_catalog()
    con = duckdb.connect(str(market_lake.catalog_path), read_only=True)
    try:
        versions = con.execute("select distinct version from features").fetchall()
        columns = [c[0] for c in con.execute("describe features").fetchall()]
    finally:
        con.close()
    assert versions == [(new.version,)]
    assert "rsi_14" in columns and "mom_5" not in columns
    # going back to the old definition reuses (and reproduces) the old version
    again = materialise_features(market_lake, DAYS, FeatureConfig())
    assert again.version == old.version and market_lake.current_version(FEATURES) == old.version
    assert _digests(market_lake, FEATURES, version=[old.version]) == old_files


def test_labels_store_reads_ahead_and_keeps_every_candle(market_lake):
    materialise_features(market_lake, DAYS, FeatureConfig())
    config = LabelConfig()
    result = materialise_labels(market_lake, DAYS[:3], config)
    labels = market_lake.read(LABELS)
    candles = market_lake.read("candles").filter(pl.col("date").is_in(DAYS[:3]))
    assert labels.height == candles.height == result.rows
    assert lookahead_days(config, 300) == 1
    # the last bar of day 3 looks into day 4, which exists: its 48-bar label is valid
    last = labels.filter(pl.col("timestamp") == labels["timestamp"].max())
    assert last["forward_return_48"].is_not_null().all()
    assert last["label_end_48"].to_list()[0] == last["timestamp"].to_list()[0] + dt.timedelta(minutes=5 * 49)


def test_labels_without_atr_fail_with_a_clear_message(tmp_path):
    lake = Lake(tmp_path / "lake")
    result = ingest.run_ingest(SyntheticSource(SyntheticConfig(symbols=2, days=2)), "synthetic")
    ingest.write_ingest(lake, result, dt.date(2024, 1, 1), dt.date(2024, 1, 3))
    with pytest.raises(ValueError, match="atr_14"):
        materialise_labels(lake, [dt.date(2024, 1, 1)], LabelConfig())
    out = materialise_labels(lake, [dt.date(2024, 1, 1)], LabelConfig(triple_barrier=False))
    assert out.rows == 2 * 288


def test_overview_plot_is_a_png(market_lake):
    from clm.features.plots import feature_overview_plot

    result = materialise_features(market_lake, DAYS[-1:], FeatureConfig())
    frame = market_lake.read(FEATURES, date=[DAYS[-1]])
    assert feature_overview_plot(frame, result.selection.names)[:8] == b"\x89PNG\r\n\x1a\n"
