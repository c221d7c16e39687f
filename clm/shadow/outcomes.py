"""Shadow predictions on every new bar, and their outcomes once the label horizon has closed.

Open predictions (``shadow_predictions``) are what the champion and each challenger said on a bar,
kept in the lake table ``SHADOW_PREDICTIONS`` (date partitions) until the bar's label is known.
``close_outcomes`` then joins the realised forward return and turns every prediction into the trade
training's evaluation would have taken (``clm.training.evaluate``): position ``sign(signal)`` when
the expected edge clears the round-trip costs of ``clm.evaluation.costs.trade_costs`` by
``min_edge_after_cost_bps`` (its ``tradable`` flag), else flat. The per-signal net return is
``position * forward_return - total_cost_bps * 1e-4`` for a trade and 0 when flat, in the units of
the label (log return of the horizon). The closed rows have exactly the columns of the registry's
``shadow_test_results``, where ``*_signal`` is the position taken (-1, 0, +1).

Everything is append-only: an open prediction is never updated; a closed one is a new results row,
and ``already_closed`` keeps the same bar from being closed twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import polars as pl

from clm.evaluation.costs import CostConfig, trade_costs
from clm.features.build import infer_timeframe_seconds
from clm.lake import Lake
from clm.registry.base import Registry
from clm.registry.schema import LOG_TABLES
from clm.shadow.models import ShadowModel

SHADOW_PREDICTIONS = "shadow_predictions"  # lake table of open predictions, partitioned by date
SHADOW_RESULTS = "shadow_test_results"  # registry log table of closed ones
UTC_US = pl.Datetime("us", "UTC")
PAIR_KEY = ("champion_id", "challenger_id", "symbol", "timestamp")
SHADOW_PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(), "timestamp": UTC_US, "horizon": pl.Int64(),
    "champion_id": pl.String(), "challenger_id": pl.String(),
    "champion_prediction": pl.Float64(), "challenger_prediction": pl.Float64(),
    "champion_signal": pl.Float64(), "challenger_signal": pl.Float64(),  # in [-1, 1], as serving computes it
    "champion_edge_bps": pl.Float64(), "challenger_edge_bps": pl.Float64(),  # expected edge (tradability)
    "predicted_at": UTC_US,
}
_RESULT_TYPES = {"int": pl.Int64(), "float": pl.Float64(), "text": pl.String(), "timestamp": UTC_US}
SHADOW_RESULTS_SCHEMA: dict[str, pl.DataType] = {
    name: _RESULT_TYPES[str(kind)] for name, kind in LOG_TABLES[SHADOW_RESULTS].items()
}
CLOSED_SIGNALS_EXTRA: dict[str, pl.DataType] = {
    "outcome_return": pl.Float64(), "label_end": UTC_US, "position": pl.Float64(), "total_cost_bps": pl.Float64(),
    "net_return": pl.Float64(), "closed_at": UTC_US,
}
_CANDLE_COLUMNS = ("symbol", "timestamp", "close", "high", "low", "volume", "quote_volume", "spread_bps", "is_filled")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ------------------------------------------------------------------------------------------------
# open predictions
# ------------------------------------------------------------------------------------------------


def shadow_predictions(features: pl.DataFrame, champion: ShadowModel, challengers: Sequence[ShadowModel], *,
                       since: dt.datetime | None = None, predicted_at: dt.datetime | None = None) -> pl.DataFrame:
    """Per bar of ``features`` (rows at or after ``since``; earlier rows are history for sequence engines)
    and per challenger: both models' predictions, signals and expected edges (``SHADOW_PREDICTIONS_SCHEMA``).
    Challengers must share the champion's key. A symbol-scoped pair answers its symbol's rows only; a model
    that abstains has null values there."""
    for challenger in challengers:
        if challenger.record.key != champion.record.key:  # a promotion replaces the ACTIVE model of its own key
            raise ValueError(f"challenger {challenger.model_id} ({challenger.record.key}) does not answer for the "
                             f"champion {champion.model_id}'s key ({champion.record.key})")
    at = predicted_at or _utcnow()
    if not challengers:
        return pl.DataFrame(schema=SHADOW_PREDICTIONS_SCHEMA)
    mine = champion.predict(features)
    out = []
    for challenger in challengers:
        theirs = challenger.predict(features)
        pair = mine.select(
            "symbol", "timestamp",
            pl.col("prediction").alias("champion_prediction"), pl.col("signal").alias("champion_signal"),
            pl.col("edge_bps").alias("champion_edge_bps"),
        ).join(theirs.select(
            "symbol", "timestamp",
            pl.col("prediction").alias("challenger_prediction"), pl.col("signal").alias("challenger_signal"),
            pl.col("edge_bps").alias("challenger_edge_bps"),
        ), on=["symbol", "timestamp"], how="full", coalesce=True)
        out.append(pair.with_columns(
            pl.lit(champion.record.horizon, pl.Int64).alias("horizon"),
            pl.lit(champion.model_id, pl.String).alias("champion_id"),
            pl.lit(challenger.model_id, pl.String).alias("challenger_id"),
            pl.lit(at).cast(UTC_US).alias("predicted_at"),
        ))
    frame = pl.concat(out, how="diagonal_relaxed").select(
        [pl.col(c).cast(t) for c, t in SHADOW_PREDICTIONS_SCHEMA.items()])
    if since is not None:
        frame = frame.filter(pl.col("timestamp") >= pl.lit(since).cast(UTC_US))
    return frame.sort("challenger_id", "symbol", "timestamp")


def _dedupe_open(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per pair and bar: the first prediction made (the one that was live)."""
    return frame.sort("predicted_at", *PAIR_KEY, nulls_last=True).unique(list(PAIR_KEY), keep="first",
                                                                          maintain_order=True)


