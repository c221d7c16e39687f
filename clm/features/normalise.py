"""Feature scalers: fitted on a training window only, saved with the model, never in the store.

A scaler stored next to the features would be refitted as data arrives and leak the future into
past rows; fitted on ``timestamp < train_end`` and frozen into the model's artefacts, it transforms
training and serving rows with the very same numbers.

* ``robust``: centre = median, scale = IQR (q75 - q25, linear interpolation, as numpy's default).
* ``zscore``: centre = mean, scale = population standard deviation (ddof 0, as numpy's default).
* Non-finite values (null, NaN, +-inf) are ignored when fitting. A scale that is 0 or undefined
  (a constant column, or no finite value at all) becomes 1.0 and an undefined centre 0.0, so the
  column is shifted (or passed through) rather than blown up to inf/NaN.
* ``transform`` computes ``(x - centre) / scale`` as Float64 and leaves other columns alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

import polars as pl

METHODS = ("robust", "zscore")
FORMAT_VERSION = 1


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class FeatureScaler:
    """Per-column ``centre`` and ``scale`` fitted on rows up to ``fitted_until`` (``rows`` rows)."""

    method: Literal["robust", "zscore"]
    columns: tuple[str, ...]
    centre: tuple[float, ...]
    scale: tuple[float, ...]
    fitted_until: datetime
    rows: int

    def __post_init__(self) -> None:
        for name in ("columns", "centre", "scale"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{name} must be a sequence, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not self.columns or not all(isinstance(c, str) and c for c in self.columns):
            raise ValueError(f"columns must be non-empty strings, got {self.columns!r}")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns must be unique, got {self.columns!r}")
        if not len(self.columns) == len(self.centre) == len(self.scale):
            raise ValueError(
                f"columns, centre and scale must have the same length, got "
                f"{len(self.columns)}, {len(self.centre)}, {len(self.scale)}"
            )
        for column, c in zip(self.columns, self.centre, strict=True):
            if not _finite(c):
                raise ValueError(f"centre of {column!r} must be a finite number, got {c!r}")
        for column, s in zip(self.columns, self.scale, strict=True):
            if not _finite(s) or s <= 0:
                raise ValueError(f"scale of {column!r} must be a finite number > 0, got {s!r}")
        object.__setattr__(self, "centre", tuple(float(c) for c in self.centre))
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        if not isinstance(self.fitted_until, datetime) or self.fitted_until.tzinfo is None:
            raise ValueError(
                f"fitted_until must be a timezone-aware datetime, got {self.fitted_until!r}"
            )
        object.__setattr__(self, "fitted_until", self.fitted_until.astimezone(timezone.utc))
        if not isinstance(self.rows, int) or isinstance(self.rows, bool) or self.rows < 1:
            raise ValueError(f"rows must be an int >= 1, got {self.rows!r}")

    def to_dict(self) -> dict:
        """JSON-serialisable form, stored with the model's artefacts."""
        return {
            "version": FORMAT_VERSION,
            "method": self.method,
            "columns": list(self.columns),
            "centre": list(self.centre),
            "scale": list(self.scale),
            "fitted_until": self.fitted_until.isoformat(),
            "rows": self.rows,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureScaler:
        """Inverse of ``to_dict``; raises ``ValueError`` on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"scaler must be a dict, got {type(data).__name__}")
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported scaler version {version!r} (expected {FORMAT_VERSION})")
        keys = ("method", "columns", "centre", "scale", "fitted_until", "rows")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"scaler dict lacks {missing}")
        until = data["fitted_until"]
        if isinstance(until, str):
            try:
                until = datetime.fromisoformat(until)
            except ValueError as exc:
                raise ValueError(f"fitted_until is not an ISO datetime: {until!r}") from exc
        return cls(
            method=data["method"],
            columns=data["columns"],
            centre=data["centre"],
            scale=data["scale"],
            fitted_until=until,
            rows=data["rows"],
        )

    def expressions(self) -> list[pl.Expr]:
        """``(x - centre) / scale`` per column, named like the column."""
        return [
            ((pl.col(c).cast(pl.Float64) - centre) / scale).alias(c)
            for c, centre, scale in zip(self.columns, self.centre, self.scale, strict=True)
        ]

    def transform(self, frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame | pl.DataFrame:
        """Scale the fitted columns (same frame type back); raises if one is missing."""
        names = frame.collect_schema().names()
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise ValueError(f"frame lacks scaler columns {missing}")
        return frame.with_columns(self.expressions())


def fit_scaler(
    frame: pl.LazyFrame | pl.DataFrame,
    columns: Sequence[str],
    *,
    train_end: datetime,
    method: Literal["robust", "zscore"] = "robust",
    timestamp_col: str = "timestamp",
) -> FeatureScaler:
    """Fit on rows with ``timestamp < train_end`` only (filtered first, lazily; see module doc)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(columns, str):
        raise ValueError("columns must be a sequence of column names, not a string")
    columns = tuple(columns)
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"columns must be a non-empty list of unique names, got {columns!r}")
    if not isinstance(train_end, datetime) or train_end.tzinfo is None:
        raise ValueError(f"train_end must be a timezone-aware datetime, got {train_end!r}")
    lf = frame.lazy()
    schema = lf.collect_schema()
    missing = [c for c in (timestamp_col, *columns) if c not in schema]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    non_numeric = [c for c in columns if not schema[c].is_numeric()]
    if non_numeric:
        raise ValueError(f"columns {non_numeric} are not numeric")
    ts_type = schema[timestamp_col]
    if not isinstance(ts_type, pl.Datetime):
        raise ValueError(f"{timestamp_col!r} must be a Datetime column, got {ts_type}")
    bound = train_end.astimezone(timezone.utc)
    if ts_type.time_zone is None:  # a naive column is taken to be UTC
        bound = bound.replace(tzinfo=None)

    # filter first (lazily): nothing at or after train_end is ever read. One contiguous chunk makes
    # the sums bit-identical however the input was chunked, so refits reproduce the same scaler.
    train = (
        lf.filter(pl.col(timestamp_col) < bound).select(timestamp_col, *columns).collect().rechunk()
    )
    aggs = [pl.len().alias("_rows"), pl.col(timestamp_col).max().alias("_until")]
    for i, c in enumerate(columns):
        x = pl.col(c).cast(pl.Float64)
        x = x.filter(x.is_finite())
        if method == "robust":
            aggs += [
                x.median().alias(f"_c{i}"),
                (x.quantile(0.75, "linear") - x.quantile(0.25, "linear")).alias(f"_s{i}"),
            ]
        else:
            aggs += [x.mean().alias(f"_c{i}"), x.std(ddof=0).alias(f"_s{i}")]
    stats = train.select(aggs).row(0, named=True)
    if stats["_rows"] == 0:
        raise ValueError(
            f"no rows with {timestamp_col} < {train_end.isoformat()} to fit the scaler on"
        )

    centre = [stats[f"_c{i}"] for i in range(len(columns))]
    scale = [stats[f"_s{i}"] for i in range(len(columns))]
    return FeatureScaler(
        method=method,
        columns=columns,
        centre=tuple(float(v) if _finite(v) else 0.0 for v in centre),
        scale=tuple(float(v) if _finite(v) and v > 0 else 1.0 for v in scale),
        fitted_until=_as_utc(stats["_until"]),
        rows=int(stats["_rows"]),
    )


def _as_utc(value: datetime) -> datetime:
    """The last fitted timestamp as an aware UTC datetime (a naive column is taken to be UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
