"""Leak-free train / validation / test splits: purged walk-forward folds and a chronological split.

Rows are ``(symbol, timestamp)`` with ``timestamp`` = the bar's open (UTC) and ``label_end`` = the
open timestamp of the last bar the row's label uses (``clm.labels.forward``); a row's label
interval is ``[timestamp, label_end]``. Fold boundaries are global (shared by all symbols) and lie
on the bar grid ``t0 + k * bar`` where ``t0`` is the frame's first timestamp and ``bar`` is
``timeframe_seconds``; every window is half-open ``[start, end)``. A fold's three windows are
contiguous and in time order: ``train_end == validation_start`` and ``validation_end ==
test_start`` (the validation window, used for early stopping, may be empty).

Which rows a fold uses (``Fold.is_train`` / ``is_validation`` / ``is_test``; ``E`` = the embargo,
``embargo_bars`` bars):

* test: ``timestamp`` in the test window and ``label_end`` not null.
* validation: ``timestamp`` in the validation window and ``label_end < test_start - E``.
* train: ``timestamp`` in the train window and ``label_end < validation_start - E`` (so also
  ``< test_start - E``; with an empty validation window ``validation_start == test_start``).

Purge (López de Prado, AFML 7.4.1): a training row whose label interval reaches the next held-out
window (``label_end >= start`` of it) is dropped: *purged*. Train is purged against validation and
validation against test, so no train or validation label interval overlaps any test row's, and no
train label interval reaches into the validation window.

Embargo (AFML 7.4.2) drops the training rows right *after* a test window, whose features are
serially correlated with the test rows. Both fold kinds here are forward-only: training never
follows its fold's test window, so that literal rule drops nothing (and the purge already rules out
any row after ``test_start``, since ``label_end >= timestamp``). What remains next to a held-out
window is the training rows whose labels end just before it, so the embargo is implemented as a
margin on the purge: a train (validation) row must have its label end more than ``embargo_bars``
bars before the validation (test) window starts. Rows dropped only by that margin (``start - E <=
label_end < start``) are *embargoed*; ``embargo_bars=0`` turns it off.

Rows with a null ``label_end`` have no label: they are never used in any window and are counted
as ``rows_unlabelled``. Warm-up rows are not handled here: drop them first with
``clm.features.drop_warmup`` (a frame with a ``warm`` column holding ``false`` is refused).

Walk-forward folds (expanding window): the last ``1 - min_train_fraction`` of the timeline is cut
into ``n_folds`` consecutive, non-overlapping test windows of (near) equal bar counts; fold ``k``
trains on everything before its test window, whose last ``validation_fraction`` (rounded) is its
validation window. The chronological split is one fold with ``chronological = (train, validation,
test)`` fractions of the timeline (rounded to bars; the test window takes the rest).

A train or validation window of fewer than ``span + embargo_bars + 1`` bars (``span`` = the
frame's longest label, ``label_end - timestamp``, in bars) would lose every row to purge and
embargo, so a validation window (when ``validation_fraction`` / the validation fraction is > 0) is
widened to that many bars, taken from the training window, and a time range that cannot give every
train window that many bars and every test window one bar is refused, naming the bars it needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

import polars as pl

from clm.checks import is_finite_number, is_int

METHODS = ("purged_walk_forward", "chronological")
SPLITS = ("train", "validation", "test")
TIMESTAMP = "timestamp"
SYMBOL = "symbol"
LABEL_END = "label_end"
WARM = "warm"

AUDIT_SCHEMA = pl.Schema(
    {
        "fold": pl.Int32(),
        "train_start": pl.Datetime("us", "UTC"),
        "train_end": pl.Datetime("us", "UTC"),
        "validation_start": pl.Datetime("us", "UTC"),
        "validation_end": pl.Datetime("us", "UTC"),
        "test_start": pl.Datetime("us", "UTC"),
        "test_end": pl.Datetime("us", "UTC"),
        "embargo_bars": pl.Int32(),
        "rows_total": pl.UInt32(),
        "rows_train": pl.UInt32(),
        "rows_validation": pl.UInt32(),
        "rows_test": pl.UInt32(),
        "rows_purged": pl.UInt32(),
        "rows_embargoed": pl.UInt32(),
        "rows_unlabelled": pl.UInt32(),
        "symbols": pl.UInt32(),
    }
)


@dataclass(frozen=True)
class SplitConfig:
    """How folds are cut; invalid values raise ``ValueError`` naming the field."""

    method: Literal["purged_walk_forward", "chronological"] = "purged_walk_forward"
    n_folds: int = 5
    embargo_bars: int = 12
    min_train_fraction: float = 0.3
    validation_fraction: float = 0.1
    chronological: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not is_int(self.n_folds) or not 2 <= self.n_folds <= 50:
            raise ValueError(f"n_folds must be an int in 2..50, got {self.n_folds!r}")
        if not is_int(self.embargo_bars) or self.embargo_bars < 0:
            raise ValueError(f"embargo_bars must be an int >= 0, got {self.embargo_bars!r}")
        m = self.min_train_fraction
        if not is_finite_number(m) or not 0 < m < 1:
            raise ValueError(f"min_train_fraction must be a number in (0, 1), got {m!r}")
        v = self.validation_fraction
        if not is_finite_number(v) or not 0 <= v <= 0.5:
            raise ValueError(f"validation_fraction must be a number in [0, 0.5], got {v!r}")
        chrono = self.chronological
        if not isinstance(chrono, (list, tuple)) or len(chrono) != 3:
            raise ValueError(
                "chronological must be three fractions (train, validation, test), "
                f"got {chrono!r}"
            )
        chrono = tuple(chrono)
        object.__setattr__(self, "chronological", chrono)
        if not all(is_finite_number(x) for x in chrono):
            raise ValueError(f"chronological fractions must be finite numbers, got {chrono!r}")
        train, validation, test = chrono
        if train <= 0 or test <= 0 or validation < 0:
            raise ValueError(
                "chronological fractions must be train > 0, validation >= 0, test > 0, "
                f"got {chrono!r}"
            )
        if abs(sum(chrono) - 1.0) > 1e-9:
            raise ValueError(f"chronological fractions must sum to 1, got {chrono!r}")


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware (UTC) datetime, got {value!r}")
    return value.astimezone(timezone.utc)


@dataclass(frozen=True)
class Fold:
    """One fold's windows, half-open ``[start, end)``, contiguous: train, validation, test.

    ``embargo`` is ``embargo_bars`` bars as a duration; the ``is_*`` methods give the polars
    boolean expressions (never null) selecting the rows each split uses (see the module doc).
    """

    fold: int
    train_start: datetime
    train_end: datetime
    validation_start: datetime
    validation_end: datetime
    test_start: datetime
    test_end: datetime
    embargo: timedelta = timedelta(0)
    embargo_bars: int = 0

    def __post_init__(self) -> None:
        if not is_int(self.fold) or self.fold < 0:
            raise ValueError(f"fold must be an int >= 0, got {self.fold!r}")
        names = (
            "train_start",
            "train_end",
            "validation_start",
            "validation_end",
            "test_start",
            "test_end",
        )
        for name in names:
            object.__setattr__(self, name, _utc(getattr(self, name), name))
        if not self.train_start < self.train_end:
            raise ValueError(f"fold {self.fold}: train_start must be before train_end")
        if self.train_end != self.validation_start or self.validation_end != self.test_start:
            raise ValueError(
                f"fold {self.fold}: windows must be contiguous "
                "(train_end == validation_start, validation_end == test_start)"
            )
        if not self.validation_start <= self.validation_end:
            raise ValueError(f"fold {self.fold}: validation_start must not be after validation_end")
        if not self.test_start < self.test_end:
            raise ValueError(f"fold {self.fold}: test_start must be before test_end")
        if not isinstance(self.embargo, timedelta) or self.embargo < timedelta(0):
            raise ValueError(f"embargo must be a timedelta >= 0, got {self.embargo!r}")
        if not is_int(self.embargo_bars) or self.embargo_bars < 0:
            raise ValueError(f"embargo_bars must be an int >= 0, got {self.embargo_bars!r}")

    def _in(self, start: datetime, end: datetime) -> pl.Expr:
        return pl.col(TIMESTAMP).is_between(start, end, closed="left").fill_null(False)

    def is_train(self, label_end_col: str = LABEL_END) -> pl.Expr:
        """In the train window, label ending more than the embargo before ``validation_start``."""
        ok = pl.col(label_end_col) < self.validation_start - self.embargo
        return (self._in(self.train_start, self.train_end) & ok).fill_null(False)

    def is_validation(self, label_end_col: str = LABEL_END) -> pl.Expr:
        """In the validation window, label ending more than the embargo before ``test_start``."""
        ok = pl.col(label_end_col) < self.test_start - self.embargo
        return (self._in(self.validation_start, self.validation_end) & ok).fill_null(False)

    def is_test(self, label_end_col: str = LABEL_END) -> pl.Expr:
        """In the test window with a label (``label_end`` not null)."""
        return self._in(self.test_start, self.test_end) & pl.col(label_end_col).is_not_null()

    def split(self, label_end_col: str = LABEL_END) -> pl.Expr:
        """``"train"`` / ``"validation"`` / ``"test"`` or null, as a String expression ``split``."""
        return (
            pl.when(self.is_train(label_end_col))
            .then(pl.lit("train"))
            .when(self.is_validation(label_end_col))
            .then(pl.lit("validation"))
            .when(self.is_test(label_end_col))
            .then(pl.lit("test"))
            .otherwise(pl.lit(None, pl.String))
            .alias("split")
        )


def _check_frame(
    frame: pl.DataFrame | pl.LazyFrame, needed: list[str], what: str
) -> tuple[pl.LazyFrame, pl.Schema]:
    """The frame as a LazyFrame with its schema; names missing columns, checks the time columns
    (``timestamp`` and any other needed column but ``symbol``) are UTC datetimes, and refuses
    warm-up rows."""
    if not isinstance(frame, (pl.DataFrame, pl.LazyFrame)):
        kind = type(frame).__name__
        raise ValueError(f"{what} needs a polars DataFrame or LazyFrame, got {kind}")
    lf = frame.lazy()
    schema = lf.collect_schema()
    missing = [c for c in needed if c not in schema]
    if missing:
        raise ValueError(f"{what} needs columns {missing} in the frame (has {schema.names()})")
    for col in needed:
        dtype = schema[col]
        if col != SYMBOL and (not isinstance(dtype, pl.Datetime) or dtype.time_zone != "UTC"):
            raise ValueError(
                f"{what}: column {col!r} must be Datetime with time zone UTC, got {dtype}"
            )
    if WARM in schema:
        cold = lf.select((~pl.col(WARM).fill_null(False)).sum()).collect().item()
        if cold:
            raise ValueError(
                f"{what}: the frame has {cold} warm-up rows (warm = false); drop them first "
                "with clm.features.drop_warmup"
            )
    return lf, schema


def _frame_stats(
    frame: pl.DataFrame | pl.LazyFrame, label_end_col: str, what: str
) -> tuple[datetime, datetime, int | None]:
    """First and last timestamp, and the longest label span in us (None without labels)."""
    lf, schema = _check_frame(frame, [TIMESTAMP], what)
    ts = pl.col(TIMESTAMP)
    exprs = [pl.len().alias("_n"), ts.min().alias("_t0"), ts.max().alias("_t1")]
    if label_end_col in schema:
        _check_frame(lf.select(label_end_col), [label_end_col], what)
        exprs.append((pl.col(label_end_col) - ts).max().dt.total_microseconds().alias("_span"))
    row = lf.select(exprs).collect().row(0, named=True)
    if row["_n"] == 0 or row["_t0"] is None:
        raise ValueError(f"{what}: the frame is empty (no rows with a timestamp)")
    return (
        row["_t0"].astimezone(timezone.utc),
        row["_t1"].astimezone(timezone.utc),
        row.get("_span"),
    )


def _timeline(
    frame: pl.DataFrame | pl.LazyFrame, timeframe_seconds: int, label_end_col: str, what: str
) -> tuple[datetime, timedelta, int, int]:
    """``(t0, bar, n_bars, span_bars)``: first bar, bar length, bars from the first to the last
    timestamp, and the longest label span in bars (0 without a label column)."""
    if not is_int(timeframe_seconds) or timeframe_seconds <= 0:
        raise ValueError(f"timeframe_seconds must be an int > 0, got {timeframe_seconds!r}")
    t0, t1, span_us = _frame_stats(frame, label_end_col, what)
    bar = timedelta(seconds=timeframe_seconds)
    n_bars = (t1 - t0) // bar + 1
    span_bars = max(0, math.ceil(span_us / (timeframe_seconds * 1_000_000))) if span_us else 0
    return t0, bar, n_bars, span_bars


def _validation_bars(before_test: int, fraction: float, min_window: int) -> int:
    """``fraction`` of the bars before the test window, widened to ``min_window`` (0 if off)."""
    if fraction <= 0:
        return 0
    return max(min_window, round(before_test * fraction))


def _walk_forward_cuts(n_bars: int, config: SplitConfig, min_window: int) -> list[tuple] | None:
    """Per fold ``(train_start, validation_start, test_start, test_end)`` bar indices, or None
    when ``n_bars`` is too short for the config."""
    first_test = math.ceil(n_bars * config.min_train_fraction - 1e-9)
    test_bars = n_bars - first_test
    n = config.n_folds
    if test_bars < n:
        return None
    cuts = []
    for k in range(n):
        s = first_test + (k * test_bars) // n
        e = first_test + ((k + 1) * test_bars) // n
        v = _validation_bars(s, config.validation_fraction, min_window)
        if s - v < min_window:
            return None
        cuts.append((0, s - v, s, e))
    return cuts


def _chronological_cuts(n_bars: int, config: SplitConfig, min_window: int) -> list[tuple] | None:
    train, validation, _ = config.chronological
    b2 = round(n_bars * (train + validation))
    b1 = b2 - _validation_bars(n_bars, validation, min_window)
    if b1 < min_window or n_bars - b2 < 1:
        return None
    return [(0, b1, b2, n_bars)]


def _lower_bound(config: SplitConfig, min_window: int) -> int:
    """A bar count below which no cut can be valid (start of the search for the minimum)."""
    if config.method == "purged_walk_forward":
        m, v = config.min_train_fraction, config.validation_fraction
        need = [config.n_folds / (1 - m), min_window / (m * (1 - v))]
        need.append(min_window * (1 + (v > 0)) / m)
    else:
        train, validation, test = config.chronological
        need = [min_window * (1 + (validation > 0)) / (train + validation), 1 / test]
    return max(1, int(0.9 * max(need)) - 2)


def _folds(
    frame: pl.DataFrame | pl.LazyFrame,
    config: SplitConfig,
    timeframe_seconds: int,
    label_end_col: str,
    cutter,
    what: str,
) -> list[Fold]:
    if not isinstance(config, SplitConfig):
        raise ValueError(f"config must be a SplitConfig, got {type(config).__name__}")
    t0, bar, n_bars, span = _timeline(frame, timeframe_seconds, label_end_col, what)
    min_window = span + config.embargo_bars + 1
    cuts = cutter(n_bars, config, min_window)
    if cuts is None:
        start = max(n_bars + 1, _lower_bound(config, min_window))
        needed = next(
            (n for n in range(start, 10 * start + 1000) if cutter(n, config, min_window)), "more"
        )
        raise ValueError(
            f"{what}: the time range has {n_bars} bars of {timeframe_seconds}s "
            f"({t0.isoformat()} .. {(t0 + (n_bars - 1) * bar).isoformat()}); {config} with labels "
            f"spanning up to {span} bars needs at least {needed} bars (every test window one bar, "
            f"every train and validation window {min_window} = label span + embargo_bars + 1)"
        )
    embargo = config.embargo_bars * bar
    return [
        Fold(
            fold=k,
            train_start=t0 + a * bar,
            train_end=t0 + v * bar,
            validation_start=t0 + v * bar,
            validation_end=t0 + s * bar,
            test_start=t0 + s * bar,
            test_end=t0 + e * bar,
            embargo=embargo,
            embargo_bars=config.embargo_bars,
        )
        for k, (a, v, s, e) in enumerate(cuts)
    ]


def purged_walk_forward(
    frame: pl.DataFrame | pl.LazyFrame,
    config: SplitConfig = SplitConfig(),
    *,
    timeframe_seconds: int,
    label_end_col: str = LABEL_END,
) -> list[Fold]:
    """Expanding-window folds over the frame's time range (all symbols share the boundaries).

    ``frame`` needs ``timestamp``; its ``label_end_col`` (when present) sets the longest label
    span, used only to refuse a range too short for every window to keep a row.
    """
    return _folds(
        frame, config, timeframe_seconds, label_end_col, _walk_forward_cuts, "purged_walk_forward"
    )


def chronological_split(
    frame: pl.DataFrame | pl.LazyFrame,
    config: SplitConfig = SplitConfig(method="chronological"),
    *,
    timeframe_seconds: int,
    label_end_col: str = LABEL_END,
) -> list[Fold]:
    """One fold (``fold = 0``): ``config.chronological`` fractions of the timeline, purged."""
    return _folds(
        frame, config, timeframe_seconds, label_end_col, _chronological_cuts, "chronological_split"
    )


def make_folds(
    frame: pl.DataFrame | pl.LazyFrame,
    config: SplitConfig = SplitConfig(),
    *,
    timeframe_seconds: int,
    label_end_col: str = LABEL_END,
) -> list[Fold]:
    """``purged_walk_forward`` or ``chronological_split``, as ``config.method`` says."""
    if not isinstance(config, SplitConfig):
        raise ValueError(f"config must be a SplitConfig, got {type(config).__name__}")
    fn = purged_walk_forward if config.method == "purged_walk_forward" else chronological_split
    return fn(frame, config, timeframe_seconds=timeframe_seconds, label_end_col=label_end_col)


def _check_folds(folds: list[Fold] | tuple[Fold, ...]) -> list[Fold]:
    if isinstance(folds, Fold):
        folds = [folds]
    folds = list(folds)
    if not folds or not all(isinstance(f, Fold) for f in folds):
        raise ValueError("folds must be a non-empty list of Fold")
    return folds


def fold_audit(
    frame: pl.DataFrame | pl.LazyFrame,
    folds: list[Fold],
    *,
    label_end_col: str = LABEL_END,
) -> pl.DataFrame:
    """The ``cv_folds`` audit table, one row per fold (schema ``AUDIT_SCHEMA``).

    Counts are over the rows whose timestamp lies in ``[train_start, test_end)`` (``rows_total``):
    ``rows_total = rows_train + rows_validation + rows_test + rows_purged + rows_embargoed +
    rows_unlabelled``. Purged / embargoed rows are train- and validation-window rows (see the
    module doc); unlabelled rows (null ``label_end``) are counted in any window. ``symbols`` =
    distinct symbols among the rows used (train, validation or test).
    """
    folds = _check_folds(folds)
    what = "fold_audit"
    lf, _ = _check_frame(frame, [SYMBOL, TIMESTAMP, label_end_col], what)
    lf = lf.select(SYMBOL, TIMESTAMP, label_end_col)
    le = pl.col(label_end_col)
    parts = []
    for f in folds:
        in_train = f._in(f.train_start, f.train_end)
        in_validation = f._in(f.validation_start, f.validation_end)
        in_fold = f._in(f.train_start, f.test_end)
        next_start = pl.when(in_train).then(pl.lit(f.validation_start)).otherwise(
            pl.lit(f.test_start)
        )
        held_in = (in_train | in_validation) & le.is_not_null()
        purged = held_in & (le >= next_start)
        embargoed = held_in & (le < next_start) & (le >= next_start - f.embargo)
        used = f.is_train(label_end_col) | f.is_validation(label_end_col) | f.is_test(label_end_col)
        parts.append(
            lf.select(
                pl.lit(f.fold, pl.Int32).alias("fold"),
                *[
                    pl.lit(getattr(f, name), pl.Datetime("us", "UTC")).alias(name)
                    for name in list(AUDIT_SCHEMA)[1:7]
                ],
                pl.lit(f.embargo_bars, pl.Int32).alias("embargo_bars"),
                in_fold.sum().alias("rows_total"),
                f.is_train(label_end_col).sum().alias("rows_train"),
                f.is_validation(label_end_col).sum().alias("rows_validation"),
                f.is_test(label_end_col).sum().alias("rows_test"),
                purged.sum().alias("rows_purged"),
                embargoed.sum().alias("rows_embargoed"),
                (in_fold & le.is_null()).sum().alias("rows_unlabelled"),
                pl.col(SYMBOL).filter(used).n_unique().alias("symbols"),
            )
        )
    return pl.concat(parts).collect().cast(dict(AUDIT_SCHEMA))


def assign_folds(
    frame: pl.DataFrame | pl.LazyFrame, fold: Fold, *, label_end_col: str = LABEL_END
) -> pl.DataFrame:
    """``frame`` with a String column ``split``: ``"train"`` / ``"validation"`` / ``"test"`` or
    null (outside the fold, purged, embargoed or unlabelled) for one fold."""
    if not isinstance(fold, Fold):
        raise ValueError(f"fold must be a Fold, got {type(fold).__name__}")
    lf, _ = _check_frame(frame, [TIMESTAMP, label_end_col], "assign_folds")
    return lf.with_columns(fold.split(label_end_col)).collect()
