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

from clm.checks import ENGINE
from clm.features import batch
from clm.features.context import context_features, resolve_reference
from clm.features.core31 import core31_features
from clm.features.expr import inputs
from clm.features.registry import Feature, FeatureSelection, timeframe_to_seconds
from clm.features.ta import ta_features

FEATURE_SETS = ("core31", "ta", "context")
KEY_COLUMNS = ("symbol", "timestamp", "segment_id")
WARM = "warm"
# Shared windowed nodes are already computed once (``batch``); polars' own common-subexpression pass
# over hundreds of inlined expressions costs more than it saves (0.8 s of 2.3 s on 2.6M bars).
OPTIMIZATIONS = pl.QueryOptFlags(comm_subexpr_elim=False)
CHUNK_ROWS = 600_000  # rows of whole series computed together: bounds the intermediate columns' memory


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
    chunk_rows: int = CHUNK_ROWS,
) -> pl.DataFrame:
    """One row per candle: ``*by, symbol, timestamp, segment_id, warm`` and one column per feature.

    Series are computed ``chunk_rows`` rows at a time (whole series per chunk), which bounds the
    memory of the many intermediate columns; chunking cannot change a value, since every
    windowed node runs within its series and only the cross-sections look across series, after.
    """
    by = list(by)
    series_keys = [*by, "symbol", "segment_id"]
    features = selection.features
    needed = sorted(set().union(*(inputs(f.node) for f in features)) - {"timestamp"})
    frame = (
        candles.lazy()
        .select(*by, *KEY_COLUMNS, *needed)
        .sort([*by, "symbol", "timestamp"])
        .with_columns(pl.struct(series_keys).rle_id().set_sorted().alias(batch.GROUP))
        .collect(engine=ENGINE)
    )
    chunks = _series_chunks(frame, chunk_rows) or [frame]
    del frame
    parts = []
    while chunks:  # each chunk's inputs are released as soon as its features exist
        parts.append(_series_features(chunks.pop(0), selection, timeframe_seconds, by))
    out = pl.concat(parts, how="vertical", rechunk=False)
    del parts
    cross = [f for f in features if f.cross]
    warmup = selection.warmup_bars(timeframe_seconds)
    result = (
        _cross_sections(out, cross, by)
        .lazy()
        .with_columns((pl.int_range(pl.len()).over(batch.GROUP) >= warmup).alias(WARM))
        .select(*by, *KEY_COLUMNS, WARM, *selection.names)
    )
    return result.collect(engine=ENGINE, optimizations=OPTIMIZATIONS)


def _series_chunks(frame: pl.DataFrame, chunk_rows: int) -> list[pl.DataFrame]:
    """Slices of about ``chunk_rows`` rows that never cut a series."""
    if frame.height <= chunk_rows:
        return [frame] if frame.height else []
    ends = frame.select(pl.col(batch.GROUP).rle().struct.field("len").cum_sum()).to_series().to_list()
    chunks, start, last = [], 0, 0
    for end in ends:
        if end - start > chunk_rows and last > start:
            chunks.append(frame.slice(start, last - start))
            start = last
        last = end
    chunks.append(frame.slice(start, frame.height - start))
    return chunks


def _series_features(
    frame: pl.DataFrame, selection: FeatureSelection, timeframe_seconds: int, by: list[str]
) -> pl.DataFrame:
    """Bar-level and higher-timeframe features, and the per-series sources of the cross-sections."""
    features = selection.features
    keep = [*by, *KEY_COLUMNS, batch.GROUP, *(f.name for f in features if not f.cross),
            *(cross_source(f) for f in features if f.cross)]
    roots = {f.name: f.node for f in features if not f.timeframe and not f.cross}
    roots.update({cross_source(f): f.node for f in features if f.cross})
    # materialised once: the higher-timeframe passes below read it twice each (aggregate and join)
    out = batch.evaluate(frame.lazy(), roots).collect(engine=ENGINE, optimizations=OPTIMIZATIONS)
    for timeframe in sorted({f.timeframe for f in features if f.timeframe}, key=timeframe_to_seconds):
        out = _join_higher_timeframe(
            out.lazy(), [f for f in features if f.timeframe == timeframe], timeframe, timeframe_seconds
        ).collect(engine=ENGINE, optimizations=OPTIMIZATIONS)
    return out.select(keep)


