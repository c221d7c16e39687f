"""The classifier on real Binance 5m bars (no spreads, real gaps): valid labels, no degenerate mix."""

import polars as pl

from clm.regimes import CLASSES, RegimeConfig, classify_regimes, market_regime, warmup_bars


def test_real_bars_get_valid_non_degenerate_labels(binance_candles):
    out = classify_regimes(binance_candles)
    assert out.height == binance_candles.height
    out = out.with_columns(index=pl.int_range(pl.len()).over("symbol", "segment_id"))
    warmup = warmup_bars(RegimeConfig(), 300)
    # every row after the warm-up of its segment has a label, every row in it has none
    after = out.filter(pl.col("index") >= warmup)
    assert after["warm"].all() and after["regime"].null_count() == 0
    assert after["volatility_level"].null_count() == 0 and after["liquidity_level"].null_count() == 0
    assert set(after["regime"].unique()) <= set(CLASSES)
    cold = out.filter(pl.col("index") < warmup)
    assert cold["regime"].null_count() == cold.height and not cold["warm"].any()
    # not degenerate: no class takes more than 95% of the bars, overall or in any symbol
    shares = after["regime"].value_counts(normalize=True)
    assert shares["proportion"].max() < 0.95 and shares.height >= 3
    per_symbol = after.group_by("symbol", "regime").len().with_columns(
        share=pl.col("len") / pl.col("len").sum().over("symbol")
    )
    assert per_symbol["share"].max() < 0.95
    assert after["volatility_level"].value_counts(normalize=True)["proportion"].max() < 0.95
    assert market_regime(out)["market_regime"].drop_nulls().n_unique() >= 2


def test_segment_breaks_restart_the_warm_up(binance_candles):
    out = classify_regimes(binance_candles)
    warmup = warmup_bars(RegimeConfig(), 300)
    ada = out.filter(pl.col("symbol") == "ADA_BTC")
    segments = ada.group_by("segment_id", maintain_order=True).agg(
        pl.len().alias("bars"), pl.col("warm").arg_true().first().alias("first_warm")
    )
    assert segments.height == 3  # the fixture's ADA_BTC has two long gaps
    for bars, first_warm in segments.select("bars", "first_warm").iter_rows():
        assert first_warm == (warmup if bars > warmup else None)
