"""The labels table: daily partitions ``labels/date=.../symbol=...`` built from candles and ATR.

A label for day D looks forward, so D's partition reads D plus enough following days to cover
latency + the longest horizon; rows whose window is not yet in the lake are ``end_of_data`` and
become valid when D is re-materialised after the next days arrive. Labels are a pure function of
the bars they span (no recursion), so the run's range cannot change them.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from clm.data.ingest import CANDLES
from clm.features.build import infer_timeframe_seconds
from clm.features.store import FEATURES
from clm.labels.forward import LabelConfig, build_labels
from clm.lake import Lake

LABELS = "labels"


def lookahead_days(config: LabelConfig, timeframe_seconds: int) -> int:
    """Whole days after D that hold the longest label window of D's last bar."""
    bars = config.latency_bars + max(config.horizons)
    return max(1, math.ceil(bars * timeframe_seconds / 86_400))


@dataclass
class LabelStoreResult:
    rows: int = 0
    files_written: int = 0
    seconds: float = 0.0
    timeframe_seconds: int = 0
    lookahead_days: int = 0
    days: list[dt.date] = field(default_factory=list)
    frames: list[pl.DataFrame] = field(default_factory=list, repr=False)

    def labels(self) -> pl.DataFrame:
        return pl.concat(self.frames, how="vertical") if self.frames else pl.DataFrame()


def materialise_labels(
    lake: Lake,
    dates: Sequence[dt.date],
    config: LabelConfig,
    *,
    timeframe_seconds: int | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> LabelStoreResult:
    """Compute and write the label partitions of ``dates`` (ATR comes from the current feature version)."""
    started = time.perf_counter()
    days = sorted(set(dates))
    candles = lake.scan(CANDLES)
    tf = timeframe_seconds or infer_timeframe_seconds(candles)
    ahead = lookahead_days(config, tf)
    result = LabelStoreResult(timeframe_seconds=tf, lookahead_days=ahead)
    if not days:
        return result
    last = days[-1] + dt.timedelta(days=ahead)
    in_range = pl.col("date").is_between(days[0], last)  # partition column: prunes files
    bars = candles.filter(in_range).select(
        "symbol", "timestamp", "segment_id", "high", "low", "close", "is_filled"
    )
    if config.needs_atr:
        if not lake.has_table(FEATURES) or "atr_14" not in lake.scan(FEATURES).collect_schema():
            raise ValueError(
                "labels need atr_14 (triple barrier or an ATR direction threshold): materialise `features` "
                "with the 'ta' set, or set triple_barrier=false and direction_unit='bps'"
            )
        atr = lake.scan(FEATURES).filter(in_range).select("symbol", "timestamp", "atr_14")
        bars = bars.join(atr, on=["symbol", "timestamp"], how="left")
    labels = build_labels(bars.collect(), config)
    labels = labels.with_columns(pl.col("timestamp").dt.date().alias("date")).filter(pl.col("date").is_in(days))
    written = lake.write_table(LABELS, labels, ["date", "symbol"], replace=days)
    result.rows = labels.height
    result.files_written = written["files_written"]
    result.days = days
    result.frames = [labels]
    result.seconds = time.perf_counter() - started
    log(f"labels for {len(days)} days: {labels.height:,} rows in {result.seconds:.1f}s")
    return result
