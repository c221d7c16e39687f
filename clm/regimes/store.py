"""Regime tables and the regime map report, computed like the feature store: one window per day.

Day D's regimes come from bars in [D - lookback, D + 1 day), the lookback covering the longest
history the classifier learns from (``level_days``), so a day's labels, the market vote's hysteresis
state and therefore the change signals do not depend on the range a run happened to cover.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from clm.data.ingest import CANDLES
from clm.data.ingest import REGIMES as TRUTH
from clm.features.build import infer_timeframe_seconds
from clm.lake import Lake
from clm.regimes.classify import classify_regimes
from clm.regimes.config import RegimeConfig
from clm.regimes.market import market_regime, regime_changes, write_regime_signals
from clm.regimes.score import (
    RegimeScore,
    regime_plot,
    regime_report_markdown,
    score_regimes,
)

REGIMES = "regimes"
MARKET_REGIMES = "market_regimes"
REPORT_JSON = "reports/regime_map.json"
REPORT_MD = "reports/regime_map.md"
REPORT_PNG = "reports/regime_map.png"
_CANDLE_COLUMNS = ("symbol", "timestamp", "segment_id", "open", "high", "low", "close", "volume",
                   "spread_bps", "quote_volume", "is_filled")


def lookback_days(config: RegimeConfig) -> int:
    return math.ceil(max(config.level_days, config.baseline_days, config.min_history_days)) + 1


@dataclass
class RegimeStoreResult:
    rows: int = 0
    market_rows: int = 0
    warm_rows: int = 0
    signals: list[str] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    lookback_days: int = 0
    seconds: float = 0.0


def materialise_regimes(
    lake: Lake,
    dates: Sequence[dt.date],
    config: RegimeConfig,
    *,
    timeframe_seconds: int | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> RegimeStoreResult:
    """Per-symbol and market regimes for ``dates``, written daily; regime changes in them become signals."""
    started = time.perf_counter()
    days = sorted(set(dates))
    candles = lake.scan(CANDLES)
    tf = timeframe_seconds or infer_timeframe_seconds(candles)
    lookback = lookback_days(config)
    result = RegimeStoreResult(lookback_days=lookback)
    per_symbol, market = [], []
    for i, day in enumerate(days):
        window = candles.filter(pl.col("date").is_between(day - dt.timedelta(days=lookback), day))
        bars = window.select(_CANDLE_COLUMNS).collect()
        if bars.is_empty():
            continue
        labels = classify_regimes(bars, config, timeframe_seconds=tf)
        votes = market_regime(labels, config)
        on_day = pl.col("timestamp").dt.date() == day
        per_symbol.append(labels.filter(on_day).with_columns(pl.lit(day).alias("date")))
        market.append(votes.filter(on_day).with_columns(pl.lit(day).alias("date")))
        if (i + 1) % 10 == 0 or i + 1 == len(days):
            log(f"regimes {i + 1}/{len(days)} days")
    if per_symbol:
        labels = pl.concat(per_symbol)
        votes = pl.concat(market)
    else:
        labels, votes = pl.DataFrame(), pl.DataFrame()
    lake.write_table(REGIMES, labels, ["date"], replace=days)
    lake.write_table(MARKET_REGIMES, votes, ["date"], replace=days)
    if votes.height:
        # each day continues from the previous day's last regime, so a change at midnight is kept
        result.changes = regime_changes(votes.sort("timestamp"))
        start = dt.datetime.combine(days[0], dt.time(), dt.UTC)
        end = dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time(), dt.UTC)
        paths = write_regime_signals(result.changes, lake.signals_dir("regime"), since=start, until=end)
        result.signals = [p.name for p in paths]
    result.rows, result.market_rows = labels.height, votes.height
    result.warm_rows = int(labels["warm"].sum()) if labels.height else 0
    result.seconds = time.perf_counter() - started
    return result


def regime_map(lake: Lake) -> dict[str, Any]:
    """Score the stored regimes against the synthetic truth (when there is one) and describe them."""
    labels = lake.scan(REGIMES)
    market = lake.read(MARKET_REGIMES).sort("timestamp")
    distribution = (
        labels.filter(pl.col("warm")).group_by("regime").len().sort("regime").collect()
    )
    levels = {
        column: labels.filter(pl.col("warm")).group_by(column).len().sort(column).collect().rows()
        for column in ("volatility_level", "liquidity_level")
    }
    scores: list[RegimeScore] = []
    truth = None
    if lake.has_table(TRUTH):
        truth = lake.read(TRUTH).select("timestamp", "regime")
        scores = [score_regimes(labels, truth), score_regimes(market, truth)]
    changes = regime_changes(market)
    report = {
        "scored_against_truth": truth is not None,
        "scores": [s.to_dict() for s in scores],
        "regime_share": {r: n for r, n in distribution.rows()},
        "levels": {k: dict(v) for k, v in levels.items()},
        "market_changes": len(changes),
        "last_market_regime": market["market_regime"].drop_nulls().tail(1).to_list()[0]
        if market.height and market["market_regime"].drop_nulls().len() else None,
    }
    markdown = regime_report_markdown(scores) if scores else "No ground truth for this source: regimes are unscored.\n"
    markdown += "\nRegime share of warm bars: " + ", ".join(f"{r}: {n:,}" for r, n in distribution.rows()) + "\n"
    png = regime_plot(scores, market, truth)
    lake.write_json(REPORT_JSON, report)
    lake.write_bytes(REPORT_MD, markdown.encode())
    lake.write_bytes(REPORT_PNG, png)
    report["markdown"] = markdown
    report["png"] = png
    return report