def write_open_predictions(lake: Lake, frame: pl.DataFrame) -> dict[str, Any]:
    """Add ``frame`` to the lake's ``SHADOW_PREDICTIONS`` table: each date partition it touches is read,
    merged (a bar already predicted for a pair keeps its first prediction) and rewritten atomically."""
    frame = frame.select([pl.col(c).cast(t) for c, t in SHADOW_PREDICTIONS_SCHEMA.items()])
    if frame.is_empty():
        return {"table": SHADOW_PREDICTIONS, "files_written": 0, "rows": 0}
    dates = frame.get_column("timestamp").dt.date().unique().sort().to_list()
    existing = read_open_predictions(lake, dates=dates)
    merged = _dedupe_open(pl.concat([existing, frame], how="vertical"))
    merged = merged.with_columns(pl.col("timestamp").dt.date().alias("date")).sort("date", *PAIR_KEY)
    return lake.write_table(SHADOW_PREDICTIONS, merged, ["date"], replace=dates)


def read_open_predictions(lake: Lake, *, dates: Sequence[dt.date] | None = None,
                          since: dt.date | None = None) -> pl.DataFrame:
    """Open predictions of the given dates (or from ``since``, or all); no rows when there are none."""
    if not lake.has_table(SHADOW_PREDICTIONS):
        return pl.DataFrame(schema=SHADOW_PREDICTIONS_SCHEMA)
    files = lake.files(SHADOW_PREDICTIONS) if dates is None else lake.files(SHADOW_PREDICTIONS, date=dates)
    if since is not None:
        files = [f for f in files if _file_date(f) is None or _file_date(f) >= since]
    if not files:
        return pl.DataFrame(schema=SHADOW_PREDICTIONS_SCHEMA)
    frame = pl.scan_parquet([str(f) for f in files], hive_partitioning=False).collect()
    return frame.select([pl.col(c).cast(t) for c, t in SHADOW_PREDICTIONS_SCHEMA.items()])


def _file_date(path) -> dt.date | None:
    for part in path.parts:
        if part.startswith("date="):
            return dt.date.fromisoformat(part.split("=", 1)[1])
    return None


