"""Sliding windows over per-series values for the sequence models (N-HiTS, PatchTST).

A *series* is one ``(symbol, segment_id)`` run of rows sorted by ``timestamp`` (``symbol`` alone
when the frame has no ``segment_id``). Its values are ``n_channels`` columns: channel 0 is the
modelled series (``series`` column, by default ``close`` turned into one-bar log returns
``ln(close[t] / close[t-1])`` within the series, so the first row of every series is missing),
channels ``1..`` are the ``features`` columns as they are.

A window of length ``W = context_length + prediction_length`` starting at row ``s`` covers rows
``s .. s+W-1`` of ONE series: its input is rows ``s .. s+C-1`` and its target rows ``s+C ..
s+W-1``. Its *anchor* is the input's last row ``t = s+C-1`` (everything the model sees is known at
bar t's close; the target is the next ``H`` values). Windows never cross a series boundary and are
dropped when any value in them is missing or not finite. ``prediction_length=0`` gives the
prediction windows: one per row that has ``C`` valid values ending at it.

Nothing loops over rows or series: rows of all series are concatenated, boundaries come from a
per-row "last row of my series" index, missing values from a cumulative count, and a window batch
is a fancy-index into ``numpy.lib.stride_tricks.sliding_window_view`` of the concatenation (a
view, so the windows are never all materialised at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

TRANSFORMS = ("log_return", "none")


@dataclass(frozen=True)
class SeriesWindows:
    """Windows over ``values`` (rows sorted by series, then time); see the module doc."""

    values: np.ndarray  # (n_rows, n_channels) float32
    starts: np.ndarray  # (n_windows,) int64: first row of each window in ``values``
    context_length: int
    prediction_length: int
    row_index: np.ndarray  # (n_windows,) int64: the anchor's row number in the caller's frame
    symbols: np.ndarray  # (n_windows,) anchor symbol
    timestamps: np.ndarray  # (n_windows,) anchor timestamp
    channels: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def window_length(self) -> int:
        return self.context_length + self.prediction_length

    def batch(self, index: np.ndarray | slice | None = None) -> np.ndarray:
        """``(k, n_channels, W)`` float32 copy of the windows ``index`` selects (all when None)."""
        starts = self.starts if index is None else self.starts[index]
        if starts.shape[0] == 0:
            return np.zeros((0, self.n_channels, self.window_length), dtype=np.float32)
        view = sliding_window_view(self.values, self.window_length, axis=0)  # (n-W+1, ch, W)
        return np.ascontiguousarray(view[starts])

    def split(self, index: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs (k, ch, C), targets (k, ch, H))`` of the selected windows."""
        w = self.batch(index)
        return w[..., : self.context_length], w[..., self.context_length :]

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation over the rows any window covers (scale >= 1e-8)."""
        size = self.values.shape[0] + 1
        covered = np.bincount(self.starts, minlength=size) - np.bincount(
            self.starts + self.window_length, minlength=size
        )
        rows = np.cumsum(covered[:-1]) > 0
        used = self.values[rows].astype(np.float64)
        if used.shape[0] == 0:
            return np.zeros(self.n_channels, np.float32), np.ones(self.n_channels, np.float32)
        loc = used.mean(axis=0)
        scale = np.maximum(used.std(axis=0), 1e-8)
        return loc.astype(np.float32), scale.astype(np.float32)


def series_frame(
    frame: pl.DataFrame,
    *,
    series: str = "close",
    transform: str = "log_return",
    features: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort ``frame`` by series and time; return ``(values, row, last, symbol, timestamp)``.

    ``values`` (n, 1 + len(features)) float32 with NaN for missing/non-finite values, ``row`` the
    caller's row number of each sorted row, ``last`` the sorted position of the last row of each
    row's series.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    names = frame.collect_schema().names()
    needed = ["symbol", "timestamp", series, *features]
    missing = [c for c in needed if c not in names]
    if missing:
        raise ValueError(f"frame lacks columns {missing} needed for the windows")
    keys = ["symbol", "segment_id"] if "segment_id" in names else ["symbol"]
    df = frame.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
        *keys,
        "timestamp",
        pl.col(series).cast(pl.Float64).alias("_y"),
        *[pl.col(f).cast(pl.Float64).alias(f"_x{i}") for i, f in enumerate(features)],
    ).sort([*keys, "timestamp"])
    start = pl.lit(False)
    for key in keys:
        start = start | (pl.col(key) != pl.col(key).shift(1)).fill_null(True)
    df = df.with_columns(start.cum_sum().alias("_series"))
    if transform == "log_return":
        df = df.with_columns((pl.col("_y") / pl.col("_y").shift(1)).log().over("_series").alias("_y"))
    df = df.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_pos"))
    df = df.with_columns(pl.col("_pos").max().over("_series").alias("_last"))
    value_cols = ["_y", *[f"_x{i}" for i in range(len(features))]]
    values = df.select(value_cols).to_numpy().astype(np.float32)
    values[~np.isfinite(values)] = np.nan
    return (
        values,
        df["_row"].to_numpy(),
        df["_last"].to_numpy(),
        df["symbol"].to_numpy(),
        df["timestamp"].to_numpy(),
    )


def make_windows(
    frame: pl.DataFrame,
    *,
    context_length: int,
    prediction_length: int = 0,
    series: str = "close",
    transform: str = "log_return",
    features: Sequence[str] = (),
) -> SeriesWindows:
    """All complete windows of ``frame`` (``prediction_length=0``: prediction windows)."""
    if context_length < 1 or prediction_length < 0:
        raise ValueError("context_length must be >= 1 and prediction_length >= 0")
    values, row, last, symbol, timestamp = series_frame(
        frame, series=series, transform=transform, features=features
    )
    width = context_length + prediction_length
    n = values.shape[0]
    if n < width:
        starts = np.zeros(0, dtype=np.int64)
    else:
        bad = np.isnan(values).any(axis=1)
        bad_before = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
        s = np.arange(n - width + 1, dtype=np.int64)
        ok = (bad_before[s + width] == bad_before[s]) & (s + width - 1 <= last[s])
        starts = s[ok]
    anchor = starts + context_length - 1
    return SeriesWindows(
        values=values,
        starts=starts,
        context_length=context_length,
        prediction_length=prediction_length,
        row_index=row[anchor],
        symbols=symbol[anchor],
        timestamps=timestamp[anchor],
        channels=(series, *features),
    )
