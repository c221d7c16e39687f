"""Real Binance 5-minute bars (tests/data/binance_spot_5m, 10 symbols, 20 days of January 2018): features
from the library, the detector between the first and the second half of the period, recorded into a
real DuckDB registry."""

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from scipy import stats

from clm.data.sources.files import FolderSource
from clm.data.validation import validate_bars
from clm.drift import DriftReference, Severity, detect_drift, load_drift_signal, record_drift, split_windows
from clm.features import FeatureConfig, compute_features, drop_warmup, infer_timeframe_seconds, select_features
from clm.lake import Lake
from clm.policy import DriftDetection
from clm.registry import open_registry

BINANCE = Path(__file__).parents[1] / "data" / "binance_spot_5m"


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    candles = validate_bars(FolderSource(BINANCE).load().bars).candles
    timeframe = infer_timeframe_seconds(candles)
    selection = select_features(FeatureConfig(), candles["symbol"].unique().to_list(), timeframe)
    return drop_warmup(compute_features(candles, selection, timeframe_seconds=timeframe)).collect()


def test_first_half_vs_second_half_writes_a_drift_event_with_per_feature_statistics(features, tmp_path):
    first, last = features["timestamp"].min(), features["timestamp"].max()
    middle = first + (last - first) / 2
    reference = features.filter(pl.col("timestamp") < middle)
    recent = features.filter(pl.col("timestamp") >= middle)
    fitted = DriftReference.fit(reference)
    assert len(fitted.names) == 56 and "symbol" not in fitted.names and "warm" not in fitted.names
    report = detect_drift(fitted, recent, DriftDetection(), model_types=["lightgbm_classifier", "lightgbm_regressor"],
                          detected_at=dt.datetime(2018, 1, 30, 5, tzinfo=dt.UTC))
    table = report.features
    assert table.height == 56 and report.features_tested == 56  # ~25k rows a side: every feature tested
    assert table["n_reference"].min() > 20_000 and table["n_recent"].min() > 20_000
    # statistics as scipy's on real data (ties included: prices repeat on 5-minute bars)
    for name in ("rsi_14", "bb_width", "day_of_week"):
        row = table.filter(pl.col("feature") == name).row(0, named=True)
        want = stats.ks_2samp(reference[name].drop_nulls().to_numpy(), recent[name].drop_nulls().to_numpy())
        assert row["ks_statistic"] == want.statistic
        assert row["ks_p_value"] == pytest.approx(want.pvalue, rel=0.02, abs=1e-300)

    lake = Lake(tmp_path / "lake")
    registry = open_registry(lake)
    event_id, signal = record_drift(registry, lake, report)
    (row,) = registry.rows("drift_events")
    assert row["event_id"] == event_id and row["severity"] == str(report.severity)
    per_feature = row["statistics"]["features"]
    assert sorted(per_feature) == sorted(fitted.names)
    assert set(per_feature["rsi_14"]) >= {"n_reference", "n_recent", "ks_statistic", "ks_p_value", "psi", "drifting",
                                          "reason"}
    assert row["features"] == report.drifting_features
    assert row["statistics"]["drift_share"] == pytest.approx(report.drift_share)
    # ten days of a 2018 market apart: volatility features moved most (D ~0.45); ~45% drift, HIGH today
    assert report.severity >= Severity.MEDIUM and "htf_1h_volatility_12" in report.drifting_features
    assert row["signal_file"] == str(signal)
    assert load_drift_signal(signal).features == tuple(report.drifting_features)


def test_policy_windows_on_real_features(features):
    windows = split_windows(features, DriftDetection(reference_days=7, recent_days=2))
    report = detect_drift(windows.reference, windows.recent, windows=windows)
    assert report.features_tested == 56
    assert report.recent_window == (windows.recent_start, windows.recent_end)
    assert windows.recent_end == features["timestamp"].max()
