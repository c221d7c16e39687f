"""What to trade now: the ranking table and the do-not-trade list, from the lake's latest bars.

``assess`` looks at every symbol of the universe (the candles table) once and puts it in exactly one
of two tables: ``ranking`` (tradable now, best net edge first) or ``do_not_trade`` (one reason).
``ranking_table`` and ``do_not_trade`` return one table each; call ``assess`` when both are needed,
so that they come from the same reading of the lake and still partition the universe.

Per symbol, the first failing check is its reason:

1. ``halted``: ``signals/halt.json`` exists (every symbol; its reason is quoted).
2. ``no ACTIVE model``: neither a symbol-scoped nor a pooled ACTIVE model for the horizon (or the
   champion failed to load, e.g. an artefact failed its checksum: the error is quoted).
3. ``stale data``: no warm feature row of the current feature version, or the latest one is older
   than ``max_age`` (default two bars) behind the newest bar of the universe.
4. ``missing features``: a feature the champion needs is absent, null or NaN in that row, or the
   lake's feature version is not the one the champion was trained on.
5. ``regime gate``: the gate enables no engine of the champion in the symbol's latest regime (or no
   enabled engine could predict, e.g. a sequence engine without enough history).
6. ``consensus opposes``: the vote S points against the edge's direction.
7. ``costs unknown``: no candle at the feature bar or no quote volume (no cost, no capacity).
8. ``net edge``: the expected edge minus round-trip costs is below ``min_edge_after_cost_bps``.

Expected edge, in bps of the horizon's log return: from the best engine (tabular first, then net
Sharpe and accuracy, as the champion's primary) that the gate enables in the symbol's regime -
a regressor's predicted return, or a classifier's ``(2p - 1) * typical move`` (the median absolute
forward return of its training rows, registry metric ``typical_abs_return``, else of its last
out-of-sample fold). Costs are ``clm.evaluation.costs.trade_costs`` (fees, twice the half spread,
slippage, square-root impact of the trade's notional in the symbol's quote currency, funding when a
funding frame is given; under the policy's ``costs`` unless ``cost_config`` is given) on the feature bar,
the spread estimated from the bars before it; ``capacity`` is the notional (quote currency) the bar can
absorb at ``max_participation`` of its quote volume.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from clm.data.ingest import CANDLES
from clm.evaluation.costs import CostConfig, trade_costs
from clm.features.build import infer_timeframe_seconds
from clm.features.store import FEATURES
from clm.lake import Lake
from clm.models.artifacts import ArtifactError
from clm.policy import load_policy
from clm.regimes.store import REGIMES
from clm.registry.base import POOLED, Registry
from clm.serving.champion import (
    Champion,
    ModelBook,
    NoActiveModel,
    ServingError,
    TradingHalted,
    halt_reason,
    open_default_registry,
)

BPS = 1e4
RANKING_SCHEMA = {
    "symbol": pl.String, "timestamp": pl.Datetime("us", "UTC"), "regime": pl.String, "side": pl.String,
    "expected_edge_bps": pl.Float64, "total_cost_bps": pl.Float64, "net_edge_bps": pl.Float64,
    "confidence": pl.Float64, "consensus": pl.Float64, "capacity": pl.Float64, "model_id": pl.String,
}
DO_NOT_TRADE_SCHEMA = {"symbol": pl.String, "reason": pl.String}
_CANDLE_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume", "quote_volume", "spread_bps",
                   "is_filled")
_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Assessment:
    ranking: pl.DataFrame  # RANKING_SCHEMA, best net edge first
    do_not_trade: pl.DataFrame  # symbol, reason
    as_of: dt.datetime | None  # the newest bar of the universe
    halted: str | None  # the halt file's reason, when halted


def ranking_table(lake: Lake | None = None, registry: Registry | None = None, *, horizon: int = 12,
                  cost_config: CostConfig | None = None, **options: Any) -> pl.DataFrame:
    """Tradable symbols now: symbol, regime, net_edge_bps, confidence, capacity, model_id (and the
    edge, costs, side, consensus, bar), best net edge first. See ``assess`` for the options."""
    return assess(lake, registry, horizon=horizon, cost_config=cost_config, **options).ranking


def do_not_trade(lake: Lake | None = None, registry: Registry | None = None, *, horizon: int = 12,
                 cost_config: CostConfig | None = None, **options: Any) -> pl.DataFrame:
    """Every symbol of the universe not in the ranking, with the reason (symbol, reason)."""
    return assess(lake, registry, horizon=horizon, cost_config=cost_config, **options).do_not_trade


def _partition_dates(lake: Lake, table: str) -> list[dt.date]:
    dates = set()
    for path in lake.files(table):
        for part in path.parts:
            match = _DATE.match(part)
            if match:
                dates.add(dt.date.fromisoformat(match.group(1)))
    return sorted(dates)


def _universe(lake: Lake) -> list[str]:
    for table in (CANDLES, FEATURES):
        if lake.has_table(table):
            return sorted(lake.scan(table).select(pl.col("symbol").cast(pl.String)).unique().collect()
                          ["symbol"].drop_nulls().to_list())
    return []


def _finish(universe: Sequence[str], ranked: list[dict], reasons: dict[str, str], as_of: dt.datetime | None,
            halted: str | None) -> Assessment:
    ranking = pl.DataFrame(ranked, schema=RANKING_SCHEMA, orient="row") if ranked else pl.DataFrame(
        schema=RANKING_SCHEMA)
    ranking = ranking.sort(["net_edge_bps", "symbol"], descending=[True, False])
    dnt = pl.DataFrame({"symbol": list(reasons), "reason": list(reasons.values())}, schema=DO_NOT_TRADE_SCHEMA)
    covered = set(ranking["symbol"].to_list()) | set(reasons)
    if covered != set(universe) or ranking.height + dnt.height != len(universe):  # a bug, never a data problem
        raise AssertionError(
            f"ranking and do_not_trade do not partition the universe: {sorted(set(universe) ^ covered)}")
    return Assessment(ranking, dnt.sort("symbol"), as_of, halted)


def assess(
    lake: Lake | None = None,
    registry: Registry | None = None,
    *,
    horizon: int = 12,
    cost_config: CostConfig | None = None,
    notional: float | None = None,
    max_age: dt.timedelta | None = None,
    funding: pl.DataFrame | None = None,
    latency_bars: int = 1,
    min_consensus: float = 0.0,
) -> Assessment:
    """Both tables from one reading of the lake (module doc). ``max_age``: how far a symbol's latest
    warm feature row may lag the newest bar of the universe (default two bars); ``notional``: one
    trade size for every symbol, for the impact (default: ``cost_config``'s notional for the symbol's
    quote currency, ``CostConfig.notional_by_quote``); ``funding``: perpetual funding rates
    (``clm.evaluation.costs.read_funding_rates``); ``latency_bars``: bars between decision and entry;
    ``cost_config``: default the policy's ``costs`` (``load_policy().cost_config()``, read now), the
    assumptions the evaluation and the shadow test use."""
    lake = lake if lake is not None else Lake.from_env()
    cfg = cost_config if cost_config is not None else load_policy().cost_config()
    universe = _universe(lake)
    reasons: dict[str, str] = {}
    if not universe:
        return _finish([], [], {}, None, halt_reason(lake))
    halted = halt_reason(lake)
    if halted is not None:
        return _finish(universe, [], {s: f"halted: {halted}" for s in universe}, None, halted)
    registry = registry if registry is not None else open_default_registry(lake)
    book = ModelBook(lake, registry, horizon)

    # ---- champions: one pooled champion for every symbol without symbol-scoped models ----------------
    champion_of: dict[str, Champion] = {}
    loaded: dict[Any, Champion | Exception] = {}
    for symbol in universe:
        records, gate = book.selection(symbol)
        own = any(r.scope != POOLED for r in records) or (gate is not None and gate.scope != POOLED)
        key = symbol if own else None
        if key not in loaded:
            try:
                loaded[key] = book.champion(key, min_consensus=min_consensus)
            except (NoActiveModel, ServingError, ArtifactError, ValueError) as exc:
                loaded[key] = exc
        outcome = loaded[key]
        if isinstance(outcome, NoActiveModel):
            reasons[symbol] = (f"no ACTIVE model: none for horizon {horizon} with scope {symbol!r} or "
                               f"{POOLED!r} (see `clm models list`)")
        elif isinstance(outcome, Exception):
            reasons[symbol] = f"no ACTIVE model: the champion failed to load: {outcome}"
        else:
            champion_of[symbol] = outcome
    if not champion_of:
        return _finish(universe, [], reasons, None, None)

    # ---- the latest bars: candles and warm features of the last days ---------------------------------
    candle_dates = _partition_dates(lake, CANDLES) if lake.has_table(CANDLES) else []
    feature_dates = _partition_dates(lake, FEATURES) if lake.has_table(FEATURES) else []
    if not candle_dates or not feature_dates:
        for symbol in champion_of:
            reasons[symbol] = "stale data: the lake has no candles or no features"
        return _finish(universe, [], reasons, None, None)
    recent = [d for d in candle_dates if d >= candle_dates[-1] - dt.timedelta(days=1)]
    tf = infer_timeframe_seconds(lake.scan(CANDLES, date=recent).select("symbol", "timestamp"))
    context = max((m.context_length for c in champion_of.values() for m in c.models), default=0)
    lag = max_age if max_age is not None else dt.timedelta(seconds=2 * tf)
    bars_needed = context + cfg.spread_estimate_window + 2
    days = max(2, math.ceil((bars_needed * tf + lag.total_seconds()) / 86_400) + 1)
    first_day = candle_dates[-1] - dt.timedelta(days=days)
    candle_scan = lake.scan(CANDLES, date=[d for d in candle_dates if d >= first_day])
    present = candle_scan.collect_schema().names()
    candles = (candle_scan.select([c for c in _CANDLE_COLUMNS if c in present])
               .with_columns(pl.col("symbol").cast(pl.String)).collect())
    as_of = candles["timestamp"].max()
    scan = (lake.scan(FEATURES, date=[d for d in feature_dates if d >= first_day])
            .filter(pl.col("warm")).with_columns(pl.col("symbol").cast(pl.String)))
    latest = scan.group_by("symbol").agg(pl.col("timestamp").max()).collect()
    # whole rows only where needed: the latest per symbol, plus the sequence engines' context
    if context:
        since = pl.col("__at") - pl.duration(seconds=context * tf)
        feats = (scan.join(latest.lazy().rename({"timestamp": "__at"}), on="symbol")
                 .filter(pl.col("timestamp") > since).drop("__at"))
    else:
        feats = scan.join(latest.lazy(), on=["symbol", "timestamp"], how="semi")
    feats = feats.collect().sort("symbol", "timestamp")
    latest_at = dict(zip(latest["symbol"].to_list(), latest["timestamp"].to_list(), strict=True))
    regimes = _latest_regimes(lake, latest, first_day)
    current_version = lake.current_version(FEATURES)

    candidates: dict[str, Champion] = {}
    for symbol, champion in champion_of.items():
        at = latest_at.get(symbol)
        if at is None:
            reasons[symbol] = f"stale data: no warm feature row since {first_day} (newest bar {as_of})"
        elif at < as_of - lag:
            reasons[symbol] = (f"stale data: latest warm features at {at}, {as_of - at} behind the newest bar "
                               f"of the universe ({as_of}); max_age {lag}")
        else:
            candidates[symbol] = champion
    rows = feats.join(latest.filter(pl.col("symbol").is_in(list(candidates))), on=["symbol", "timestamp"],
                      how="semi")
    rows = rows.join(regimes, on="symbol", how="left") if regimes is not None else rows.with_columns(
        pl.lit(None, pl.String).alias("regime"))
    row_of = {r["symbol"]: r for r in rows.iter_rows(named=True)}

    # ---- features and the gate --------------------------------------------------------------------------
    for symbol in list(candidates):
        champion, row = candidates[symbol], row_of[symbol]
        stale_version = [m for m in champion.models
                         if getattr(m.engine, "feature_version", None) not in (None, current_version)]
        bad = [f for f in champion.required_features if not _finite(row.get(f))]
        regime = row.get("regime")
        if stale_version:
            m = stale_version[0]
            reasons[symbol] = (f"missing features: the lake's features are version {current_version}, "
                               f"{m.model_id} was trained on {m.engine.feature_version}")
        elif bad:
            reasons[symbol] = f"missing features: null or NaN in {', '.join(bad[:10])}" + (
                f" (+{len(bad) - 10} more)" if len(bad) > 10 else "")
        elif not champion.enabled_for(regime):
            reasons[symbol] = f"regime gate: no engine enabled in regime {regime or 'unknown (overall set)'}"
        else:
            continue
        del candidates[symbol]

    # ---- predictions: one batch per champion -------------------------------------------------------
    edges: list[dict] = []
    groups: dict[int, list[str]] = {}
    for symbol, champion in candidates.items():
        groups.setdefault(id(champion), []).append(symbol)
    try:
        for symbols in groups.values():
            champion = candidates[symbols[0]]
            edges += _edges(champion, symbols, feats, rows, context, reasons)
    except TradingHalted as exc:  # the halt file appeared while we were predicting
        reason = halt_reason(lake) or str(exc)
        return _finish(universe, [], {s: f"halted: {reason}" for s in universe}, as_of, reason)
    if not edges:
        return _finish(universe, [], reasons, as_of, None)

    # ---- costs on the feature bar (the spread estimated from the bars before it) -----------------------------
    edge_frame = pl.DataFrame(edges)
    bars = (candles.join(edge_frame.select("symbol", pl.col("timestamp").alias("__at")), on="symbol")
            .filter(pl.col("timestamp") <= pl.col("__at")).drop("__at")
            .sort("symbol", "timestamp").group_by("symbol", maintain_order=True).tail(cfg.spread_estimate_window + 1)
            .join(edge_frame.select("symbol", "timestamp", "expected_edge_bps"), on=["symbol", "timestamp"],
                  how="left")
            .with_columns(pl.col("expected_edge_bps").fill_null(0.0).alias("edge_bps")))
    costed = trade_costs(bars.drop("expected_edge_bps"), cfg, notional=notional, holding_bars=horizon,
                         timeframe_seconds=tf, funding=funding, latency_bars=latency_bars)
    costed = costed.join(edge_frame.select("symbol", "timestamp"), on=["symbol", "timestamp"], how="semi")
    cost_of = {r["symbol"]: r for r in costed.iter_rows(named=True)}
    ranked = []
    for edge in edges:
        symbol, cost = edge["symbol"], cost_of.get(edge["symbol"])
        if cost is None:
            reasons[symbol] = f"costs unknown: no candle at the feature bar {edge['timestamp']}"
        elif not _finite(cost["total_cost_bps"]) or not _finite(cost["net_edge_bps"]):
            reasons[symbol] = f"costs unknown: no quote volume at {edge['timestamp']} (no impact, no capacity)"
        elif cost["net_edge_bps"] < cfg.min_edge_after_cost_bps:
            reasons[symbol] = (f"net edge: {cost['net_edge_bps']:.2f} bps (expected "
                               f"{abs(edge['expected_edge_bps']):.2f} - costs {cost['total_cost_bps']:.2f}) is below "
                               f"min_edge_after_cost_bps {cfg.min_edge_after_cost_bps:g}")
        else:
            ranked.append({
                "symbol": symbol, "timestamp": edge["timestamp"], "regime": edge["regime"],
                "side": "long" if edge["expected_edge_bps"] > 0 else "short",
                "expected_edge_bps": edge["expected_edge_bps"], "total_cost_bps": cost["total_cost_bps"],
                "net_edge_bps": cost["net_edge_bps"], "confidence": edge["confidence"],
                "consensus": edge["consensus"], "capacity": cost["capacity_notional"], "model_id": edge["model_id"],
            })
    return _finish(universe, ranked, reasons, as_of, None)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _latest_regimes(lake: Lake, latest: pl.DataFrame, first_day: dt.date) -> pl.DataFrame | None:
    """Each symbol's latest known regime at or before its latest feature bar."""
    if not lake.has_table(REGIMES):
        return None
    dates = [d for d in _partition_dates(lake, REGIMES) if d >= first_day]
    if not dates:
        return None
    known = (lake.scan(REGIMES, date=dates).select(pl.col("symbol").cast(pl.String), "timestamp",
                                                   pl.col("regime").cast(pl.String))
             .filter(pl.col("regime").is_not_null()).collect().sort("timestamp"))
    return (latest.sort("timestamp").join_asof(known, on="timestamp", by="symbol", strategy="backward",
                                                 check_sortedness=False)  # both sorted by time
            .select("symbol", "regime"))


