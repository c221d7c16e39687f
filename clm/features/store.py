"""The feature store: daily partitions under ``features/version=<definition hash>/date=.../symbol=...``.

Results must not change with the range a run happens to cover. So each day D is computed from its
own window of bars, [D - lookback, D + 1 day), where the lookback covers the selection's warm-up;
many windows are computed in one polars pass (``by`` the window) and only day D's rows are kept.
Materialising one day, a month or the whole history therefore writes the same bytes for D. The
version is the selection's definition hash, so a changed definition writes beside the old version,
never over it; the lake remembers which version is current (the catalog's ``features`` view).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from clm.data.ingest import CANDLES
from clm.features.build import (
    FeatureConfig,
    compute_features,
    infer_timeframe_seconds,
    select_features,
)
from clm.features.registry import ENGINE_VERSION, FeatureSelection
from clm.lake import Lake

FEATURES = "features"
CHUNK_DAYS = 8  # windows computed per polars pass: bounds memory at (lookback + 1) x 8 days of bars
DEFAULT_TIMEFRAME_SECONDS = 300
_WINDOW = "__window"


def lookback_days(selection: FeatureSelection, timeframe_seconds: int) -> int:
    """Whole days before D that hold the selection's warm-up, so D's first bar is already warm."""
    return max(1, math.ceil(selection.warmup_bars(timeframe_seconds) * timeframe_seconds / 86_400))


def default_lookback_days(config: FeatureConfig | None = None) -> int:
    """The lookback of ``config`` on 5-minute bars: sizes the asset's partition mapping."""
    selection = select_features(config or FeatureConfig(), ["REFERENCE"], DEFAULT_TIMEFRAME_SECONDS)
    return lookback_days(selection, DEFAULT_TIMEFRAME_SECONDS)


def windowed(candles: pl.LazyFrame, dates: Sequence[dt.date], lookback: int) -> pl.LazyFrame:
    """Each bar copied into every window D in ``dates`` with D - lookback <= its day <= D."""
    wanted = pl.Series(_WINDOW, sorted(set(dates)), dtype=pl.Date)
    return (
        candles.with_columns(pl.int_ranges(0, lookback + 1, dtype=pl.Int32).alias("__offset"))
        .explode("__offset")
        .with_columns(
            (pl.col("timestamp").dt.date() + pl.duration(days=pl.col("__offset"))).alias(_WINDOW)
        )
        .filter(pl.col(_WINDOW).is_in(wanted.implode()))
        .drop("__offset")
    )


def compute_partitions(
    candles: pl.LazyFrame,
    dates: Sequence[dt.date],
    selection: FeatureSelection,
    timeframe_seconds: int,
    *,
    chunk_days: int = CHUNK_DAYS,
) -> Iterator[tuple[list[dt.date], pl.DataFrame]]:
    """Feature rows of ``dates``, ``chunk_days`` days at a time: (days, frame with a ``date`` column).

    ``candles`` carries the lake's ``date`` partition column (the bar's UTC day).
    """
    lookback = lookback_days(selection, timeframe_seconds)
    days = sorted(set(dates))
    for i in range(0, len(days), chunk_days):
        chunk = days[i : i + chunk_days]
        first = chunk[0] - dt.timedelta(days=lookback)
        # ``date`` is the candles' partition column, so this filter prunes files
        source = candles.filter(pl.col("date").is_between(first, chunk[-1])).drop("date")
        frame = compute_features(
            windowed(source, chunk, lookback), selection, timeframe_seconds=timeframe_seconds, by=[_WINDOW]
        )
        out = (
            frame.filter(pl.col("timestamp").dt.date() == pl.col(_WINDOW))
            .rename({_WINDOW: "date"})
            .sort("date", "symbol", "timestamp")
        )
        yield chunk, out


@dataclass
class StoreResult:
    version: str
    selection: FeatureSelection
    timeframe_seconds: int
    lookback_days: int
    rows: int = 0
    warm_rows: int = 0
    files_written: int = 0
    seconds: float = 0.0
    days: list[dt.date] = field(default_factory=list)
    path: str = ""

    @property
    def manifest(self) -> dict[str, Any]:
        """What the version means; no run times in it, so re-writing it gives the same bytes."""
        return {
            "table": FEATURES,
            "version": self.version,
            "engine_version": ENGINE_VERSION,
            "sets": list(self.selection.sets),
            "timeframe_seconds": self.timeframe_seconds,
            "lookback_days": self.lookback_days,
            "warmup_bars": self.selection.warmup_bars(self.timeframe_seconds),
            "features": self.selection.describe(self.timeframe_seconds),
        }


def universe_symbols(lake: Lake) -> list[str]:
    """Every symbol in the candles table: the reference symbol is chosen from all of them, not a run's slice."""
    return sorted(lake.scan(CANDLES).select("symbol").unique().collect()["symbol"].to_list())


def materialise_features(
    lake: Lake,
    dates: Sequence[dt.date],
    config: FeatureConfig,
    *,
    timeframe_seconds: int | None = None,
    chunk_days: int = CHUNK_DAYS,
    log: Callable[[str], None] = lambda _msg: None,
) -> StoreResult:
    """Compute and write the feature partitions of ``dates`` from the lake's candles."""
    started = time.perf_counter()
    candles = lake.scan(CANDLES)
    tf = timeframe_seconds or infer_timeframe_seconds(candles)
    selection = select_features(config, universe_symbols(lake), tf)
    result = StoreResult(selection.version_hash, selection, tf, lookback_days(selection, tf))
    inputs = candles.select("date", "symbol", "timestamp", "segment_id", "open", "high", "low", "close",
                            "volume", "spread_bps", "quote_volume")
    total = len(set(dates))
    for chunk, frame in compute_partitions(inputs, dates, selection, tf, chunk_days=chunk_days):
        written = lake.write_table(FEATURES, frame, ["date", "symbol"], replace=chunk, version=result.version)
        result.rows += frame.height
        result.warm_rows += int(frame["warm"].sum())
        result.files_written += written["files_written"]
        result.days += chunk
        result.path = str(lake.table_path(FEATURES) / f"version={result.version}")
        log(f"features {len(result.days)}/{total} days ({chunk[0]} .. {chunk[-1]}): {frame.height:,} rows")
    lake.set_current_version(FEATURES, result.version, result.manifest)
    result.seconds = time.perf_counter() - started
    return result
