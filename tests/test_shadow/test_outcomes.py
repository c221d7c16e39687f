"""Closing shadow predictions: only labels whose horizon has closed, the trade training's evaluation would
take, costs exactly as trade_costs charges them, rows in the registry's shadow_test_results columns."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from clm.evaluation.costs import CostConfig, trade_costs
from clm.labels import LabelConfig
from clm.labels.forward import build_labels
from clm.lake import Lake
from clm.registry import LOG_TABLES, DuckDBRegistry
from clm.shadow import (
    SHADOW_PREDICTIONS_SCHEMA,
    append_results,
    close_outcomes,
    close_signals,
    read_open_predictions,
    read_results,
    write_open_predictions,
)

H = 3
TF = 300
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
UTC = pl.Datetime("us", "UTC")


@pytest.fixture(scope="module")
def market():
    rng = np.random.default_rng(0)
    frames = []
    for k, symbol in enumerate(("AAA", "BBB")):
        n = 200
        close = 100 * (1 + k) * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
        spread = np.abs(rng.normal(0, 0.002, n))
        frames.append(pl.DataFrame({
            "symbol": [symbol] * n,
            "timestamp": [START + dt.timedelta(seconds=TF * i) for i in range(n)],
            "open": close, "high": close * (1 + spread), "low": close * (1 - spread), "close": close,
            "volume": rng.uniform(50, 150, n), "segment_id": [0] * n, "is_filled": [False] * n,
        }).with_columns(pl.col("timestamp").cast(UTC), pl.col("segment_id").cast(pl.Int32),
                        (pl.col("volume") * pl.col("close")).alias("quote_volume")))
    candles = pl.concat(frames)
    labels = build_labels(candles, LabelConfig(horizons=(H,), triple_barrier=False))
    return candles, labels


def open_predictions(candles: pl.DataFrame, *, first_bar: int = 30, challenger: str = "chal") -> pl.DataFrame:
    rng = np.random.default_rng(1)
    rows = candles.filter(pl.col("timestamp") >= START + dt.timedelta(seconds=TF * first_bar)).select(
        "symbol", "timestamp")
    n = rows.height
    champion_signal = rng.uniform(-1, 1, n)
    challenger_signal = rng.uniform(-1, 1, n)
    champion_edge = champion_signal * 60  # bps: most clear the costs
    challenger_edge = challenger_signal * 60
    challenger_edge[::5] = np.sign(challenger_signal[::5]) * 0.5  # a tiny edge: not worth the costs
    champion_signal[7] = np.nan  # the champion abstained once
    return rows.with_columns(
        pl.lit(H, pl.Int64).alias("horizon"), pl.lit("champ").alias("champion_id"),
        pl.lit(challenger).alias("challenger_id"),
        pl.Series("champion_prediction", champion_signal * 0.01, nan_to_null=True),
        pl.Series("challenger_prediction", challenger_signal * 0.01),
        pl.Series("champion_signal", champion_signal, nan_to_null=True),
        pl.Series("challenger_signal", challenger_signal),
        pl.Series("champion_edge_bps", champion_edge, nan_to_null=True),
        pl.Series("challenger_edge_bps", challenger_edge),
        pl.lit(START).cast(UTC).alias("predicted_at"),
    ).select(list(SHADOW_PREDICTIONS_SCHEMA))


def expected_nets(candles, labels, preds, role: str, config: CostConfig) -> pl.DataFrame:
    """What training's evaluation would charge and earn, computed on the whole candle history."""
    signal = pl.col(f"{role}_signal")
    bars = candles.join(preds.select("symbol", "timestamp", signal.sign().fill_null(0.0).alias("position"),
                                     pl.col(f"{role}_edge_bps").fill_null(0.0).alias("edge_bps")),
                        on=["symbol", "timestamp"], how="left").with_columns(
        pl.col("position").fill_null(0.0), pl.col("edge_bps").fill_null(0.0))
    costed = trade_costs(bars, config, notional=10_000.0, holding_bars=H, timeframe_seconds=TF, latency_bars=1)
    out = preds.join(costed.select("symbol", "timestamp", "total_cost_bps", "tradable"), on=["symbol", "timestamp"])
    out = out.join(labels.select("symbol", "timestamp", pl.col(f"forward_return_{H}").alias("r")),
                   on=["symbol", "timestamp"])
    position = pl.when(pl.col("tradable") & signal.is_not_null()).then(signal.sign()).otherwise(0.0)
    return out.select("symbol", "timestamp", position.alias("position"),
                      pl.when(position != 0).then(position * pl.col("r") - pl.col("total_cost_bps") * 1e-4)
                      .otherwise(0.0).alias("net"))


def test_only_labels_whose_horizon_has_closed_are_closed(market):
    candles, labels = market
    preds = open_predictions(candles)
    as_of = START + dt.timedelta(seconds=TF * 150)
    closed = close_outcomes(preds, labels, candles, cost_config=CostConfig(), as_of=as_of,
                            recorded_at=START + dt.timedelta(days=1))
    assert closed.columns == list(LOG_TABLES["shadow_test_results"])
    # decided at bar t, entered at t+1, out at t+1+H: closed iff that exit bar is at or before as_of
    last = as_of - dt.timedelta(seconds=TF * (1 + H))
    assert closed["timestamp"].max() == last
    assert closed.height == preds.filter(pl.col("timestamp") <= last).height
    assert (closed["closed_at"] == closed["timestamp"] + dt.timedelta(seconds=TF * (2 + H))).all()
    assert closed["result_id"].is_null().all() and closed["horizon"].unique().to_list() == [H]
    # the newest candle is the default as_of: every labelled bar closes, the last 1 + H per symbol never
    everything = close_outcomes(preds, labels, candles)
    newest = candles["timestamp"].max()
    assert everything["timestamp"].max() == newest - dt.timedelta(seconds=TF * (1 + H))
    assert everything.height == preds.height - 2 * (1 + H)


