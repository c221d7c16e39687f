"""Score out-of-sample predictions net of trading costs, beside baselines on the same rows.

Every engine's test-fold predictions are joined to their bars; each prediction becomes a position
(the sign of its signal), charged the full cost model (fees, half spread, slippage, impact, funding)
on every change of position, and simulated on the one-bar returns that follow the execution
latency. Flat, buy-and-hold and momentum-sign positions run on exactly the same rows, and the
deflated Sharpe ratio accounts for the number of engines tried.

The engine's previous model (``clm.training.previous``), when given, is one more strategy,
``previous_model``: its predictions become positions through the very same steps (sign of the signal,
cost model, ``min_edge_after_cost_bps``) and it is simulated only on the rows that are out of sample
for it too (``previous_model_rows`` counts them per group; its columns are null where there are none).
``Evaluation.previous_model`` compares the two models on exactly those rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from clm.evaluation.costs import CostConfig, cost_summary, trade_costs
from clm.evaluation.metrics import BASELINES, evaluate_groupings, simulate_strategy
from clm.models.base import engine_class

_BAR_COLUMNS = ("symbol", "timestamp", "close", "high", "low", "volume", "quote_volume", "spread_bps", "is_filled")
_KEYS = ["engine", "symbol", "timestamp"]
PREVIOUS = "previous_model"  # the strategy name: previous_model_sharpe, previous_model_rows, ...
PREVIOUS_POSITION = "previous_model_position"
PREVIOUS_ROWS = "previous_model_eligible"  # the row is out of sample for the previous model
# what the comparison table holds per model, both measured on the rows out of sample for both
COMPARED_PREDICTION_METRICS = ("directional_accuracy", "accuracy", "f1", "ic", "rank_ic")
COMPARED_STRATEGY_METRICS = ("sharpe", "total_return", "max_drawdown", "hit_rate", "n_trades", "turnover", "exposure")
COMPARISON_SCHEMA: dict[str, pl.DataType] = {
    "engine": pl.String(), "rows_compared": pl.Int64(), "compared_from": pl.Datetime("us", "UTC"),
    "compared_to": pl.Datetime("us", "UTC"),
    **{f"{who}_{m}": pl.Float64() for m in COMPARED_PREDICTION_METRICS for who in ("model", PREVIOUS)},
    **{f"{who}_{m}": pl.Int64() if m == "n_trades" else pl.Float64()
       for m in COMPARED_STRATEGY_METRICS for who in ("model", PREVIOUS)},
    **{f"baseline_{b}_sharpe": pl.Float64() for b in BASELINES if b != "flat"},
}


@dataclass
class Evaluation:
    overall: pl.DataFrame  # one row per engine
    detail: pl.DataFrame  # one row per engine, fold, symbol and regime
    costs: pl.DataFrame  # per prediction: expected and realised edge, each cost component, net edges (bps)
    cost_summary: dict
    previous_model: pl.DataFrame | None = None  # per engine: it and its previous model on the same rows


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


def _positions_after_costs(predictions: pl.DataFrame, candles: pl.DataFrame, *, cost_config: CostConfig,
                           notional: float | None, horizon: int, timeframe_seconds: int,
                           funding: pl.DataFrame | None
                           ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows with their bars, ``position`` and one-way ``cost_bps``, and the costed rows.

    A position is the sign of the signal, taken only where what the trade is expected to make (the
    engine's own forecast) clears what it would cost by ``min_edge_after_cost_bps``."""
    rows = _with_positions(predictions, candles)
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
    return rows, costed


def evaluate_engines(
    predictions: pl.DataFrame,
    candles: pl.DataFrame,
    *,
    timeframe_seconds: int,
    horizon: int,
    cost_config: CostConfig = CostConfig(),
    notional: float | None = None,
    funding: pl.DataFrame | None = None,
    previous: pl.DataFrame | None = None,
) -> Evaluation:
    """Metrics per engine (and per fold, symbol and regime) with costs, beside the baselines.

    Each trade is ``cost_config``'s notional for its symbol's quote currency
    (``CostConfig.notional_by_quote``) unless ``notional`` fixes one size for every row; the ``costs``
    table records it per row (column ``notional``).

    ``previous``: each engine's previous model's ``signal`` and ``expected_edge_bps`` on the rows (``engine,
    symbol, timestamp``) that are out of sample for it (``clm.training.previous.previous_predictions``):
    strategy ``previous_model`` on those rows only, and ``Evaluation.previous_model`` (module docstring)."""
    costing = dict(cost_config=cost_config, notional=notional, horizon=horizon, timeframe_seconds=timeframe_seconds,
                   funding=funding)
    rows, costed = _positions_after_costs(predictions, candles, **costing)
    summary = cost_summary(costed.with_columns(rows["position"]))  # over the trades actually taken
    realised = (rows["position"] * rows["target_return"] * 1e4).alias("realised_edge_bps")
    costed = costed.rename({"edge_bps": "expected_edge_bps", "net_edge_bps": "expected_net_edge_bps"}).with_columns(
        realised, (realised - costed["total_cost_bps"]).alias("realised_net_edge_bps"),
        rows["position"].alias("position_taken"),
    )
    if previous is not None:
        rows = _with_previous_positions(rows, predictions, previous, candles, **costing)
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
    if previous is not None:
        common.update(position_cols={"model": "position", PREVIOUS: PREVIOUS_POSITION},
                      strategy_rows={PREVIOUS: PREVIOUS_ROWS})
    # one engine at a time: the baselines' positions (e.g. momentum's previous bar) are per symbol series;
    # each engine's strategies are simulated once for both tables
    groupings = {"overall": ("engine",), "detail": ("engine", "fold", "symbol", "regime")}
    tables = [evaluate_groupings(rows.filter(pl.col("engine") == engine), groupings, **common) for engine in engines]
    overall, detail = (
        _regression_metrics_for_regressors(pl.concat([t[name] for t in tables], how="diagonal_relaxed"))
        for name in groupings
    )
    comparison = _compare_with_previous(rows, engines, common) if previous is not None else None
    return Evaluation(overall, detail, costed, summary, comparison)