# ------------------------------------------------------------------------------------------------
# outcomes
# ------------------------------------------------------------------------------------------------


def close_signals(
    predictions: pl.DataFrame,
    labels: pl.DataFrame | pl.LazyFrame,
    candles: pl.DataFrame | pl.LazyFrame,
    *,
    horizon: int,
    cost_config: CostConfig = CostConfig(),
    notional: float | None = None,
    timeframe_seconds: int | None = None,
    latency_bars: int = 1,
    funding: pl.DataFrame | None = None,
    as_of: dt.datetime | None = None,
) -> pl.DataFrame:
    """One model's predictions whose label has closed, with the trade taken and its net return.

    ``predictions``: one row per (symbol, timestamp) with ``signal`` (serving's, in [-1, 1]; null = no
    view) and ``edge_bps`` (the expected edge); other columns are kept. ``labels``: the labels table
    (``forward_return_<h>``, ``label_end_<h>``). A label counts as closed when its return is known and
    ``label_end_<h>`` (the exit bar) is at or before ``as_of`` (default: the newest candle). Adds
    ``CLOSED_SIGNALS_EXTRA``: ``closed_at`` is the exit bar's close (``label_end + timeframe``).
    ``notional``: one trade size for every symbol (default: ``cost_config``'s per-quote notional).
    """
    ret, end = f"forward_return_{horizon}", f"label_end_{horizon}"
    missing = [c for c in ("symbol", "timestamp", "signal", "edge_bps") if c not in predictions.columns]
    if missing:
        raise ValueError(f"close_signals: predictions lack column(s) {missing}")
    if predictions.select(pl.struct("symbol", "timestamp").is_duplicated().any()).item():
        raise ValueError("close_signals: predictions hold a (symbol, timestamp) twice; pass one model's rows")
    label_names = labels.lazy().collect_schema().names()
    if ret not in label_names or end not in label_names:
        raise ValueError(f"close_signals: labels lack {ret!r} / {end!r} (horizon {horizon} not labelled)")
    schema = {**dict(predictions.schema), "symbol": pl.String(), "timestamp": UTC_US, **CLOSED_SIGNALS_EXTRA}
    if predictions.is_empty():
        return pl.DataFrame(schema=schema)
    bars = candles.lazy().with_columns(pl.col("symbol").cast(pl.String), pl.col("timestamp").cast(UTC_US))
    if as_of is None:
        as_of = bars.select(pl.col("timestamp").max()).collect().item()
    keys = predictions.with_columns(pl.col("symbol").cast(pl.String), pl.col("timestamp").cast(UTC_US))
    tf = timeframe_seconds or _timeframe(bars, keys)
    known = (labels.lazy()
             .select(pl.col("symbol").cast(pl.String), pl.col("timestamp").cast(UTC_US),
                     pl.col(ret).cast(pl.Float64).alias("outcome_return"), pl.col(end).cast(UTC_US).alias("label_end"))
             .filter(pl.col("outcome_return").is_finite() & pl.col("label_end").is_not_null()
                     & (pl.col("label_end") <= pl.lit(as_of).cast(UTC_US)))
             .join(keys.lazy().select("symbol", "timestamp"), on=["symbol", "timestamp"], how="semi")
             .unique(["symbol", "timestamp"], keep="first")
             .collect())
    closed = keys.join(known, on=["symbol", "timestamp"], how="inner")
    if closed.is_empty():
        return pl.DataFrame(schema=schema)

    # costs on the candles of the predicted bars, with the bars before them for the spread estimate
    wanted = closed.select(
        "symbol", "timestamp",
        pl.col("signal").cast(pl.Float64).fill_nan(None).sign().fill_null(0.0).alias("position"),
        pl.col("edge_bps").cast(pl.Float64).fill_nan(None).fill_null(0.0).alias("edge_bps"),
    )
    first = closed.get_column("timestamp").min() - dt.timedelta(seconds=(cost_config.spread_estimate_window + 1) * tf)
    last = closed.get_column("timestamp").max()
    present = bars.collect_schema().names()
    window = (bars.select([c for c in _CANDLE_COLUMNS if c in present])
              .filter(pl.col("symbol").is_in(closed.get_column("symbol").unique().to_list())
                      & pl.col("timestamp").is_between(pl.lit(first).cast(UTC_US), pl.lit(last).cast(UTC_US)))
              .unique(["symbol", "timestamp"], keep="first")
              .sort("symbol", "timestamp").collect()
              .join(wanted, on=["symbol", "timestamp"], how="left")
              .with_columns(pl.col("position").fill_null(0.0), pl.col("edge_bps").fill_null(0.0)))
    costed = trade_costs(window, cost_config, notional=notional, holding_bars=horizon, timeframe_seconds=tf,
                         funding=funding, latency_bars=latency_bars)
    closed = closed.join(costed.select("symbol", "timestamp", "total_cost_bps", "tradable"),
                         on=["symbol", "timestamp"], how="left")
    signal = pl.col("signal").cast(pl.Float64).fill_nan(None)
    position = (pl.when(pl.col("tradable").fill_null(False) & signal.is_not_null())
                .then(signal.sign()).otherwise(0.0))
    return (closed.with_columns(position.alias("position"))
            .with_columns(
                pl.when(pl.col("position") != 0)
                .then(pl.col("position") * pl.col("outcome_return") - pl.col("total_cost_bps") * 1e-4)
                .otherwise(0.0).alias("net_return"),
                (pl.col("label_end") + pl.duration(seconds=tf)).alias("closed_at"),
            )
            .drop("tradable")
            .select([pl.col(c).cast(t) for c, t in schema.items()]))