def cross_source(feature: Feature) -> str:
    """The temporary column holding a cross-asset feature's per-symbol value."""
    return f"__cross_{feature.name}"


# how a higher bar is made from base bars
AGGREGATE = {
    "open": pl.col("open").first(),
    "high": pl.col("high").max(),
    "low": pl.col("low").min(),
    "close": pl.col("close").last(),
    "volume": pl.col("volume").sum(),
    "quote_volume": pl.col("quote_volume").sum(),
    "spread_bps": pl.col("spread_bps").mean(),
}


def _join_higher_timeframe(
    frame: pl.LazyFrame, features: list[Feature], timeframe: str, base_seconds: int
) -> pl.LazyFrame:
    """Higher bars per series, their features, joined back from the last higher bar closed by each bar.

    Buckets are epoch-aligned integer indices (``timestamp // span``), the same arithmetic the live
    path uses; the series key is the base frame's, so a higher bar never mixes segments.
    """
    span_us = timeframe_to_seconds(timeframe) * 1_000_000
    base_us = base_seconds * 1_000_000
    needed = sorted(set().union(*(inputs(f.node) for f in features)) - {"timestamp"})
    unknown = [c for c in needed if c not in AGGREGATE]
    if unknown:
        raise ValueError(f"higher-timeframe features cannot aggregate {unknown}")
    epoch = pl.col("timestamp").dt.epoch("us")
    higher = (
        frame.select(batch.GROUP, "timestamp", *needed)
        .with_columns((epoch // span_us).alias("__bucket"))
        .group_by([batch.GROUP, "__bucket"], maintain_order=True)
        .agg(AGGREGATE[c] for c in needed)
        .sort([batch.GROUP, "__bucket"])
        .with_columns(pl.col(batch.GROUP).set_sorted())
    )
    higher = batch.evaluate(higher, {f.name: f.node for f in features}).select(
        batch.GROUP, "__bucket", *(f.name for f in features)
    )
    # the last higher bar closed by this bar's close: [b, b + T) with b + T <= close
    frame = frame.with_columns(((epoch + base_us) // span_us - 1).alias("__bucket"))
    return frame.join(higher, on=[batch.GROUP, "__bucket"], how="left", maintain_order="left").drop("__bucket")


def _cross_sections(frame: pl.DataFrame, cross: list[Feature], by: list[str]) -> pl.DataFrame:
    """Cross-asset columns, computed on a narrow frame (keys and sources) and added in row order."""
    if not cross:
        return frame
    at = [*by, "timestamp"]
    sources = sorted({cross_source(f) for f in cross})
    narrow = frame.lazy().select(*at, "symbol", *sources)
    exprs = []
    for f in cross:
        source = pl.col(cross_source(f))
        if f.cross == "mean":
            exprs.append(source.mean().over(at).alias(f.name))
        elif f.cross == "relative":
            exprs.append((source - source.mean().over(at)).alias(f.name))
    narrow = narrow.with_columns(exprs) if exprs else narrow
    for f in cross:
        if f.cross != "reference":
            continue
        reference = (
            frame.lazy()
            .filter(pl.col("symbol") == f.reference_symbol)
            .select(*at, pl.col(cross_source(f)).alias(f.name))
        )
        narrow = narrow.join(reference, on=at, how="left", maintain_order="left")
    added = narrow.select(f.name for f in cross).collect(engine=ENGINE, optimizations=OPTIMIZATIONS)
    return frame.drop(sources).hstack(added)


def drop_warmup(features: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The one way warm-up rows leave a feature frame (training, serving and tests alike)."""
    return features.lazy().filter(pl.col(WARM))
