"""A small lake for the replay and offline-training tests: synthetic candles, their features and regimes, and
champion signals written as the consensus table (a noisy oracle of the next horizon's move, so the signals
carry an edge the tests can see)."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from clm.data.ingest import CANDLES
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.data.validation import validate_bars
from clm.features import FeatureConfig, compute_features, select_features
from clm.features.store import FEATURES
from clm.lake import Lake
from clm.regimes import classify_regimes
from clm.regimes.store import REGIMES

HORIZON = 12


def oracle_signals(candles: pl.DataFrame, *, accuracy: float, every: int = 3, seed: int = 0) -> pl.DataFrame:
    """consensus-shaped rows: every ``every``-th bar a long/short call that is right with probability ``accuracy``
    about the move from the entry (close of the next bar) to the horizon's close."""
    rng = np.random.default_rng(seed)
    frame = candles.sort("symbol", "timestamp").with_columns(
        (pl.col("close").shift(-(1 + HORIZON)).over("symbol") / pl.col("close").shift(-1).over("symbol"))
        .log().alias("move"),
        pl.int_range(pl.len()).over("symbol").alias("i"),
    ).filter((pl.col("i") % every == 0) & pl.col("move").is_not_null() & (pl.col("move") != 0))
    right = rng.random(frame.height) < accuracy
    truth = np.sign(frame["move"].to_numpy())
    calls = np.where(right, truth, -truth)
    confidence = rng.uniform(0.3, 1.0, frame.height)
    return frame.select(
        "symbol", "timestamp",
        pl.Series("score", calls * confidence), pl.Series("confidence", confidence),
        pl.Series("agreement", rng.uniform(0.5, 1.0, frame.height)),
        pl.Series("level", rng.choice(["weak", "moderate", "strong"], frame.height)),
        pl.Series("action", np.where(calls > 0, "long", "short")),
    )


def build_replay_lake(root, *, days: int = 6, symbols: int = 3, accuracy: float = 0.6) -> Lake:
    candles = validate_bars(SyntheticSource(SyntheticConfig(symbols=symbols, days=days, seed=7)).load().bars).candles
    selection = select_features(FeatureConfig(sets=("core31", "ta")), candles["symbol"].unique().to_list(), 300)
    features = compute_features(candles, selection, timeframe_seconds=300)
    regimes = classify_regimes(candles, timeframe_seconds=300)
    lake = Lake(root)
    day = pl.col("timestamp").dt.date().alias("date")
    for table, frame in ((CANDLES, candles), (FEATURES, features), (REGIMES, regimes)):
        lake.write_table(table, frame.with_columns(day), ["date"])
    signals = oracle_signals(candles, accuracy=accuracy)
    lake.write_table("consensus", signals.with_columns(day), ["date"])
    return lake


@pytest.fixture(scope="module")
def replay_lake(tmp_path_factory) -> Lake:
    return build_replay_lake(tmp_path_factory.mktemp("replay-lake"))


WHEN = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