def _timeframe(bars: pl.LazyFrame, keys: pl.DataFrame) -> int:
    """The bar spacing, read from the predicted symbols' bars around the predictions (not the whole table)."""
    start = keys.get_column("timestamp").min() - dt.timedelta(days=1)
    near = bars.filter(pl.col("symbol").is_in(keys.get_column("symbol").unique().to_list())
                       & (pl.col("timestamp") >= pl.lit(start).cast(UTC_US))
                       & (pl.col("timestamp") <= pl.lit(keys.get_column("timestamp").max()).cast(UTC_US)))
    try:
        return infer_timeframe_seconds(near)
    except ValueError:  # too few bars there: the whole table
        return infer_timeframe_seconds(bars)


def close_outcomes(
    open_predictions: pl.DataFrame,
    labels: pl.DataFrame | pl.LazyFrame,
    candles: pl.DataFrame | pl.LazyFrame,
    *,
    horizon: int | None = None,
    cost_config: CostConfig = CostConfig(),
    notional: float | None = None,
    timeframe_seconds: int | None = None,
    latency_bars: int = 1,
    funding: pl.DataFrame | None = None,
    as_of: dt.datetime | None = None,
    already_closed: pl.DataFrame | None = None,
    recorded_at: dt.datetime | None = None,
) -> pl.DataFrame:
    """The open predictions whose label has closed (and are not in ``already_closed``), as rows of the
    registry's ``shadow_test_results`` (``SHADOW_RESULTS_SCHEMA``; ``result_id`` null: the registry
    assigns it). ``horizon``: only that horizon's predictions (default: each row's own)."""
    frame = open_predictions.select([pl.col(c).cast(t) for c, t in SHADOW_PREDICTIONS_SCHEMA.items()])
    if horizon is not None:
        frame = frame.filter(pl.col("horizon") == horizon)
    frame = _dedupe_open(frame)
    if already_closed is not None and not already_closed.is_empty():
        done = already_closed.select(pl.col("champion_id").cast(pl.String), pl.col("challenger_id").cast(pl.String),
                                     pl.col("symbol").cast(pl.String), pl.col("timestamp").cast(UTC_US))
        frame = frame.join(done, on=list(PAIR_KEY), how="anti")
    if frame.is_empty():
        return pl.DataFrame(schema=SHADOW_RESULTS_SCHEMA)
    at = recorded_at or _utcnow()
    options = dict(cost_config=cost_config, notional=notional, timeframe_seconds=timeframe_seconds,
                   latency_bars=latency_bars, funding=funding, as_of=as_of)
    out = []
    for (h,), rows in frame.partition_by("horizon", as_dict=True, maintain_order=True).items():
        sides: dict[tuple[str, str], pl.DataFrame] = {}
        for role, id_column in (("champion", "champion_id"), ("challenger", "challenger_id")):
            for (model_id,), own in rows.partition_by(id_column, as_dict=True, maintain_order=True).items():
                one = own.select("symbol", "timestamp", pl.col(f"{role}_signal").alias("signal"),
                                 pl.col(f"{role}_edge_bps").alias("edge_bps")).unique(
                    ["symbol", "timestamp"], keep="first", maintain_order=True)
                sides[(role, model_id)] = close_signals(one, labels, candles, horizon=int(h), **options).select(
                    "symbol", "timestamp", "outcome_return", "closed_at",
                    pl.col("position").alias(f"{role}_position"), pl.col("net_return").alias(f"{role}_net_return"))
        for (champion_id, challenger_id), pair in rows.partition_by(
                "champion_id", "challenger_id", as_dict=True, maintain_order=True).items():
            mine = sides[("champion", champion_id)]
            theirs = sides[("challenger", challenger_id)].drop("outcome_return", "closed_at")
            out.append(pair.join(mine, on=["symbol", "timestamp"], how="inner")
                       .join(theirs, on=["symbol", "timestamp"], how="inner"))
    closed = pl.concat(out, how="vertical_relaxed") if out else pl.DataFrame()
    if closed.is_empty():
        return pl.DataFrame(schema=SHADOW_RESULTS_SCHEMA)
    return closed.select(
        pl.lit(None, pl.Int64).alias("result_id"), "champion_id", "challenger_id", "symbol", "timestamp", "horizon",
        "champion_prediction", "challenger_prediction",
        pl.col("champion_position").alias("champion_signal"), pl.col("challenger_position").alias("challenger_signal"),
        "outcome_return", "champion_net_return", "challenger_net_return", "closed_at",
        pl.lit(at).cast(UTC_US).alias("recorded_at"),
    ).select([pl.col(c).cast(t) for c, t in SHADOW_RESULTS_SCHEMA.items()]).sort("challenger_id", "symbol",
                                                                                 "timestamp")