def _with_previous_positions(rows: pl.DataFrame, predictions: pl.DataFrame, previous: pl.DataFrame,
                             candles: pl.DataFrame, **costing) -> pl.DataFrame:
    """``rows`` plus the previous model's position, signal and direction, made as the engine's own
    (``_positions_after_costs`` on the same rows, so the same bars, spread estimates and costs), and
    ``PREVIOUS_ROWS``: whether the row is out of sample for it (its position is 0 elsewhere)."""
    missing = [c for c in (*_KEYS, "signal", "expected_edge_bps") if c not in previous.columns]
    if missing:
        raise ValueError(f"previous model predictions lack column(s) {missing}")
    theirs = previous.select(
        pl.col("engine").cast(predictions.schema["engine"]), pl.col("symbol").cast(predictions.schema["symbol"]),
        pl.col("timestamp").cast(predictions.schema["timestamp"]), pl.col("signal").cast(pl.Float64),
        pl.col("expected_edge_bps").cast(pl.Float64), pl.lit(True).alias(PREVIOUS_ROWS),
    ).unique(_KEYS, keep="first")
    swapped = predictions.drop("signal", "expected_edge_bps").join(theirs, on=_KEYS, how="left")
    positioned, _ = _positions_after_costs(swapped, candles, **costing)
    return rows.join(positioned.select(
        *_KEYS, pl.col("position").alias(PREVIOUS_POSITION), pl.col(PREVIOUS_ROWS).fill_null(False),
        pl.col("signal").alias("previous_model_signal"), pl.col("pred_direction").alias("previous_model_pred_direction"),
    ), on=_KEYS, how="left", maintain_order="left").with_columns(pl.col(PREVIOUS_ROWS).fill_null(False))


def _compare_with_previous(rows: pl.DataFrame, engines: list[str], common: dict) -> pl.DataFrame:
    """Per engine, the model and its previous model on the rows out of sample for both: the prediction
    metrics of each, and both strategies (with buy-and-hold and momentum) simulated on those rows."""
    options = {**common, "n_trials": None, "strategy_rows": {}}
    out = []
    for engine in engines:
        part = rows.filter((pl.col("engine") == engine) & pl.col(PREVIOUS_ROWS))
        row = {"engine": engine, "rows_compared": part.height, "compared_from": part["timestamp"].min(),
               "compared_to": part["timestamp"].max()}
        if part.height:
            both = evaluate_groupings(part, {"all": ()}, **options)["all"].row(0, named=True)
            theirs = evaluate_groupings(
                part.with_columns(pl.col("previous_model_signal").alias("signal"),
                                  pl.col("previous_model_pred_direction").alias("pred_direction")),
                {"all": ()}, **{**options, "position_cols": {}, "baselines": ()},
            )["all"].row(0, named=True)
            for metric in COMPARED_PREDICTION_METRICS:
                row[f"model_{metric}"], row[f"{PREVIOUS}_{metric}"] = both.get(metric), theirs.get(metric)
            row.update({c: both.get(c) for c in COMPARISON_SCHEMA if c not in row and c in both})
        out.append(row)
    return pl.DataFrame(out, schema=COMPARISON_SCHEMA)


def _regression_metrics_for_regressors(table: pl.DataFrame) -> pl.DataFrame:
    """A classifier's signal is not a return forecast: its RMSE, MAE and R2 would mislead, so they are null."""
    classifiers = [e for e in table["engine"].unique().to_list() if engine_class(e).task == "classification"]
    is_classifier = pl.col("engine").is_in(classifiers)
    return table.with_columns(
        pl.when(is_classifier).then(None).otherwise(pl.col(c)).alias(c) for c in ("rmse", "mae", "r2") if c in table.columns
    )


__all__ = ["COMPARISON_SCHEMA", "PREVIOUS", "Evaluation", "evaluate_engines"]
