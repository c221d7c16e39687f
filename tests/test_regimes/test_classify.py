"""classify_regimes: labels in their sets, causal (prefix-cut), warm-up per segment, features reused."""

from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from clm.data.validation import validate_bars
from clm.features import compute_features
from clm.regimes import (
    CLASSES,
    LIQUIDITY_LEVELS,
    OUTPUT_COLUMNS,
    TREND_DIRECTIONS,
    VOLATILITY_LEVELS,
    RegimeConfig,
    classify_regimes,
    market_regime,
    warmup_bars,
)
from clm.regimes.classify import feature_selection

LABELS = ("regime", "trend_direction", "volatility_level", "liquidity_level", "regime_confidence")


def test_columns_and_label_sets(default_market, default_regimes):
    candles, _ = default_market
    out = default_regimes
    assert tuple(out.columns) == OUTPUT_COLUMNS
    assert out.height == candles.height
    keys = candles.select("symbol", "timestamp").sort("symbol", "timestamp")
    assert out.select("symbol", "timestamp").equals(keys)
    warm = out.filter("warm")
    assert set(warm["regime"].unique()) == set(CLASSES)
    assert set(warm["volatility_level"].unique()) == set(VOLATILITY_LEVELS)
    assert set(warm["liquidity_level"].unique()) == set(LIQUIDITY_LEVELS)
    assert set(warm["trend_direction"].drop_nulls().unique()) == set(TREND_DIRECTIONS)
    # direction exactly on trend rows
    assert warm.filter(pl.col("trend_direction").is_not_null() != (pl.col("regime") == "trend")).is_empty()
    labels = ("regime", "volatility_level", "liquidity_level", "regime_confidence")
    assert warm.select(pl.col(labels).null_count()).sum_horizontal().item() == 0
    assert warm["regime_confidence"].min() >= 0.0 and warm["regime_confidence"].max() <= 1.0
    # levels follow the trailing quantiles: LOW is the bottom quarter or so, EXTREME rare
    shares = warm["volatility_level"].value_counts(normalize=True).to_dict(as_series=False)
    share = dict(zip(shares["volatility_level"], shares["proportion"], strict=True))
    assert 0.1 < share["LOW"] < 0.45 and share["EXTREME"] < 0.1


def test_warm_up_rows_have_no_labels_and_are_flagged(default_regimes):
    out = default_regimes.with_columns(index=pl.int_range(pl.len()).over("symbol", "segment_id"))
    cold = out.filter(~pl.col("warm"))
    assert cold.select(pl.col(LABELS).null_count()).sum_horizontal().item() == cold.height * len(LABELS)
    assert cold["index"].max() < warmup_bars(RegimeConfig(), 300)
    assert out.filter(pl.col("index") >= warmup_bars(RegimeConfig(), 300))["warm"].all()


@pytest.mark.parametrize("cut_day", [3, 9, 20])
def test_prefix_cut_equals_the_full_computation(default_market, default_regimes, cut_day):
    """Regimes from bars before t equal the full run's rows before t, bit for bit: nothing looks ahead."""
    candles, _ = default_market
    cut = candles["timestamp"].min() + timedelta(days=cut_day, hours=7, minutes=35)
    prefix = classify_regimes(candles.filter(pl.col("timestamp") < cut), timeframe_seconds=300)
    assert_frame_equal(prefix, default_regimes.filter(pl.col("timestamp") < cut), check_exact=True)
    assert_frame_equal(
        market_regime(prefix),
        market_regime(default_regimes).filter(pl.col("timestamp") < cut),
        check_exact=True,
    )


def test_given_features_give_the_same_result(default_market, default_regimes):
    candles, _ = default_market
    features = compute_features(candles, feature_selection(300), timeframe_seconds=300)
    assert_frame_equal(classify_regimes(candles, features=features), default_regimes, check_exact=True)
    # a wider feature frame in another row order is joined, not stacked
    shuffled = features.sample(fraction=1.0, shuffle=True, seed=1)
    assert_frame_equal(classify_regimes(candles, features=shuffled), default_regimes, check_exact=True)


def test_a_segment_break_restarts_the_warm_up_and_forgets_the_past(make_market):
    candles, _ = make_market(symbols=2, days=8)
    start = candles["timestamp"].min()
    gap = (pl.col("symbol") == "SYN001USD") & pl.col("timestamp").is_between(
        start + timedelta(days=3), start + timedelta(days=3, hours=6), closed="left"
    )
    raw = candles.filter(~gap).select(
        pl.lit("test").alias("source_file"),
        pl.int_range(pl.len()).cast(pl.Int64).alias("source_row"),
        "symbol", "timestamp", "open", "high", "low", "close", "volume", "spread_bps",
    )
    broken = validate_bars(raw).candles
    assert broken.filter(pl.col("symbol") == "SYN001USD")["segment_id"].n_unique() == 2
    out = classify_regimes(broken)
    second = out.filter(pl.col("symbol") == "SYN001USD", pl.col("segment_id") == 1)
    warmup = warmup_bars(RegimeConfig(), 300)
    assert not second.head(warmup)["warm"].any() and second.slice(warmup)["warm"].all()
    # the second segment is labelled as if the first had never existed
    alone = classify_regimes(broken.filter(pl.col("symbol") == "SYN001USD", pl.col("segment_id") == 1))
    assert_frame_equal(alone, second, check_exact=True)
    # the other symbol is untouched by its neighbour's gap
    assert_frame_equal(
        out.filter(pl.col("symbol") == "SYN000USD"),
        classify_regimes(candles.filter(pl.col("symbol") == "SYN000USD")),
        check_exact=True,
    )


def test_lazy_input_and_missing_spread_are_accepted(default_market):
    candles, _ = default_market
    small = candles.filter(pl.col("symbol").is_in(["SYN000USD", "SYN001USD"]))
    lazy = classify_regimes(small.lazy())
    assert_frame_equal(lazy, classify_regimes(small), check_exact=True)
    no_spread = classify_regimes(small.with_columns(pl.lit(None, pl.Float64).alias("spread_bps")))
    assert no_spread["spread_z"].null_count() == no_spread.height
    assert no_spread.filter("warm")["regime"].null_count() == 0


def test_errors_name_what_is_missing(default_market):
    candles, _ = default_market
    with pytest.raises(ValueError, match=r"candles lack column\(s\) \['volume'\]"):
        classify_regimes(candles.drop("volume"))
    with pytest.raises(ValueError, match=r"features lack column\(s\) \['mom_50'\]"):
        classify_regimes(candles, features=candles.select("symbol", "timestamp", pl.lit(1.0).alias("adx_14")))
    with pytest.raises(ValueError, match="timeframe_seconds must be an int > 0"):
        classify_regimes(candles, timeframe_seconds=0)