def append_results(registry: Registry, closed: pl.DataFrame) -> int:
    """Append closed rows to the registry's ``shadow_test_results`` (ids assigned there)."""
    if closed.is_empty():
        return 0
    return registry.append(SHADOW_RESULTS, closed.select(list(SHADOW_RESULTS_SCHEMA)).to_dicts())


def read_results(registry: Registry, *, challenger_id: str | None = None, champion_id: str | None = None
                 ) -> pl.DataFrame:
    """``shadow_test_results`` rows (of one challenger and/or champion) as a frame, oldest first."""
    where = {k: v for k, v in (("challenger_id", challenger_id), ("champion_id", champion_id)) if v is not None}
    rows = registry.rows(SHADOW_RESULTS, where=where or None)
    if not rows:
        return pl.DataFrame(schema=SHADOW_RESULTS_SCHEMA)
    return pl.from_dicts(rows, schema=SHADOW_RESULTS_SCHEMA).sort("result_id")


__all__ = [
    "CLOSED_SIGNALS_EXTRA", "SHADOW_PREDICTIONS", "SHADOW_PREDICTIONS_SCHEMA", "SHADOW_RESULTS",
    "SHADOW_RESULTS_SCHEMA", "append_results", "close_outcomes", "close_signals", "read_open_predictions",
    "read_results", "shadow_predictions", "write_open_predictions",
]