def _edges(champion: Champion, symbols: list[str], feats: pl.DataFrame, rows: pl.DataFrame, context: int,
           reasons: dict[str, str]) -> list[dict]:
    """Predict the symbols' latest rows (with history for sequence engines); the edge per symbol."""
    latest = rows.filter(pl.col("symbol").is_in(symbols))
    if any(m.sequence for m in champion.models) and context:
        history = (feats.filter(pl.col("symbol").is_in(symbols))
                   .join(latest.select("symbol", pl.col("timestamp").alias("__at")), on="symbol")
                   .filter(pl.col("timestamp") <= pl.col("__at")).drop("__at")
                   .sort("symbol", "timestamp").group_by("symbol", maintain_order=True).tail(context))
        frame = history.join(latest.select("symbol", "regime"), on="symbol", how="left")
    else:
        frame = latest
    frame = frame.sort("symbol", "timestamp")
    views = champion.views(frame)
    last = frame.with_row_index("__row").group_by("symbol", maintain_order=True).agg(
        pl.col("__row").last(), pl.col("timestamp").last(), pl.col("regime").last())
    # the edge comes from the best engine the gate enables: tabular first, then as the primary is chosen
    order = sorted(range(len(champion.models)),
                   key=lambda i: (not champion.models[i].sequence, champion.models[i].rank_key()), reverse=True)
    out = []
    for symbol, r, at, regime in last.iter_rows():
        chosen = next((i for i in order if views.enabled[r, i] and np.isfinite(views.values[r, i])), None)
        if chosen is None:
            reasons[symbol] = f"regime gate: no enabled engine could predict in regime {regime or 'unknown'}"
            continue
        m = champion.models[chosen]
        value = float(views.values[r, chosen])
        if m.kind == "probability":
            if m.typical_move is None:
                reasons[symbol] = f"net edge: unknown, no typical move recorded for {m.model_id}"
                continue
            edge = (2.0 * value - 1.0) * m.typical_move * BPS
        else:
            edge = value * BPS
        score = float(views.consensus[r])
        if score * edge < 0:
            reasons[symbol] = (f"consensus opposes: S = {score:+.3f} against {m.model_id}'s expected edge "
                               f"{edge:+.2f} bps")
            continue
        if edge == 0:
            reasons[symbol] = f"net edge: {m.model_id} expects no move"
            continue
        out.append({"symbol": symbol, "timestamp": at, "regime": regime, "expected_edge_bps": edge,
                    "confidence": float(abs(views.signals[r, chosen])), "consensus": score,
                    "model_id": m.model_id})
    return out
