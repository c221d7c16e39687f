"""The synthetic market must be deterministic and must actually show the regimes it claims.

Downstream tests (regime detection, drift alarms, liquidity filters) trust this ground truth, so
the statistical checks here are what make those tests meaningful.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import cache

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from clm.data.schema import RAW_BAR_SCHEMA, REGIME_SCHEMA, REGIMES, SYMBOL_PATTERN
from clm.data.sources.base import SourceBatch
from clm.data.sources.synthetic import (
    SyntheticConfig,
    SyntheticSource,
    _garch_params,
    _garch_variance,
    synthetic_symbols,
)


@cache
def _load(config: SyntheticConfig) -> SourceBatch:
    return SyntheticSource(config).load()


@cache
def _default() -> SourceBatch:
    return _load(SyntheticConfig())


@cache
def _with_regime_and_returns() -> pl.DataFrame:
    batch = _default()
    return (
        batch.bars.join(batch.regimes, on="timestamp", how="left")
        .with_columns(log_return=pl.col("close").log().diff().over("symbol"))
        .drop_nulls("log_return")
    )


def _first(batch: SourceBatch, symbols: list[str], bars: int) -> pl.DataFrame:
    return batch.bars.filter(pl.col("symbol").is_in(symbols), pl.col("source_row") <= bars)


# ---------------------------------------------------------------------------------------------
# Determinism and contracts
# ---------------------------------------------------------------------------------------------


def test_same_config_gives_identical_frames():
    config = SyntheticConfig(symbols=4, days=3, seed=7)
    first, second = SyntheticSource(config).load(), SyntheticSource(config).load()
    assert_frame_equal(first.bars, second.bars)
    assert_frame_equal(first.regimes, second.regimes)


def test_different_seed_gives_different_prices():
    first = _load(SyntheticConfig(symbols=2, days=2, seed=1))
    second = _load(SyntheticConfig(symbols=2, days=2, seed=2))
    assert not first.bars["close"].equals(second.bars["close"])


def test_symbols_do_not_depend_on_how_many_are_generated():
    few = _load(SyntheticConfig(symbols=3, days=4))
    many = _load(SyntheticConfig(symbols=9, days=4))
    assert_frame_equal(_first(many, synthetic_symbols(3), few.bars.height), few.bars)
    assert_frame_equal(many.regimes, few.regimes)


@pytest.mark.parametrize("shift", [None, 6])
def test_a_longer_run_extends_a_shorter_one(shift):
    short = _load(SyntheticConfig(symbols=3, days=7, regime_shift_day=shift))
    long = _load(SyntheticConfig(symbols=3, days=12, regime_shift_day=shift))
    per_symbol = short.bars.height // 3
    assert_frame_equal(_first(long, synthetic_symbols(3), per_symbol), short.bars)
    assert_frame_equal(long.regimes.head(per_symbol), short.regimes)


def test_batch_contract_and_dtypes():
    batch = _default()
    config = SyntheticConfig()
    assert batch.source == "synthetic" == SyntheticSource.name
    assert dict(batch.bars.schema) == RAW_BAR_SCHEMA
    assert dict(batch.regimes.schema) == REGIME_SCHEMA
    assert batch.quarantine.is_empty()
    assert batch.files == []
    assert batch.rows_read == batch.bars.height == config.bars_per_symbol * config.symbols
    assert batch.bars["source_file"].unique().to_list() == ["synthetic"]
    assert batch.bars["symbol"].unique(maintain_order=True).to_list() == synthetic_symbols(10)
    rows = batch.bars.group_by("symbol").agg(
        pl.col("source_row").min().alias("first"), pl.col("source_row").max().alias("last"), pl.len()
    )
    assert (rows["first"] == 1).all()
    assert (rows["last"] == config.bars_per_symbol).all()
    assert (rows["len"] == config.bars_per_symbol).all()
    assert batch.bars.null_count().sum_horizontal().item() == 0


def test_symbol_names_are_safe_unique_and_stable():
    names = synthetic_symbols(1200)
    assert names[:3] == ["SYN000USD", "SYN001USD", "SYN002USD"]
    assert len(set(names)) == 1200
    assert all(SYMBOL_PATTERN.match(name) for name in names)
    assert synthetic_symbols(5) == names[:5]


def test_ohlc_is_consistent_positive_and_continuous():
    bars = _default().bars
    checks = bars.select(
        high_covers_body=(pl.col("high") >= pl.max_horizontal("open", "close")).all(),
        low_covers_body=(pl.col("low") <= pl.min_horizontal("open", "close")).all(),
        positive_prices=(pl.col("low") > 0).all(),
        positive_volume=(pl.col("volume") > 0).all(),
        positive_spread=(pl.col("spread_bps") > 0).all(),
        finite=pl.all_horizontal(pl.col(pl.Float64).is_finite()).all(),
    )
    assert checks.row(0, named=True) == dict.fromkeys(checks.columns, True)
    # Open of bar t is within a small gap of the close of bar t-1.
    gap_bps = (
        bars.select((pl.col("open") / pl.col("close").shift(1)).log().abs().over("symbol") * 1e4)
        .to_series()
        .drop_nulls()
    )
    assert gap_bps.median() < 2.0
    assert gap_bps.quantile(0.999) < 100.0
    # Extremes actually extend beyond the body on almost every bar.
    strictly_wider = bars.select((pl.col("high") > pl.max_horizontal("open", "close")).mean()).item()
    assert strictly_wider > 0.99


def test_prices_span_plausible_levels():
    closes = _load(SyntheticConfig(symbols=40, days=2)).bars.group_by("symbol").agg(pl.col("close").first())
    assert closes["close"].min() < 1.0
    assert closes["close"].max() > 1000.0
    assert closes["close"].min() > 0.01
    assert closes["close"].max() < 100_000.0


def test_bars_are_aligned_utc_and_without_gaps():
    batch = _default()
    config = SyntheticConfig()
    step = pl.duration(seconds=config.timeframe_seconds)
    checks = batch.bars.group_by("symbol").agg(
        pl.col("timestamp").first().alias("first"),
        (pl.col("timestamp").diff().drop_nulls() == step).all().alias("regular"),
    )
    assert checks["regular"].all()
    assert (checks["first"] == datetime(2024, 1, 1, tzinfo=timezone.utc)).all()
    epoch_us = batch.bars["timestamp"].dt.epoch("us")
    assert (epoch_us % (config.timeframe_seconds * 1_000_000) == 0).all()
    one_symbol = batch.bars.filter(pl.col("symbol") == "SYN000USD")["timestamp"]
    assert batch.regimes["timestamp"].equals(one_symbol)


def test_hourly_timeframe():
    config = SyntheticConfig(symbols=3, days=5, timeframe="1h", start=date(2023, 3, 26))
    batch = _load(config)
    assert config.timeframe_seconds == 3600
    assert config.bars_per_symbol == 120
    assert batch.bars.height == 360
    diffs = batch.bars.filter(pl.col("symbol") == "SYN001USD")["timestamp"].diff().drop_nulls()
    assert (diffs == timedelta(hours=1)).all()
    assert batch.bars["timestamp"].min() == datetime(2023, 3, 26, tzinfo=timezone.utc)
    assert batch.regimes.height == 120


@pytest.mark.parametrize(
    ("timeframe", "seconds"),
    [("1m", 60), ("5m", 300), ("15m", 900), ("30m", 1800), ("1h", 3600), ("4h", 14400), ("1d", 86400)],
)
def test_timeframes_parse(timeframe, seconds):
    config = SyntheticConfig(symbols=1, days=2, timeframe=timeframe)
    assert config.timeframe_seconds == seconds
    assert config.bars_per_symbol == 2 * 86400 // seconds


# ---------------------------------------------------------------------------------------------
# The market model shows what it claims
# ---------------------------------------------------------------------------------------------


def test_every_regime_appears_in_a_default_run():
    assert set(_default().regimes["regime"].unique()) == set(REGIMES)


def test_regimes_are_persistent():
    regimes = _default().regimes["regime"]
    switches = (regimes != regimes.shift(1)).sum()
    assert switches < regimes.len() / 20


def test_panic_is_more_volatile_and_more_correlated_than_range():
    frame = _with_regime_and_returns()
    vol = frame.group_by("regime").agg(pl.col("log_return").std())
    vol = dict(zip(vol["regime"], vol["log_return"], strict=True))
    assert vol["panic"] > 2.5 * vol["range"]

    wide = frame.pivot(on="symbol", index=["timestamp", "regime"], values="log_return").drop_nulls()

    def mean_pairwise_correlation(regime: str) -> float:
        matrix = wide.filter(pl.col("regime") == regime).drop("timestamp", "regime").to_numpy()
        correlation = np.corrcoef(matrix.T)
        return float(correlation[np.triu_indices_from(correlation, k=1)].mean())

    panic, calm = mean_pairwise_correlation("panic"), mean_pairwise_correlation("range")
    assert panic > 0.7
    assert panic > calm + 0.4


def test_illiquid_regime_widens_spreads_and_thins_volume():
    frame = _with_regime_and_returns()
    by_regime = frame.group_by("symbol", "regime").agg(
        pl.col("spread_bps").median(), (pl.col("volume") * pl.col("close")).median().alias("quote")
    )
    wide = by_regime.pivot(on="regime", index="symbol", values=["spread_bps", "quote"])
    assert (wide["spread_bps_illiquid"] > 2.0 * wide["spread_bps_range"]).all()
    assert (wide["spread_bps_illiquid"] > 1.5 * wide["spread_bps_trend_up"]).all()
    assert (wide["quote_illiquid"] < 0.5 * wide["quote_range"]).all()


def test_liquidity_tiers_include_thin_symbols():
    medians = _default().bars.group_by("symbol").agg(pl.col("spread_bps").median())["spread_bps"]
    assert (medians > 50).sum() >= 1
    assert (medians < 20).sum() > medians.len() / 2


def test_intraday_volume_is_seasonal():
    bars = _default().bars.with_columns(
        hour=pl.col("timestamp").dt.hour(), quote=pl.col("volume") * pl.col("close")
    )
    by_hour = (
        bars.group_by("symbol", "hour")
        .agg(pl.col("quote").mean())
        .with_columns(pl.col("quote") / pl.col("quote").mean().over("symbol"))
        .group_by("hour")
        .agg(pl.col("quote").median())
        .sort("hour")["quote"]
        .to_numpy()
    )
    assert by_hour.max() > 1.8 * by_hour.min()
    assert by_hour[[0, 23]].mean() > by_hour[[11, 12]].mean()  # U-shape over the UTC day


def test_volatility_clusters():
    # Divide out regime and hour-of-day effects first: they alone would make |returns| autocorrelated.
    frame = _with_regime_and_returns().with_columns(
        size=pl.col("log_return").abs(), hour=pl.col("timestamp").dt.hour()
    )
    frame = frame.with_columns(size=pl.col("size") / pl.col("size").mean().over("symbol", "regime", "hour"))
    lag = 6
    autocorrelations = [
        np.corrcoef(series[:-lag], series[lag:])[0, 1]
        for series in (group.sort("timestamp")["size"].to_numpy() for _, group in frame.group_by("symbol"))
    ]
    assert np.mean(autocorrelations) > 0.05
    assert min(autocorrelations) > 0.0


def test_garch_recursion_matches_a_plain_loop():
    shocks = np.random.default_rng(3).standard_normal((2, 700))
    for bar_hours in (1 / 60, 1.0, 24.0):
        alpha, beta = _garch_params(bar_hours)
        expected = np.ones_like(shocks)
        for t in range(1, shocks.shape[1]):
            expected[:, t] = (1 - alpha - beta) + (alpha * shocks[:, t - 1] ** 2 + beta) * expected[:, t - 1]
        np.testing.assert_allclose(_garch_variance(shocks, alpha, beta), expected, rtol=1e-10)
        np.testing.assert_allclose(_garch_variance(shocks[1], alpha, beta), expected[1], rtol=1e-10)


def test_regime_shift_makes_the_market_panic_heavy():
    plain = _load(SyntheticConfig(symbols=3, days=30))
    shifted = _load(SyntheticConfig(symbols=3, days=30, regime_shift_day=15))
    half = plain.regimes.height // 2
    assert_frame_equal(shifted.regimes.head(half), plain.regimes.head(half))
    assert_frame_equal(_first(shifted, synthetic_symbols(3), half), _first(plain, synthetic_symbols(3), half))
    after = shifted.regimes.slice(half)
    assert after["regime"][0] == "panic"
    panic_share = (after["regime"] == "panic").mean()
    assert panic_share > 0.2
    assert panic_share > 4 * (plain.regimes["regime"] == "panic").mean()


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def test_from_env_reads_every_variable():
    config = SyntheticConfig.from_env(
        {
            "CLM_SYNTH_SYMBOLS": "25",
            "CLM_SYNTH_DAYS": "90",
            "CLM_SYNTH_TIMEFRAME": "15m",
            "CLM_SYNTH_SEED": "123",
            "CLM_SYNTH_START": "2023-06-01",
            "CLM_SYNTH_SHIFT_DAY": "60",
        }
    )
    assert config == SyntheticConfig(
        symbols=25, days=90, timeframe="15m", seed=123, start=date(2023, 6, 1), regime_shift_day=60
    )


def test_from_env_defaults_when_unset_or_empty():
    assert SyntheticConfig.from_env({}) == SyntheticConfig()
    assert SyntheticConfig.from_env({"CLM_SYNTH_DAYS": " ", "CLM_SYNTH_SHIFT_DAY": ""}) == SyntheticConfig()


def test_from_env_uses_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("CLM_SYNTH_SYMBOLS", "3")
    assert SyntheticConfig.from_env().symbols == 3


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("CLM_SYNTH_DAYS", "abc", "integer"),
        ("CLM_SYNTH_DAYS", "0", "1 to 3660"),
        ("CLM_SYNTH_SYMBOLS", "5001", "1 to 5000"),
        ("CLM_SYNTH_SYMBOLS", "1.5", "integer"),
        ("CLM_SYNTH_TIMEFRAME", "7m", "divides one day"),
        ("CLM_SYNTH_TIMEFRAME", "5 minutes", "<n>m"),
        ("CLM_SYNTH_SEED", "-1", "from 0"),
        ("CLM_SYNTH_START", "2024-13-01", "YYYY-MM-DD"),
        ("CLM_SYNTH_SHIFT_DAY", "30", "0 to 29"),
    ],
)
def test_from_env_errors_name_variable_value_and_allowed(variable, value, allowed):
    with pytest.raises(ValueError) as error:
        SyntheticConfig.from_env({variable: value})
    message = str(error.value)
    assert variable in message
    assert repr(value) in message
    assert allowed in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"symbols": 0}, "symbols=0"),
        ({"days": 3661}, "days=3661"),
        ({"days": 2.0}, "not an integer"),
        ({"timeframe": "2d"}, "timeframe='2d'"),
        ({"timeframe": "5x"}, "timeframe='5x'"),
        ({"seed": True}, "seed=True"),
        ({"start": datetime(2024, 1, 1, 12)}, "not a date"),
        ({"days": 10, "regime_shift_day": 10}, "regime_shift_day=10"),
    ],
)
def test_config_rejects_bad_values(kwargs, fragment):
    with pytest.raises(ValueError) as error:
        SyntheticConfig(**kwargs)
    assert fragment in str(error.value)
