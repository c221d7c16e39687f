"""Score out-of-sample predictions net of trading costs, beside baselines on the same rows.

Every engine's test-fold predictions are joined to their bars; each prediction becomes a position
(the sign of its signal), charged the full cost model (fees, half spread, slippage, impact, funding)
on every change of position, and simulated on the one-bar returns that follow the execution
latency. Flat, buy-and-hold and momentum-sign positions run on exactly the same rows, and the
deflated Sharpe ratio accounts for the number of engines tried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from clm.evaluation.costs import CostConfig, cost_summary, trade_costs
from clm.evaluation.metrics import evaluate_groupings, simulate_strategy
from clm.models.base import engine_class

_BAR_COLUMNS = ("symbol", "timestamp", "close", "high", "low", "volume", "quote_volume", "spread_bps", "is_filled")


@dataclass
class Evaluation:
    overall: pl.DataFrame  # one row per engine
    detail: pl.DataFrame  # one row per engine, fold, symbol and regime
    costs: pl.DataFrame  # per prediction: expected and realised edge, each cost component, net edges (bps)
    cost_summary: dict


def _with_positions(predictions: pl.DataFrame, candles: pl.DataFrame) -> pl.DataFrame:
    bars = candles.select([c for c in _BAR_COLUMNS if c in candles.columns])
    return (
        predictions.join(bars, on=["symbol", "timestamp"], how="left")
        .with_columns(
            pl.col("signal").sign().alias("position"),
            pl.col("signal").sign().cast(pl.Int8).alias("pred_direction"),
            pl.col("target_return").sign().cast(pl.Int8).alias("direction"),
        )
        .sort("engine", "symbol", "timestamp")
    )


def evaluate_engines(
    predictions: pl.DataFrame,
    candles: pl.DataFrame,
    *,
    timeframe_seconds: int,
    horizon: int,
    cost_config: CostConfig = CostConfig(),
    notional: float = 10_000.0,
    funding: pl.DataFrame | None = None,
) -> Evaluation:
    """Metrics per engine (and per fold, symbol and regime) with costs, beside the baselines."""
    rows = _with_positions(predictions, candles)
    # what each trade is expected to make (the engine's own forecast) against what it would cost:
    # only trades whose expected edge clears the costs by min_edge_after_cost_bps are taken
    costed = trade_costs(
        rows.select("engine", "fold", "symbol", "timestamp", "regime", "position",
                    pl.col("expected_edge_bps").fill_null(0.0).alias("edge_bps"),
                    *[c for c in ("close", "high", "low", "volume", "quote_volume", "spread_bps", "is_filled")
                      if c in rows.columns]),
        cost_config, notional=notional, holding_bars=horizon, timeframe_seconds=timeframe_seconds,
        funding=funding, latency_bars=1,
    )
    rows = rows.with_columns(
        costed["one_way_cost_bps"].alias("cost_bps"),
        pl.when(costed["tradable"]).then(pl.col("position")).otherwise(0.0).alias("position"),
    )
    summary = cost_summary(costed.with_columns(rows["position"]))  # over the trades actually taken
    realised = (rows["position"] * rows["target_return"] * 1e4).alias("realised_edge_bps")
    costed = costed.rename({"edge_bps": "expected_edge_bps", "net_edge_bps": "expected_net_edge_bps"}).with_columns(
        realised, (realised - costed["total_cost_bps"]).alias("realised_net_edge_bps"),
        rows["position"].alias("position_taken"),
    )
    periods = 365 * 86_400 / timeframe_seconds
    engines = rows["engine"].unique().sort().to_list()
    sharpes = []
    for engine in engines:
        sim = simulate_strategy(rows.filter(pl.col("engine") == engine), position_col="position",
                                return_col="return_1", cost_bps_col="cost_bps", periods_per_year=periods)
        sharpe = sim.get("sharpe")  # annualised; the deflation works per period (metrics.deflated_sharpe_ratio)
        sharpes.append(sharpe / math.sqrt(periods) if sharpe is not None and math.isfinite(sharpe) else 0.0)
    spread_of_trials = float(pl.Series(sharpes).std()) if len(sharpes) > 1 else 0.0
    common = dict(
        prediction_col="signal", actual_col="target_return", pred_direction_col="pred_direction",
        direction_col="direction", probability_col="probability", position_cols={"model": "position"},
        return_col="return_1", cost_bps_col="cost_bps", periods_per_year=periods,
        sequence_cols=("engine", "fold"), n_trials=max(1, len(engines)),
        sharpe_std_across_trials=spread_of_trials,
    )
    # one engine at a time: the baselines' positions (e.g. momentum's previous bar) are per symbol series;
    # each engine's strategies are simulated once for both tables
    groupings = {"overall": ("engine",), "detail": ("engine", "fold", "symbol", "regime")}
    tables = [evaluate_groupings(rows.filter(pl.col("engine") == engine), groupings, **common) for engine in engines]
    overall, detail = (
        _regression_metrics_for_regressors(pl.concat([t[name] for t in tables], how="diagonal_relaxed"))
        for name in groupings
    )
    return Evaluation(overall, detail, costed, summary)


def _regression_metrics_for_regressors(table: pl.DataFrame) -> pl.DataFrame:
    """A classifier's signal is not a return forecast: its RMSE, MAE and R2 would mislead, so they are null."""
    classifiers = [e for e in table["engine"].unique().to_list() if engine_class(e).task == "classification"]
    is_classifier = pl.col("engine").is_in(classifiers)
    return table.with_columns(
        pl.when(is_classifier).then(None).otherwise(pl.col(c)).alias(c) for c in ("rmse", "mae", "r2") if c in table.columns
    )


__all__ = ["Evaluation", "evaluate_engines"]
