"""Forward-looking training labels: forward log returns, direction classes, triple barrier.

Definitions (``t`` = the row; its features are known at bar t's close; ``L`` = ``latency_bars``;
``h`` = a horizon in bars; bars are counted in rows of the symbol sorted by ``timestamp``, so a
session calendar's closures do not count as bars):

* entry bar ``t+L``, entry price ``close[t+L]``; exit bar ``t+L+h``, exit price ``close[t+L+h]``.
  ``L=0`` means "trade at the close the features were computed on"; the default ``L=1`` leaves one
  bar to compute, decide and route the order.
* ``forward_return_{h} = ln(close[t+L+h] / close[t+L])`` (Float64).
* ``label_end_{h}`` = open timestamp of the exit bar ``t+L+h``: the last bar whose price the label
  uses. A training row overlaps a test window that starts at ``s`` iff ``label_end >= s`` (purging).
  ``label_end`` = the latest ``label_end_{h}`` over the horizons whose label is valid (null when
  none is: such a row has no label to train on).
* ``direction_{h}`` (Int8): 1 up, -1 down, 0 flat when ``|forward_return| <= threshold``. The
  threshold is ``direction_threshold`` basis points of log return (``direction_unit="bps"``,
  1 bp = 1e-4) or ``direction_threshold * atr_14[t] / close[t+L]`` (``"atr"``; null where
  ``atr_14`` is null, e.g. during its warm-up, while the return itself stays valid).
* ``tb_label_{h}`` (Int8) / ``tb_end_{h}``: triple barrier, computed for EVERY horizon (the first
  touch over the longest horizon answers all shorter ones, so this costs no more than one horizon).
  Barriers ``close[t+L] + take_profit_atr * atr_14[t]`` and ``close[t+L] - stop_loss_atr *
  atr_14[t]``; bars ``t+L+1 .. t+L+h`` are scanned, upper touched when ``high >= upper``, lower when
  ``low <= lower``. 1 = take-profit first, -1 = stop-loss first, 0 = neither (timeout at the
  horizon). When both are touched in the same bar the intrabar order is unknown, so the stop-loss
  is counted (conservative). ``tb_end_{h}`` = open timestamp of the touching bar, or of the exit bar
  at timeout. Null where ``atr_14`` is null.
* ``label_null_reason_{h}`` (String) is null when the label is valid; otherwise, first match wins:

  1. ``segment_break``: the window ``t .. t+L+h`` crosses a segment break (a long gap) of the
     symbol, or reaches past the segment's last bar while later segments exist. A label never
     spans a break, including a break between the decision bar ``t`` and the entry.
  2. ``filled_bar``: the entry or the exit bar is a gap-filled flat bar (``is_filled``), whose price
     was never traded. Filled bars strictly inside the window are harmless (flat, no new high/low).
  3. ``end_of_data``: fewer than ``L+h`` later bars of the symbol in the input. This is the only
     "pending" reason: exactly these rows may become valid when more data arrives.

  Whenever the reason is set, every label column of that horizon (return, label_end, direction,
  tb_label, tb_end) is null.

Shifts run on the frame sorted by (symbol, timestamp) and are then masked by per-(symbol, segment)
row positions, so no label can reach into another symbol or segment; nothing loops over rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import polars as pl

from clm.checks import ENGINE, is_finite_number, is_int

NULL_REASONS = ("segment_break", "filled_bar", "end_of_data")
DIRECTION_UNITS = ("bps", "atr")
BPS = 1e-4


@dataclass(frozen=True)
class LabelConfig:
    """How labels are built; invalid values raise ``ValueError`` naming the field."""

    horizons: tuple[int, ...] = (1, 12, 48)
    latency_bars: int = 1
    direction_threshold: float = 10.0
    direction_unit: Literal["bps", "atr"] = "bps"
    triple_barrier: bool = True
    take_profit_atr: float = 2.0
    stop_loss_atr: float = 1.0

    def __post_init__(self) -> None:
        horizons = self.horizons
        if isinstance(horizons, (list, tuple)):
            horizons = tuple(horizons)
            object.__setattr__(self, "horizons", horizons)
        else:
            raise ValueError(f"horizons must be a tuple of ints, got {self.horizons!r}")
        if not horizons:
            raise ValueError("horizons must name at least one horizon")
        for h in horizons:
            if not is_int(h) or h < 1:
                raise ValueError(f"horizons must be ints >= 1 (bars), got {h!r}")
        if len(set(horizons)) != len(horizons):
            raise ValueError(f"horizons must be unique, got {horizons!r}")
        if not is_int(self.latency_bars) or self.latency_bars < 0:
            raise ValueError(f"latency_bars must be an int >= 0, got {self.latency_bars!r}")
        if not is_finite_number(self.direction_threshold) or self.direction_threshold < 0:
            raise ValueError(
                "direction_threshold must be a finite number >= 0, "
                f"got {self.direction_threshold!r}"
            )
        if self.direction_unit not in DIRECTION_UNITS:
            raise ValueError(
                f"direction_unit must be one of {DIRECTION_UNITS}, got {self.direction_unit!r}"
            )
        if not isinstance(self.triple_barrier, bool):
            raise ValueError(f"triple_barrier must be a bool, got {self.triple_barrier!r}")
        for name in ("take_profit_atr", "stop_loss_atr"):
            value = getattr(self, name)
            if not is_finite_number(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    @property
    def needs_atr(self) -> bool:
        return self.triple_barrier or self.direction_unit == "atr"


def label_columns(config: LabelConfig = LabelConfig()) -> list[str]:
    """The columns ``build_labels`` adds besides ``symbol, timestamp, segment_id``, in order."""
    cols: list[str] = []
    for h in config.horizons:
        cols += [
            f"forward_return_{h}",
            f"label_end_{h}",
            f"direction_{h}",
            f"label_null_reason_{h}",
        ]
        if config.triple_barrier:
            cols += [f"tb_label_{h}", f"tb_end_{h}"]
    return [*cols, "label_end"]


def output_schema(
    config: LabelConfig = LabelConfig(), ts_dtype: pl.DataType | None = None
) -> pl.Schema:
    """Column names and dtypes of ``build_labels``'s result (asset metadata, empty frames)."""
    ts = ts_dtype or pl.Datetime("us", "UTC")
    types = {
        "forward_return": pl.Float64(),
        "label_end": ts,
        "direction": pl.Int8(),
        "label_null_reason": pl.String(),
        "tb_label": pl.Int8(),
        "tb_end": ts,
    }
    schema = {"symbol": pl.String(), "timestamp": ts, "segment_id": pl.Int32()}
    for col in label_columns(config):
        schema[col] = ts if col == "label_end" else types[col.rsplit("_", 1)[0]]
    return pl.Schema(schema)