def test_positions_and_net_returns_follow_trade_costs(market):
    candles, labels = market
    preds = open_predictions(candles)
    config = CostConfig(min_edge_after_cost_bps=1.0)
    closed = close_outcomes(preds, labels, candles, cost_config=config)
    joined = closed.join(labels.select("symbol", "timestamp", pl.col(f"forward_return_{H}").alias("r")),
                         on=["symbol", "timestamp"])
    assert joined["outcome_return"].to_list() == joined["r"].to_list()
    for role in ("champion", "challenger"):
        want = expected_nets(candles, labels, preds, role, config)
        got = closed.select("symbol", "timestamp", f"{role}_signal", f"{role}_net_return").join(
            want, on=["symbol", "timestamp"])
        assert got.height == closed.height
        assert got[f"{role}_signal"].to_list() == got["position"].to_list()
        assert got[f"{role}_net_return"].to_numpy() == pytest.approx(got["net"].to_numpy(), rel=1e-12, abs=1e-15)
    # tiny edges stay flat (and earn exactly 0), the abstention too; real edges trade
    tiny = closed.join(preds.filter(pl.col("challenger_edge_bps").abs() < 1).select("symbol", "timestamp"),
                       on=["symbol", "timestamp"])
    assert tiny.height > 10 and (tiny["challenger_signal"] == 0).all() and (tiny["challenger_net_return"] == 0).all()
    abstained = closed.join(preds.filter(pl.col("champion_signal").is_null()).select("symbol", "timestamp"),
                            on=["symbol", "timestamp"])
    assert abstained.height == 1 and abstained["champion_signal"][0] == 0 and abstained["champion_net_return"][0] == 0
    assert (closed["champion_signal"] != 0).mean() > 0.3  # edges of up to 60 bps against ~35 bps of costs


def test_already_closed_bars_are_not_closed_again_and_results_round_trip(market, tmp_path):
    candles, labels = market
    preds = open_predictions(candles)
    registry = DuckDBRegistry(tmp_path / "registry.duckdb")
    first = close_outcomes(preds, labels, candles, as_of=START + dt.timedelta(seconds=TF * 100))
    assert append_results(registry, first) == first.height
    stored = read_results(registry, challenger_id="chal")
    assert stored.height == first.height and stored["result_id"].to_list() == list(range(1, first.height + 1))
    assert stored.drop("result_id", "recorded_at").sort("symbol", "timestamp").equals(
        first.drop("result_id", "recorded_at").sort("symbol", "timestamp"))
    rest = close_outcomes(preds, labels, candles, already_closed=stored)
    assert rest.join(stored, on=["symbol", "timestamp"], how="semi").is_empty()
    assert rest.height + first.height == close_outcomes(preds, labels, candles).height
    assert close_outcomes(preds, labels, candles, already_closed=pl.concat([stored, rest])).is_empty()


def test_close_signals_refuses_what_it_cannot_close(market):
    candles, labels = market
    one = pl.DataFrame({"symbol": ["AAA", "AAA"], "timestamp": [START, START], "signal": [0.5, 0.5],
                        "edge_bps": [10.0, 10.0]}).with_columns(pl.col("timestamp").cast(UTC))
    with pytest.raises(ValueError, match="twice"):
        close_signals(one, labels, candles, horizon=H)
    with pytest.raises(ValueError, match="forward_return_7"):
        close_signals(one.head(1), labels, candles, horizon=7)
    with pytest.raises(ValueError, match="edge_bps"):
        close_signals(one.head(1).drop("edge_bps"), labels, candles, horizon=H)
    assert close_signals(one.head(0), labels, candles, horizon=H).is_empty()


def test_open_predictions_merge_by_date_and_keep_the_first_prediction(market, tmp_path):
    candles, _labels = market
    lake = Lake(tmp_path / "lake")
    preds = open_predictions(candles)
    early, late = preds.filter(pl.col("timestamp").dt.hour() < 10), preds.filter(pl.col("timestamp").dt.hour() >= 10)
    write_open_predictions(lake, early)
    write_open_predictions(lake, late)
    again = preds.with_columns(pl.col("champion_signal") * 0.5, pl.lit(START + dt.timedelta(days=2)).cast(UTC)
                               .alias("predicted_at"))
    write_open_predictions(lake, again)  # a re-run predicting the same bars later changes nothing
    other = preds.head(10).with_columns(pl.lit("chal2").alias("challenger_id"))
    write_open_predictions(lake, other)
    stored = read_open_predictions(lake)
    assert stored.height == preds.height + 10
    key = ["challenger_id", "symbol", "timestamp"]
    assert stored.filter(pl.col("challenger_id") == "chal").sort(key).equals(preds.sort(key))
    assert read_open_predictions(lake, since=dt.date(2024, 1, 2)).is_empty()
    assert read_open_predictions(Lake(tmp_path / "empty")).columns == list(SHADOW_PREDICTIONS_SCHEMA)
