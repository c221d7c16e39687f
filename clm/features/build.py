"""Select feature sets and compute them on candles (the batch path).

Everything is computed per series, a series being one symbol's segment (a long gap starts a new
segment and a new warm-up); ``by`` adds keys such as the feature store's partition window, so many
independent windows are computed in one polars pass. Rows whose index in their series is below the
selection's warm-up are flagged ``warm = false``; ``drop_warmup`` is the one place they are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from clm.features import batch
from clm.features.context import context_features, resolve_reference
from clm.features.core31 import core31_features
from clm.features.expr import inputs
from clm.features.registry import Feature, FeatureSelection, timeframe_to_seconds
from clm.features.ta import ta_features

FEATURE_SETS = ("core31", "ta", "context")
KEY_COLUMNS = ("symbol", "timestamp", "segment_id")
WARM = "warm"
ENGINE = "in-memory"  # polars 2's streaming engine is slower for window functions (field notes)
# Shared windowed nodes are already computed once (``batch``); polars' own common-subexpression pass
# over hundreds of inlined expressions costs more than it saves (0.8 s of 2.3 s on 2.6M bars).
OPTIMIZATIONS = pl.QueryOptFlags(comm_subexpr_elim=False)


@dataclass(frozen=True)
class FeatureConfig:
    """Which sets to build and how the context set is anchored."""

    sets: tuple[str, ...] = FEATURE_SETS
    reference_symbol: str | None = None
    higher_timeframes: tuple[str, ...] = ("1h", "4h")

    def __post_init__(self) -> None:
        sets = tuple(self.sets)
        if not sets:
            raise ValueError("feature config: choose at least one set from " + ", ".join(FEATURE_SETS))
        unknown = [s for s in sets if s not in FEATURE_SETS]
        if unknown:
            raise ValueError(f"feature config: unknown set(s) {unknown}; known sets: {', '.join(FEATURE_SETS)}")
        if len(set(sets)) != len(sets):
            raise ValueError(f"feature config: set listed twice in {list(sets)}")
        for tf in self.higher_timeframes:
            timeframe_to_seconds(tf)
        object.__setattr__(self, "sets", sets)
        object.__setattr__(self, "higher_timeframes", tuple(self.higher_timeframes))


def select_features(
    config: FeatureConfig, symbols: Sequence[str], timeframe_seconds: int
) -> FeatureSelection:
    """The features ``config`` asks for on a universe with bars of ``timeframe_seconds``."""
    features: list[Feature] = []
    for name in config.sets:
        if name == "core31":
            features += core31_features()
        elif name == "ta":
            features += ta_features()
        else:
            reference = resolve_reference(symbols, config.reference_symbol)
            features += context_features(reference, config.higher_timeframes, timeframe_seconds)
    return FeatureSelection(tuple(features), config.sets)


def infer_timeframe_seconds(candles: pl.DataFrame | pl.LazyFrame) -> int:
    """The most common spacing between consecutive bars of a symbol."""
    spacing = (
        candles.lazy()
        .select("symbol", "timestamp")
        .sort("symbol", "timestamp")
        .select(pl.col("timestamp").diff().over("symbol").dt.total_seconds().alias("s"))
        .drop_nulls()
        .filter(pl.col("s") > 0)
        .group_by("s")
        .len()
        .sort(["len", "s"], descending=[True, False])
        .collect(engine=ENGINE)
    )
    if spacing.is_empty():
        raise ValueError("cannot infer the bar timeframe: every symbol has fewer than two bars")
    return int(spacing["s"][0])


def compute_features(
    candles: pl.DataFrame | pl.LazyFrame,
    selection: FeatureSelection,
    *,
    timeframe_seconds: int,
    by: Sequence[str] = (),
) -> pl.DataFrame:
    """One row per candle: ``*by, symbol, timestamp, segment_id, warm`` and one column per feature."""
    by = list(by)
    series_keys = [*by, "symbol", "segment_id"]
    features = selection.features
    bar_level = [f for f in features if not f.timeframe and not f.cross]
    cross = [f for f in features if f.cross]
    needed = sorted(set().union(*(inputs(f.node) for f in features)) - {"timestamp"})
    frame = (
        candles.lazy()
        .select(*by, *KEY_COLUMNS, *needed)
        .sort([*by, "symbol", "timestamp"])
        .with_columns(pl.struct(series_keys).rle_id().set_sorted().alias(batch.GROUP))
    )
    roots = {f.name: f.node for f in bar_level}
    roots.update({_cross_source(f): f.node for f in cross})
    frame = batch.evaluate(frame, roots)
    for timeframe in sorted({f.timeframe for f in features if f.timeframe}, key=timeframe_to_seconds):
        frame = _join_higher_timeframe(
            frame, [f for f in features if f.timeframe == timeframe], timeframe, timeframe_seconds, by
        )
    frame = _cross_sections(frame, cross, by)
    warmup = selection.warmup_bars(timeframe_seconds)
    frame = frame.with_columns((pl.int_range(pl.len()).over(batch.GROUP) >= warmup).alias(WARM))
    return frame.select(*by, *KEY_COLUMNS, WARM, *selection.names).collect(
        engine=ENGINE, optimizations=OPTIMIZATIONS
    )


def _cross_source(feature: Feature) -> str:
    return f"__cross_{feature.name}"


# how a higher bar is made from base bars
_AGGREGATE = {
    "open": pl.col("open").first(),
    "high": pl.col("high").max(),
    "low": pl.col("low").min(),
    "close": pl.col("close").last(),
    "volume": pl.col("volume").sum(),
    "quote_volume": pl.col("quote_volume").sum(),
    "spread_bps": pl.col("spread_bps").mean(),
}


def _join_higher_timeframe(
    frame: pl.LazyFrame, features: list[Feature], timeframe: str, base_seconds: int, by: list[str]
) -> pl.LazyFrame:
    keys = [*by, "symbol", "segment_id"]
    every = f"{timeframe_to_seconds(timeframe)}s"
    needed = sorted(set().union(*(inputs(f.node) for f in features)) - {"timestamp"})
    unknown = [c for c in needed if c not in _AGGREGATE]
    if unknown:
        raise ValueError(f"higher-timeframe features cannot aggregate {unknown}")
    higher = (
        frame.select(*keys, "timestamp", *needed)
        .with_columns(pl.col("timestamp").dt.truncate(every).alias("__bucket"))
        .group_by([*keys, "__bucket"], maintain_order=True)
        .agg(_AGGREGATE[c] for c in needed)
        # segment_id is a sort key: segments that share a bucket (a break inside an hour) would tie,
        # and polars' unstable sort could interleave them and split a series (look-ahead tests)
        .sort([*by, "symbol", "segment_id", "__bucket"])
        .with_columns(pl.struct(keys).rle_id().set_sorted().alias(batch.GROUP))
    )
    higher = batch.evaluate(higher, {f.name: f.node for f in features}).select(
        *keys, "__bucket", *(f.name for f in features)
    )
    # the last higher bar closed by this bar's close: [b, b + T) with b + T <= close
    step = pl.duration(seconds=base_seconds)
    span = pl.duration(seconds=timeframe_to_seconds(timeframe))
    frame = frame.with_columns(((pl.col("timestamp") + step).dt.truncate(every) - span).alias("__bucket"))
    return frame.join(higher, on=[*keys, "__bucket"], how="left", maintain_order="left").drop("__bucket")


def _cross_sections(frame: pl.LazyFrame, cross: list[Feature], by: list[str]) -> pl.LazyFrame:
    if not cross:
        return frame
    at = [*by, "timestamp"]
    exprs = []
    for f in cross:
        source = pl.col(_cross_source(f))
        if f.cross == "mean":
            exprs.append(source.mean().over(at).alias(f.name))
        elif f.cross == "relative":
            exprs.append((source - source.mean().over(at)).alias(f.name))
    frame = frame.with_columns(exprs) if exprs else frame
    for f in cross:
        if f.cross != "reference":
            continue
        reference = frame.filter(pl.col("symbol") == f.reference_symbol).select(
            *at, pl.col(_cross_source(f)).alias(f.name)
        )
        frame = frame.join(reference, on=at, how="left", maintain_order="left")
    return frame.drop([_cross_source(f) for f in cross])


def drop_warmup(features: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The one way warm-up rows leave a feature frame (training, serving and tests alike)."""
    return features.lazy().filter(pl.col(WARM))