def _prepare(
    candles: pl.LazyFrame | pl.DataFrame, config: LabelConfig, timeframe_seconds: int | None
) -> pl.LazyFrame:
    """Sorted narrow frame with row index ``_i``, segment id and the last row of each segment."""
    lf = candles.lazy()
    names = lf.collect_schema().names()
    needed = ["symbol", "timestamp", "close"]
    if config.triple_barrier:
        needed += ["high", "low"]
    missing = [c for c in needed if c not in names]
    if missing:
        raise ValueError(f"build_labels needs columns {missing} in the input (has {names})")
    if config.needs_atr and "atr_14" not in names:
        why = "triple_barrier=True" if config.triple_barrier else "direction_unit='atr'"
        raise ValueError(
            f"{why} needs an 'atr_14' column in the input frame "
            "(ATR at row t, provided by the caller)"
        )
    if timeframe_seconds is not None and (not is_int(timeframe_seconds) or timeframe_seconds <= 0):
        raise ValueError(f"timeframe_seconds must be an int > 0 or None, got {timeframe_seconds!r}")
    if "segment_id" not in names and timeframe_seconds is None:
        raise ValueError(
            "input has no 'segment_id' column: pass validated candles or timeframe_seconds "
            "(then every gap longer than one bar is a segment break)"
        )

    cols = [c for c in (*needed, "atr_14", "is_filled", "segment_id") if c in names]
    lf = lf.select(cols).sort("symbol", "timestamp")
    if "is_filled" not in names:
        lf = lf.with_columns(pl.lit(False).alias("is_filled"))
    same_symbol = pl.col("symbol") == pl.col("symbol").shift(1)
    starts = ~same_symbol.fill_null(False)
    if "segment_id" in names:
        starts = starts | (pl.col("segment_id") != pl.col("segment_id").shift(1)).fill_null(True)
    if timeframe_seconds is not None:
        gap = pl.col("timestamp").diff() > pl.duration(seconds=timeframe_seconds)
        starts = starts | (same_symbol & gap).fill_null(False)
    lf = lf.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_i"),
        starts.cum_sum().alias("_run"),
        pl.col("is_filled").fill_null(False),
    )
    if "segment_id" not in names:
        lf = lf.with_columns(
            (pl.col("_run") - pl.col("_run").min().over("symbol"))
            .cast(pl.Int32)
            .alias("segment_id")
        )
    return lf.with_columns(
        pl.col("_i").max().over("_run").alias("_seg_last"),
        pl.col("_i").max().over("symbol").alias("_sym_last"),
        pl.col("timestamp").diff().over("symbol").alias("_dt"),
    )


def build_labels(
    candles: pl.LazyFrame | pl.DataFrame,
    config: LabelConfig = LabelConfig(),
    *,
    timeframe_seconds: int | None = None,
) -> pl.DataFrame:
    """Labels for every input candle, sorted by (symbol, timestamp); see the module doc.

    ``candles`` needs ``symbol, timestamp, close`` (+ ``high, low`` for the triple barrier),
    ``atr_14`` when the triple barrier or ATR thresholds are on, and ``segment_id`` unless
    ``timeframe_seconds`` is given; ``is_filled`` is optional (missing = no filled bars). With
    ``timeframe_seconds``, a gap longer than that between two bars of a symbol is also a segment
    break (strict grid; do not use it for session calendars, whose closures are not breaks).
    """
    if not isinstance(config, LabelConfig):
        raise ValueError(f"config must be a LabelConfig, got {type(config).__name__}")
    lf = _prepare(candles, config, timeframe_seconds)
    L = config.latency_bars
    i, seg_last, sym_last = pl.col("_i"), pl.col("_seg_last"), pl.col("_sym_last")
    close, ts = pl.col("close"), pl.col("timestamp")
    entry = close.shift(-L)
    atr = pl.col("atr_14").cast(pl.Float64) if config.needs_atr else None

    exprs: list[pl.Expr] = []
    for h in config.horizons:
        exit_i = i + (L + h)
        entry_filled = pl.col("is_filled").shift(-L) & (i + L <= seg_last)
        exit_filled = pl.col("is_filled").shift(-(L + h)) & (exit_i <= seg_last)
        reason = (
            pl.when((exit_i > seg_last) & (seg_last < sym_last))
            .then(pl.lit("segment_break"))
            .when(entry_filled.fill_null(False) | exit_filled.fill_null(False))
            .then(pl.lit("filled_bar"))
            .when(exit_i > sym_last)
            .then(pl.lit("end_of_data"))
            .otherwise(pl.lit(None, pl.String))
        )
        exprs.append(reason.alias(f"label_null_reason_{h}"))
    lf = lf.with_columns(exprs)

    exprs = []
    for h in config.horizons:
        valid = pl.col(f"label_null_reason_{h}").is_null()
        ret = pl.when(valid).then((close.shift(-(L + h)) / entry).log())
        exprs += [
            ret.alias(f"forward_return_{h}"),
            pl.when(valid).then(ts.shift(-(L + h))).alias(f"label_end_{h}"),
        ]
    lf = lf.with_columns(exprs)

    if config.direction_unit == "bps":
        threshold = pl.lit(config.direction_threshold * BPS)
    else:
        threshold = config.direction_threshold * atr / entry
    exprs = []
    for h in config.horizons:
        r = pl.col(f"forward_return_{h}")
        exprs.append(
            pl.when(r.is_null() | threshold.is_null())
            .then(pl.lit(None, pl.Int8))
            .when(r.abs() <= threshold)
            .then(pl.lit(0, pl.Int8))
            .when(r > 0)
            .then(pl.lit(1, pl.Int8))
            .otherwise(pl.lit(-1, pl.Int8))
            .alias(f"direction_{h}")
        )
    if config.triple_barrier:
        max_h = max(config.horizons)
        upper = entry + config.take_profit_atr * atr
        lower = entry - config.stop_loss_atr * atr
        # the barriers are row t's; compare them with later bars' high/low via shifted columns
        lf = lf.with_columns(upper.alias("_upper"), lower.alias("_lower"))
        up_k = pl.lit(None, pl.Int32)
        dn_k = pl.lit(None, pl.Int32)
        for k in range(max_h, 0, -1):
            up_k = (
                pl.when(pl.col("high").shift(-(L + k)) >= pl.col("_upper"))
                .then(pl.lit(k, pl.Int32))
                .otherwise(up_k)
            )
            dn_k = (
                pl.when(pl.col("low").shift(-(L + k)) <= pl.col("_lower"))
                .then(pl.lit(k, pl.Int32))
                .otherwise(dn_k)
            )
        lf = lf.with_columns(up_k.alias("_up_k"), dn_k.alias("_dn_k"))
    lf = lf.with_columns(exprs)

    if config.triple_barrier:
        exprs = []
        for h in config.horizons:
            ok = pl.col(f"label_null_reason_{h}").is_null() & pl.col("_upper").is_not_null()
            up = pl.col("_up_k").fill_null(h + 1)
            dn = pl.col("_dn_k").fill_null(h + 1)
            # stop-loss wins ties (same bar): the intrabar order is unknown
            label = (
                pl.when(~ok)
                .then(pl.lit(None, pl.Int8))
                .when((dn <= h) & (dn <= up))
                .then(pl.lit(-1, pl.Int8))
                .when(up <= h)
                .then(pl.lit(1, pl.Int8))
                .otherwise(pl.lit(0, pl.Int8))
            )
            end_k = pl.min_horizontal(up, dn, pl.lit(h, pl.Int32))
            end_i = pl.when(ok).then(i + L + end_k)
            exprs += [label.alias(f"tb_label_{h}"), ts.gather(end_i).alias(f"tb_end_{h}")]
        lf = lf.with_columns(exprs)

    ends = [pl.col(f"label_end_{h}") for h in config.horizons]
    lf = lf.with_columns(pl.max_horizontal(ends).alias("label_end"))
    out = lf.select("symbol", "timestamp", "segment_id", *label_columns(config), "_dt", "close")
    out = out.collect(engine=ENGINE)
    _check_input(out)
    return out.drop("_dt", "close").with_columns(pl.col("segment_id").cast(pl.Int32))


def _check_input(out: pl.DataFrame) -> None:
    """Reject inputs that would give wrong labels silently: duplicate bars or unusable prices."""
    bad = out.select(
        (pl.col("_dt") <= pl.duration(microseconds=0)).any().alias("dup"),
        (pl.col("close").is_null() | ~pl.col("close").is_finite() | (pl.col("close") <= 0))
        .any()
        .alias("close"),
    ).row(0, named=True)
    if bad["dup"]:
        raise ValueError(
            "input has duplicate (symbol, timestamp) rows; de-duplicate (validate) first"
        )
    if bad["close"]:
        raise ValueError("input has null, non-finite or non-positive close prices; validate first")


def _horizons_in(labels: pl.DataFrame) -> list[int]:
    prefix = "forward_return_"
    return [int(c[len(prefix) :]) for c in labels.columns if c.startswith(prefix)]


def _num(value: object) -> float | None:
    """JSON-safe float: NaN / inf / None become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def label_summary(labels: pl.DataFrame | pl.LazyFrame) -> dict:
    """Per-horizon counts, null reasons, class balance, return moments (JSON-able metadata)."""
    df = labels.collect(engine=ENGINE) if isinstance(labels, pl.LazyFrame) else labels
    summary: dict = {"rows": df.height, "horizons": {}}
    for h in _horizons_in(df):
        r, d, why = f"forward_return_{h}", f"direction_{h}", f"label_null_reason_{h}"
        aggs = [
            pl.col(r).is_not_null().sum().alias("valid"),
            pl.col(r).mean().alias("mean"),
            pl.col(r).std().alias("std"),
            pl.col(d).is_not_null().sum().alias("directions"),
            *[
                (pl.col(d) == v).sum().alias(name)
                for v, name in ((1, "up"), (-1, "down"), (0, "flat"))
            ],
            *[(pl.col(why) == reason).sum().alias(reason) for reason in NULL_REASONS],
        ]
        tb = f"tb_label_{h}" in df.columns
        if tb:
            t = pl.col(f"tb_label_{h}")
            aggs += [
                t.is_not_null().sum().alias("tb_valid"),
                *[
                    (t == v).sum().alias(f"tb_{n}")
                    for v, n in ((1, "tp"), (-1, "sl"), (0, "timeout"))
                ],
            ]
        s = df.select(aggs).row(0, named=True)
        n_dir = s["directions"]
        entry = {
            "valid": int(s["valid"]),
            "null_reasons": {reason: int(s[reason]) for reason in NULL_REASONS},
            "direction_valid": int(n_dir),
            "up_share": s["up"] / n_dir if n_dir else None,
            "down_share": s["down"] / n_dir if n_dir else None,
            "flat_share": s["flat"] / n_dir if n_dir else None,
            "return_mean": _num(s["mean"]),
            "return_std": _num(s["std"]),
        }
        if tb:
            n_tb = s["tb_valid"]
            entry["tb_valid"] = int(n_tb)
            for n in ("tp", "sl", "timeout"):
                entry[f"tb_{n}_share"] = s[f"tb_{n}"] / n_tb if n_tb else None
        summary["horizons"][str(h)] = entry
    return summary
