"""Raw bars -> clean candles: quarantine, de-duplication, calendars, gap repair and outlier flags.

``validate_bars`` is the only entry point. It takes a frame in ``RAW_BAR_SCHEMA`` (already parsed by
a source) and returns candles in ``CANDLE_SCHEMA`` plus every side table the lake keeps: the
validation-stage quarantine, gaps, cross-vendor mismatches and the per-symbol calendar.

Pipeline (each stage only sees the rows the previous stages kept):

1. row checks: ``non_positive_price``, ``negative_volume``, ``high_low_inconsistent`` (and,
   defensively, ``non_finite_value`` for NaN/inf/null numbers a source should never emit);
2. file order per (symbol, source_file) by ``source_row``: ``out_of_order`` (timestamp below the
   running maximum of earlier rows), ``duplicate_timestamp`` (equal to it; the first row is kept);
3. timeframe per symbol (config, else the mode of positive in-file timestamp diffs) and phase (the
   mode of ``epoch_us % timeframe``): the symbol's grid is ``phase + k * timeframe``, so bars that
   all open at one offset from the epoch grid (weekly bars opening on Mondays) are aligned; rows
   off the grid are ``misaligned_timestamp``;
4. the same (symbol, timestamp) from several files: the first file in sorted order wins, the others
   are ``duplicate_from_other_source`` and OHLCV differences above tolerance go to mismatches;
5. calendar per symbol: "24/7" when bars occur on all 7 weekdays, when the symbol's history spans
   under 14 days (too little to tell a closure from a gap: gaps are reported rather than hidden),
   or by config; else "sessions":
   the observed (weekday, time-of-day) slots, where a weekday seen on a single date contributes
   its whole first-to-last span (too little history to tell a closure from a gap); config
   "weekdays" = Mon-Fri all day. Slots count from the symbol's grid point at or before Monday
   00:00 UTC (1970-01-05 is slot 0 when the timeframe divides 4 days), so that filled bars land on
   the grid for any timeframe. Gaps are counted in calendar slots only; short gaps are filled
   with flat bars, long gaps start a new ``segment_id``;
6. robust z-score of log returns against trailing (past-only) median / MAD -> ``is_outlier``
   (MAD falls back to 1.2533 * mean absolute deviation when it is 0, e.g. tick-bound prices).

Everything is vectorised polars; there is no Python loop over rows. The stages work on a narrow
frame of integer keys (symbol and file ranks, timestamps, the raw row number), flag rows rather
than filter the wide frame, skip sorting when the input is already in order and gather the wide
columns once at the end (not at all when every row is kept in order). The rolling medians, the
dominant cost, run on the whole return column in one slice per thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from clm.checks import ENGINE
from clm.data.schema import (
    CANDLE_SCHEMA,
    GAP_SCHEMA,
    MISMATCH_SCHEMA,
    QUARANTINE_SCHEMA,
    RAW_BAR_SCHEMA,
)

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = ("open", "high", "low", "close", "volume")

CALENDAR_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "calendar": pl.String(),  # "24/7" or "sessions"
    "timeframe_seconds": pl.Int64(),
}

US = 1_000_000
DAY_US = 86_400 * US
WEEK_US = 7 * DAY_US
MONDAY0_US = 4 * DAY_US  # 1970-01-05 00:00 UTC is the first Monday after the epoch
MIN_OUTLIER_SAMPLES = 20
MIN_SESSION_HISTORY_DAYS = 14  # sessions are inferred only from two weeks of data or more
MAD_SCALE = 1.4826  # MAD -> sigma for normal data
MEAN_AD_SCALE = 1.2533  # mean absolute deviation -> sigma (fallback when the MAD is 0)


class ValidationConfig(BaseModel):
    """Knobs for ``validate_bars``; invalid values raise ``pydantic.ValidationError``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_fill_bars: int = Field(3, ge=0, le=1000, description="gaps up to this many bars are filled")
    timeframe_seconds: int | None = Field(
        None, gt=0, description="bar spacing; None = detect per symbol (mode of diffs)"
    )
    outlier_window: int = Field(288, ge=MIN_OUTLIER_SAMPLES, description="trailing bars for z")
    outlier_z: float = Field(10.0, gt=0, description="|robust z| above this is an outlier")
    mismatch_tolerance_bps: float = Field(5.0, ge=0, description="vendor disagreement tolerance")
    calendars: dict[str, Literal["auto", "24/7", "weekdays"]] = Field(
        default_factory=dict, description="per-symbol calendar override (default auto)"
    )

    @field_validator("outlier_z", "mismatch_tolerance_bps")
    @classmethod
    def _finite(cls, value: float) -> float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return value


@dataclass
class ValidationResult:
    candles: pl.DataFrame  # CANDLE_SCHEMA, sorted by symbol, timestamp
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA, validation-stage rows only
    gaps: pl.DataFrame  # GAP_SCHEMA
    mismatches: pl.DataFrame  # MISMATCH_SCHEMA
    calendars: pl.DataFrame  # CALENDAR_SCHEMA
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    filled_bars: int


# ---------------------------------------------------------------------------------------------
# helpers


def _ts_string(col: str = "timestamp") -> pl.Expr:
    return pl.col(col).dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")


def _utc(col: str) -> pl.Expr:
    """Epoch microseconds -> UTC timestamp."""
    return pl.col(col).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _quarantine(df: pl.DataFrame, reason: str, field: pl.Expr, value: pl.Expr) -> pl.DataFrame:
    return df.select(
        pl.col("source_file"),
        pl.col("source_row").alias("row"),
        field.cast(pl.String).alias("field"),
        value.cast(pl.String).alias("value"),
        pl.lit(reason, pl.String).alias("reason"),
        pl.col("symbol"),
        pl.col("timestamp"),
    )


def _ts_quarantine(raw: pl.DataFrame, idx: pl.Series, reason: str) -> pl.DataFrame:
    """Quarantine rows ``idx`` of ``raw`` for a timestamp rule (the value is the timestamp)."""
    rows = raw.select(pl.col("source_file", "source_row", "symbol", "timestamp").gather(idx))
    return _quarantine(rows, reason, pl.lit("timestamp"), _ts_string())


def _conform(raw: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in RAW_BAR_SCHEMA if c not in raw.columns]
    if missing:
        raise ValueError(f"raw bars lack columns {missing}; expected RAW_BAR_SCHEMA")
    exprs = []
    for name, dtype in RAW_BAR_SCHEMA.items():
        col = pl.col(name)
        if name == "timestamp":
            tz = getattr(raw.schema[name], "time_zone", None)
            if tz is None:
                col = col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            elif tz != "UTC":
                col = col.dt.convert_time_zone("UTC")
        exprs.append(col.cast(dtype))
    out = raw.select(exprs)
    keys = ["source_file", "source_row", "symbol", "timestamp"]
    nulls = {k: n for k, n in out.select(pl.col(keys).null_count()).row(0, named=True).items() if n}
    if nulls:
        raise ValueError(
            f"raw bars have nulls in key columns {nulls}; sources must quarantine them"
        )
    return out


def _same_prev(*keys: str) -> pl.Expr:
    """True where the previous row has the same key values (frame grouped by the keys)."""
    expr = pl.lit(True)
    for key in keys:
        expr = expr & (pl.col(key) == pl.col(key).shift(1)).fill_null(False)
    return expr


def _is_sorted(df: pl.DataFrame, keys: list[str]) -> bool:
    """Lexicographic non-decreasing order of ``keys``, checked in one vectorised pass."""
    cond: pl.Expr | None = None
    for key in reversed(keys):
        cur, prev = pl.col(key), pl.col(key).shift(1)
        cond = cur >= prev if cond is None else (cur > prev) | ((cur == prev) & cond)
    assert cond is not None
    return bool(df.select(cond.fill_null(True).all()).item())


def _codes(s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Lexical rank (UInt32) of every value of a null-free string column, and the sorted values.

    Only the first value of each run of equal values is looked up (sources emit symbol-major
    data, so a 2.6M-row column has a few hundred runs).
    """
    run = s.rle_id()
    n_runs = int(run[-1]) + 1
    heads = s.gather(run.search_sorted(pl.int_range(n_runs, dtype=run.dtype, eager=True)))
    names = heads.unique().sort()
    if names.len() == 1:
        return pl.repeat(0, s.len(), dtype=pl.UInt32, eager=True), names
    code = heads.cast(pl.Enum(names)).to_physical().cast(pl.UInt32)
    return code.gather(run), names


def _per_sid(values: pl.Series, sid: pl.Series, present: pl.Series) -> pl.Expr:
    """``values[sid]`` for every row: a literal when all ``present`` sids share one non-null
    value (the usual data: one timeframe), else the gathered column."""
    v = values.filter(present)
    if v.len() and v.null_count() == 0 and v.n_unique() == 1:
        return pl.lit(v[0], values.dtype)
    return pl.lit(values.gather(sid))


def _runs(sid: pl.Series, value: pl.Series) -> pl.DataFrame:
    """One row per run of equal (sid, value) rows: _sid, _v, _n (the run's length); null values
    are left out. Cheap for the usual data (a constant bar spacing), exact for any."""
    f = pl.DataFrame({"_sid": sid, "_v": value})
    start = f.select(
        (pl.col("_sid") != pl.col("_sid").shift(1)).fill_null(True)
        | pl.col("_v").ne_missing(pl.col("_v").shift(1))
    ).to_series()
    pos = start.arg_true()
    return (
        f[pos]
        .with_columns((pos.shift(-1, fill_value=f.height) - pos).cast(pl.Int64).alias("_n"))
        .drop_nulls("_v")
    )


def _mode_by_sid(runs: pl.DataFrame, n_sids: int) -> pl.Series:
    """The value with the most rows per sid (ties: the smallest) from ``_runs``-like rows, as an
    Int64 series indexed by sid (null where a sid has no value)."""
    modes = (
        runs.lazy()
        .group_by("_sid", "_v")
        .agg(pl.col("_n").sum())
        .sort(["_sid", "_n", "_v"], descending=[False, True, False])
        .group_by("_sid", maintain_order=True)
        .agg(pl.col("_v").first())
        .collect(engine=ENGINE)
    )
    out = pl.Series("_mode", [None] * n_sids, dtype=pl.Int64)
    return out.scatter(modes["_sid"], modes["_v"].cast(pl.Int64)) if modes.height else out


# ---------------------------------------------------------------------------------------------
# stages. ``k`` is the narrow working frame: _i (row of ``raw``), _sid, _fid (lexical ranks of
# symbol and source_file), _row (source_row), _ts (epoch microseconds). The stages flag rows and
# ``k`` is filtered (or reordered) at most twice; the wide columns are gathered once, at the end.


def _row_checks(raw: pl.DataFrame) -> tuple[pl.Series | None, pl.DataFrame | None]:
    """The mask of rows failing a row rule (None when all pass) and their quarantine rows."""
    # one cheap pass for the (usual) all-valid case: high, low and volume finite, low > 0,
    # volume >= 0 and low <= open, close <= high (which makes every price finite and positive)
    c = pl.col
    ok = (
        c("high").is_finite()
        & c("low").is_finite()
        & c("volume").is_finite()
        & (c("low") > 0)
        & (c("volume") >= 0)
        & (c("low") <= c("open"))
        & (c("low") <= c("close"))
        & (c("high") >= c("open"))
        & (c("high") >= c("close"))
    ).fill_null(False)
    bad_mask = raw.select(~ok).to_series()
    if not bad_mask.any():
        return None, None
    bad = raw.filter(bad_mask)

    non_finite = ~pl.all_horizontal([c(col).is_finite().fill_null(False) for col in VALUE_COLUMNS])
    non_positive = pl.any_horizontal([c(col) <= 0 for col in PRICE_COLUMNS])
    high_bad = c("high") < pl.max_horizontal("open", "close")
    low_bad = c("low") > pl.min_horizontal("open", "close")
    reason = (
        # sources guarantee finite numbers; this only keeps a broken source from poisoning the rest
        pl.when(non_finite)
        .then(pl.lit("non_finite_value"))
        .when(non_positive)
        .then(pl.lit("non_positive_price"))
        .when(c("volume") < 0)
        .then(pl.lit("negative_volume"))
        .otherwise(pl.lit("high_low_inconsistent"))
    )
    bad = bad.with_columns(reason.alias("_reason"))
    field_expr = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    for col in VALUE_COLUMNS:
        field_expr = field_expr.when(
            (c("_reason") == "non_finite_value") & ~c(col).is_finite().fill_null(False)
        ).then(pl.lit(col))
    for col in PRICE_COLUMNS:
        field_expr = field_expr.when(
            (c("_reason") == "non_positive_price") & (c(col) <= 0)
        ).then(pl.lit(col))
    field_expr = (
        field_expr.when(c("_reason") == "negative_volume")
        .then(pl.lit("volume"))
        .when(low_bad & ~high_bad)
        .then(pl.lit("low"))
        .otherwise(pl.lit("high"))
        .alias("_field")
    )
    bad = bad.with_columns(field_expr)
    value_expr = pl.lit(None, pl.Float64)
    for col in VALUE_COLUMNS:
        value_expr = pl.when(c("_field") == col).then(c(col)).otherwise(value_expr)
    q = bad.select(
        c("source_file"),
        c("source_row").alias("row"),
        c("_field").alias("field"),
        value_expr.cast(pl.String).alias("value"),
        c("_reason").alias("reason"),
        c("symbol"),
        c("timestamp"),
    )
    return bad_mask, q


PACKED_KEY_LIMIT = 2**62  # (file, timestamp) keys below this fit an Int64 with room to spare


def _file_order(
    k: pl.DataFrame, raw: pl.DataFrame, bad_rows: pl.Series | None
) -> tuple[pl.DataFrame, list[pl.DataFrame], bool]:
    """Drop the rows failing a row rule and flag, within each (symbol, file) in file order
    (source_row), ``out_of_order`` rows (timestamp below the running maximum of the earlier kept
    rows) and ``duplicate_timestamp`` rows (equal to it).

    Returns ``k`` sorted by (_sid, _fid, _row) without those rows and without ``_row``, the
    quarantine rows and whether ``k`` had to be reordered.
    """
    reordered = not _is_sorted(k, ["_sid", "_fid", "_row"])
    if reordered:
        perm = k.select(pl.arg_sort_by("_sid", "_fid", "_row")).to_series()
        k = k[perm]
        bad_rows = None if bad_rows is None else bad_rows.gather(perm)
    same, ts = _same_prev("_sid", "_fid"), pl.col("_ts")
    if k.select((~same | (ts > ts.shift(1))).all()).item():
        # timestamps strictly increase within every file (so within its valid rows too)
        k = k if bad_rows is None else k.filter(~bad_rows)
        return k.drop("_row"), [], reordered

    bad = pl.lit(False) if bad_rows is None else pl.col("_bad")
    frame = k if bad_rows is None else k.with_columns(bad_rows.alias("_bad"))
    # the running maximum of the valid rows per (symbol, file) in one pass over a key that
    # orders the files one after the other, (_sid, _fid) * span + timestamp, when it fits in 62
    # bits; rows failing a row rule get a key below all others
    t_lo, t_hi = int(k["_ts"].min()), int(k["_ts"].max())  # type: ignore[arg-type]
    span, n_fids = t_hi - t_lo + 1, int(k["_fid"].max()) + 1  # type: ignore[arg-type]
    n_groups = (int(k["_sid"].max()) + 1) * n_fids  # type: ignore[arg-type]
    if n_groups * span < PACKED_KEY_LIMIT:
        key = (pl.col("_sid").cast(pl.Int64) * n_fids + pl.col("_fid")) * span + (ts - t_lo)
        cur = pl.when(bad).then(pl.lit(-1, pl.Int64)).otherwise(key)
        prev = pl.col("_cur").cum_max().shift(1)
    else:
        cur = pl.when(bad).then(pl.lit(None, pl.Int64)).otherwise(ts)
        prev = pl.col("_cur").cum_max().shift(1).forward_fill().over("_sid", "_fid")
    code = (
        frame.lazy()
        .with_columns(cur.alias("_cur"))
        .with_columns(prev.alias("_prev"))
        .select(
            pl.when(bad)
            .then(pl.lit(1, pl.Int8))
            .when(same & (pl.col("_cur") < pl.col("_prev")))
            .then(pl.lit(2, pl.Int8))
            .when(same & (pl.col("_cur") == pl.col("_prev")))
            .then(pl.lit(3, pl.Int8))
            .otherwise(pl.lit(0, pl.Int8))
        )
        .collect(engine=ENGINE)
        .to_series()
    )
    qs = []
    for value, reason in ((2, "out_of_order"), (3, "duplicate_timestamp")):
        idx = k["_i"].filter(code == value)
        if idx.len():
            qs.append(_ts_quarantine(raw, idx, reason))
    return k.filter(code == 0).drop("_row"), qs, reordered


def _grid(
    k: pl.DataFrame, raw: pl.DataFrame, n_sids: int, config: ValidationConfig
) -> tuple[pl.Series, pl.Series, pl.Series | None, pl.DataFrame | None]:
    """Timeframe and phase per sid (Int64 microseconds, position = sid, null when undetectable),
    the mask of ``misaligned_timestamp`` rows (None when there are none) and their quarantine.

    The timeframe is the configured one, else the mode of the in-file timestamp differences
    (ties: the smaller), in whole seconds. The phase is the mode of ``epoch_us % timeframe`` over
    the symbol's rows (ties: the smaller), so bars that all open at the same offset (weekly bars
    on Mondays) are aligned; rows off that phase are misaligned.
    ``k`` is sorted by (_sid, _fid, _ts) with timestamps strictly increasing within each file.
    """
    nulls = pl.Series([None] * n_sids, dtype=pl.Int64)
    if k.height == 0:
        if config.timeframe_seconds is None:
            return nulls, nulls, None, None
        return nulls.fill_null(config.timeframe_seconds * US), nulls, None, None
    sid = k["_sid"]
    first = ~_same_prev("_sid", "_fid")  # the first row of a file
    diff = pl.col("_ts") - pl.col("_ts").shift(1)
    # row range of each sid (``k`` is sorted by sid)
    sids = pl.int_range(n_sids, dtype=sid.dtype, eager=True)
    lo, hi = sid.search_sorted(sids, side="left"), sid.search_sorted(sids, side="right")
    present = lo < hi

    def anchors(step: pl.Series) -> pl.Series:
        """Positions of the rows that start a file or follow the previous one by other than
        the symbol's ``step``."""
        step_row = _per_sid(step, sid, present)
        return k.select((first | (diff != step_row)).fill_null(True)).to_series().arg_true()

    if config.timeframe_seconds is not None:
        tf = pl.repeat(config.timeframe_seconds * US, n_sids, dtype=pl.Int64, eager=True)
        pos = anchors(tf)
    else:
        # candidate: each symbol's first difference; it is the mode where it is the spacing of
        # more than half of the symbol's differences (counted from the rows where it is not)
        at_1, at_2 = lo.clip(upper_bound=k.height - 1), (lo + 1).clip(upper_bound=k.height - 1)
        cand = (
            k.select(
                (pl.col("_ts").gather(at_2) - pl.col("_ts").gather(at_1)).alias("_c"),
                first.gather(at_2).alias("_f"),
            )
            .with_columns((lo + 1 < hi).alias("_ok"))
            .select(pl.when(pl.col("_ok") & ~pl.col("_f")).then("_c"))
            .to_series()
        )
        pos = anchors(cand)
        at = pl.DataFrame({"_sid": sid.gather(pos)}).with_columns(
            k.select(first.gather(pos)).to_series().alias("_f")
        )
        n_at = (
            at.group_by("_sid")
            .agg(pl.len().alias("_n"), pl.col("_f").sum().alias("_nf"))
            .join(sids.to_frame("_sid"), on="_sid", how="right")
            .sort("_sid")
        )
        n_first = n_at["_nf"].fill_null(0).cast(pl.Int64)
        n_diffs = (hi - lo).cast(pl.Int64) - n_first
        n_other = n_at["_n"].fill_null(0).cast(pl.Int64) - n_first
        majority = (2 * (n_diffs - n_other) > n_diffs) & cand.is_not_null()
        mode = pl.select(pl.when(majority).then(cand)).to_series()
        rest = sids.filter(~majority & (n_diffs > 0))
        if rest.len():
            sub = k.filter(pl.col("_sid").is_in(rest.implode())).select(
                "_sid", pl.when(first).then(None).otherwise(diff).alias("_d")
            )
            mode = mode.fill_null(_mode_by_sid(_runs(sub["_sid"], sub["_d"]), n_sids))
        # timeframes are whole seconds (at least one)
        tf = ((mode + US // 2) // US).clip(lower_bound=1) * US
        if not tf.equals(cand, null_equal=True, check_names=False):
            pos = anchors(tf)
    # a bar one timeframe after the previous one has its phase: the phase is computed only at
    # the other bars ("anchors") and holds for the run of bars up to the next anchor
    at = k.select("_sid", "_ts")[pos]
    runs = at.select(
        "_sid",
        (pl.col("_ts") % tf.gather(at["_sid"])).alias("_v"),
        (pos.shift(-1, fill_value=k.height) - pos).cast(pl.Int64).alias("_n"),
        pos.alias("_pos"),
    )
    phase = _mode_by_sid(runs.drop_nulls("_v"), n_sids)
    off = runs.filter((runs["_v"] != phase.gather(runs["_sid"])).fill_null(False))
    if off.height == 0:
        return tf, phase, None, None
    rows = off.select(pl.int_ranges("_pos", pl.col("_pos") + pl.col("_n")).alias("_p"))
    rows = rows.explode("_p")
    mask = pl.repeat(False, k.height, dtype=pl.Boolean, eager=True).scatter(rows["_p"], True)
    q = _ts_quarantine(raw, k["_i"].gather(rows["_p"]), "misaligned_timestamp")
    return tf, phase, mask, q


def _cross_source(
    k: pl.DataFrame, raw: pl.DataFrame, misaligned: pl.Series | None, tolerance_bps: float
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame, bool]:
    """Drop misaligned rows and keep the first source file per (symbol, timestamp); the others
    are ``duplicate_from_other_source``, their OHLCV differences above tolerance mismatches.

    Returns ``k`` (_i, _sid, _ts) sorted by symbol, timestamp, the quarantine, the mismatches
    and whether rows were reordered.
    """
    no_mismatch = pl.DataFrame(schema=MISMATCH_SCHEMA)
    mis = pl.lit(False) if misaligned is None else pl.col("_mis")
    frame = k if misaligned is None else k.with_columns(misaligned.alias("_mis"))
    perm = None
    if _is_sorted(k, ["_sid", "_ts", "_fid"]):
        view, view_pos = frame, None
    else:
        # ``k`` is sorted by (_sid, _fid, _ts): only the symbols with rows from several files are
        # out of order, so only their rows are sorted (their positions stay theirs)
        multi = k.filter(_same_prev("_sid") & (pl.col("_fid") != pl.col("_fid").shift(1)))
        sel = k["_sid"].is_in(multi["_sid"].unique().implode())
        pos = sel.arg_true()
        view = frame.filter(sel).with_columns(pos.alias("_p")).sort(["_sid", "_ts", "_fid"])
        view_pos = view["_p"]
        perm = pl.int_range(k.height, dtype=pos.dtype, eager=True).scatter(pos, view_pos)
    # equal (symbol, timestamp) rows are now adjacent and the lexically first file comes first;
    # misaligned rows are already gone (an aligned row never shares their timestamp)
    dup = view.select(_same_prev("_sid", "_ts") & ~mis).to_series()
    drop = misaligned
    q, mismatches = None, no_mismatch
    if dup.any():
        dpos = dup.arg_true()
        # the kept row of a run of duplicates is the row just before the run
        kept = (
            dpos.to_frame("_d")
            .select(
                pl.when((pl.col("_d") != pl.col("_d").shift(1) + 1).fill_null(True))
                .then(pl.col("_d") - 1)
                .forward_fill()
            )
            .to_series()
        )
        if view_pos is not None:
            dpos, kept = view_pos.gather(dpos), view_pos.gather(kept)
        drop_dup = pl.repeat(False, k.height, dtype=pl.Boolean, eager=True).scatter(dpos, True)
        drop = drop_dup if drop is None else drop | drop_dup
        others = raw[k["_i"].gather(dpos)]
        kept_rows = raw.select(pl.col("source_file", *VALUE_COLUMNS).gather(k["_i"].gather(kept)))
        others = pl.concat(
            [others, kept_rows.select(pl.all().name.prefix("_kept_"))], how="horizontal"
        )
        q = _quarantine(others, "duplicate_from_other_source", pl.lit("timestamp"), _ts_string())
        parts = []
        for c in VALUE_COLUMNS:
            kept_v, other = pl.col(f"_kept_{c}"), pl.col(c)
            diff = (
                pl.when(kept_v == other)
                .then(0.0)
                .when(kept_v == 0)
                .then(float("inf"))
                .otherwise((other - kept_v).abs() / kept_v.abs() * 1e4)
            )
            parts.append(
                others.select(
                    "symbol",
                    "timestamp",
                    pl.lit(c).alias("field"),
                    pl.col("_kept_source_file").alias("kept_source"),
                    kept_v.alias("kept_value"),
                    pl.col("source_file").alias("other_source"),
                    other.alias("other_value"),
                    diff.alias("diff_bps"),
                ).filter(pl.col("diff_bps") > tolerance_bps)
            )
        mismatches = pl.concat(parts).sort("symbol", "timestamp", "field", "other_source")

    k = k.select("_i", "_sid", "_ts")
    if perm is not None:
        k = k[perm if drop is None else perm.filter(~drop.gather(perm))]
    elif drop is not None:
        k = k.filter(~drop)
    return k, q, mismatches, perm is not None


def _calendars(
    k: pl.DataFrame,
    names: pl.Series,
    tf_us: pl.Series,
    phase_us: pl.Series,
    config: ValidationConfig,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-symbol calendar table and the open weekly slots of the "sessions" symbols.

    ``cal`` (one row per ``_sid``, in ``_sid`` order): _sid, symbol, _tf_us, _anchor, _kind
    ("24/7" | "sessions"), _S (slots per week), _has_rows. ``open_slots``: _sid, _slot (slot of
    the week; slot 0 starts at the symbol's grid point at or before Monday 00:00 UTC, ``_anchor``)
    for the "sessions" symbols.
    """
    # weekdays seen per symbol, from the first bar of each (symbol, day) (``k`` sorted by sid, ts)
    day = pl.col("_ts") // DAY_US
    weekdays = (
        k.lazy()
        .select("_sid", day.alias("_day"))
        .filter(~_same_prev("_sid", "_day"))
        .group_by("_sid")
        .agg(
            ((pl.col("_day") + 3) % 7).n_unique().alias("_n_weekdays"),  # 1970-01-01: Thursday
            (pl.col("_day").max() - pl.col("_day").min() + 1).alias("_span_days"),
        )
        .collect(engine=ENGINE)
    )
    rules = pl.DataFrame(
        {"symbol": list(config.calendars), "_rule": list(config.calendars.values())},
        schema={"symbol": pl.String, "_rule": pl.String},
    )
    n_sids = names.len()
    cal = (
        pl.DataFrame(
            {
                "_sid": pl.int_range(n_sids, dtype=pl.UInt32, eager=True),
                "symbol": names,
                "_tf_us": tf_us,
                "_ph": phase_us,
            }
        )
        .join(weekdays, on="_sid", how="left")
        .join(rules, on="symbol", how="left")
        .with_columns(
            pl.col("_rule").fill_null("auto"),
            pl.col("_n_weekdays").is_not_null().alias("_has_rows"),
            # the symbol's grid point at or before Monday 0: slot numbers count from it
            (MONDAY0_US - (MONDAY0_US - pl.col("_ph").fill_null(0)) % pl.col("_tf_us")).alias(
                "_anchor"
            ),
            # a timeframe that does not divide a week has no stable weekly slots -> 24/7
            pl.when(pl.col("_tf_us").is_not_null() & (WEEK_US % pl.col("_tf_us") == 0))
            .then(WEEK_US // pl.col("_tf_us"))
            .alias("_S"),
        )
        .with_columns(
            pl.when(pl.col("_S").is_null() | (pl.col("_rule") == "24/7"))
            .then(pl.lit("24/7"))
            .when(pl.col("_rule") == "weekdays")
            .then(pl.lit("weekdays"))
            .when(pl.col("_n_weekdays") == 7)
            .then(pl.lit("24/7"))
            # too little history to tell a closure from a gap: assume 24/7 and report the gaps
            .when(pl.col("_span_days") < MIN_SESSION_HISTORY_DAYS)
            .then(pl.lit("24/7"))
            .otherwise(pl.lit("sessions"))
            .alias("_kind")
        )
        .sort("_sid")
    )
    slot_schema = {"_sid": pl.UInt32, "_slot": pl.Int64}
    open_parts = [pl.DataFrame(schema=slot_schema)]
    observed = cal.filter(pl.col("_kind") == "sessions").select("_sid", "_tf_us", "_S", "_anchor")
    if observed.height:
        slots = (
            k.select("_sid", "_ts")
            .join(observed, on="_sid", how="inner")
            .select(
                "_sid",
                (((pl.col("_ts") - pl.col("_anchor")) // pl.col("_tf_us")) % pl.col("_S")).alias(
                    "_slot"
                ),
                (pl.col("_ts") // DAY_US).alias("_day"),
                # weekday of the bar (Monday = 0), the same as its slot's start
                ((pl.col("_ts") - MONDAY0_US) // DAY_US % 7).alias("_weekday"),
            )
        )
        open_parts.append(slots.select("_sid", "_slot").unique())
        # A weekday seen on one date only cannot tell a closure (a lunch break) from a gap:
        # its whole span from first to last bar counts as one session.
        open_parts.append(
            slots.group_by("_sid", "_weekday")
            .agg(
                pl.col("_day").n_unique().alias("_dates"),
                pl.col("_slot").min().alias("_lo"),
                pl.col("_slot").max().alias("_hi"),
            )
            .filter(pl.col("_dates") == 1)
            .select("_sid", pl.int_ranges("_lo", pl.col("_hi") + 1).alias("_slot"))
            .explode("_slot")
        )
    weekday_syms = cal.filter(pl.col("_kind") == "weekdays").select(
        "_sid", "_tf_us", "_S", "_anchor"
    )
    if weekday_syms.height:
        open_parts.append(
            weekday_syms.with_columns(pl.int_ranges(0, pl.col("_S")).alias("_slot"))
            .explode("_slot")
            # slot starts Mon-Fri (slot 0 starts at the anchor, up to one bar before Monday 0)
            .filter(
                (pl.col("_slot") * pl.col("_tf_us") + pl.col("_anchor") - MONDAY0_US) % WEEK_US
                < 5 * DAY_US
            )
            .select("_sid", "_slot")
        )
    open_slots = (
        pl.concat([p.select(pl.col(c).cast(t) for c, t in slot_schema.items()) for p in open_parts])
        .unique()
        .sort("_sid", "_slot")
    )
    cal = cal.with_columns(pl.col("_kind").replace("weekdays", "sessions"))
    cols = ["_sid", "symbol", "_tf_us", "_anchor", "_kind", "_S", "_has_rows"]
    return cal.select(cols), open_slots


def _gaps(
    k: pl.DataFrame,
    raw: pl.DataFrame,
    cal: pl.DataFrame,
    open_slots: pl.DataFrame,
    max_fill: int,
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.Series]:
    """Gap rows, the flat bars to insert and the positions in ``k`` that start a new segment.

    ``filled`` (sorted by position): _idx (position in ``k`` of the bar after the gap), _ts.
    """
    tf_row = _per_sid(cal["_tf_us"], k["_sid"], cal["_has_rows"])
    candidates = (
        k.lazy()
        .select("_sid", "_ts")
        .with_row_index("_idx")
        .filter(_same_prev("_sid") & (pl.col("_ts") - pl.col("_ts").shift(1) > tf_row))
        .collect(engine=ENGINE)
    )
    candidates = candidates.with_columns(cal["_tf_us"].gather(candidates["_sid"]).alias("_tf_us"))
    no_breaks = pl.Series("_idx", [], dtype=pl.UInt32)
    if candidates.height == 0:
        return pl.DataFrame(schema=GAP_SCHEMA), None, no_breaks
    # the bar before a gap is the row just before it in ``k``
    prev_i = k["_i"].gather(candidates["_idx"] - 1)
    prev = raw.select(pl.col("symbol", "timestamp").gather(prev_i))
    g = (
        candidates.select(
            "_idx",
            "_sid",
            "_tf_us",
            prev["symbol"],
            prev["timestamp"].dt.epoch("us").alias("_start"),
            pl.col("_ts").alias("_end"),
        )
        .join(cal.select("_sid", "_anchor", "_kind", "_S"), on="_sid", how="left")
        .with_columns(
            # [_a, _b): the absolute slot numbers strictly between the two bars
            ((pl.col("_start") - pl.col("_anchor")) // pl.col("_tf_us") + 1).alias("_a"),
            ((pl.col("_end") - pl.col("_anchor")) // pl.col("_tf_us")).alias("_b"),
        )
    )

    sessions = g.filter(pl.col("_kind") == "sessions")
    if sessions.height:
        # open slots before each slot of the week (_C) and per week (_W)
        prefix = (
            cal.filter(pl.col("_kind") == "sessions")
            .select("_sid", pl.int_ranges(0, pl.col("_S")).alias("_slot"))
            .explode("_slot")
            .join(
                open_slots.with_columns(pl.lit(1, pl.Int64).alias("_open")),
                on=["_sid", "_slot"],
                how="left",
            )
            .with_columns(pl.col("_open").fill_null(0))
            .sort("_sid", "_slot")
            .with_columns(
                (pl.col("_open").cum_sum().over("_sid") - pl.col("_open")).alias("_C"),
                pl.col("_open").sum().over("_sid").alias("_W"),
            )
            .select("_sid", "_slot", "_C", "_W")
        )
        for x in ("_a", "_b"):
            sessions = (
                sessions.with_columns((pl.col(x) % pl.col("_S")).alias("_slot"))
                .join(prefix, on=["_sid", "_slot"], how="left")
                # open slots in absolute slots [0, x)
                .with_columns(
                    ((pl.col(x) // pl.col("_S")) * pl.col("_W") + pl.col("_C")).alias(f"_F{x}")
                )
                .drop("_slot", "_C", "_W")
            )
        sessions = sessions.with_columns((pl.col("_F_b") - pl.col("_F_a")).alias("missing_bars"))
        sessions = sessions.drop("_F_a", "_F_b")
    else:
        sessions = sessions.with_columns(pl.lit(None, pl.Int64).alias("missing_bars"))
    other = g.filter(pl.col("_kind") != "sessions").with_columns(
        (pl.col("_b") - pl.col("_a")).alias("missing_bars")
    )
    g = (
        pl.concat([other, sessions])
        .filter(pl.col("missing_bars") > 0)  # all missing slots outside the calendar: no gap
        .with_columns(
            pl.when(pl.col("missing_bars") <= max_fill)
            .then(pl.lit("filled"))
            .otherwise(pl.lit("segment_break"))
            .alias("action")
        )
        .sort("_idx")
    )
    breaks = g.filter(pl.col("action") == "segment_break")["_idx"]

    filled = None
    to_fill = g.filter(pl.col("action") == "filled")
    if to_fill.height:
        slots = (
            to_fill.with_columns(pl.int_ranges("_a", "_b").alias("_abs"))
            .explode("_abs")
            .with_columns((pl.col("_abs") % pl.col("_S")).alias("_slot"))
        )
        in_calendar = slots.join(open_slots, on=["_sid", "_slot"], how="semi")
        filled = (
            pl.concat(
                [
                    slots.filter(pl.col("_kind") != "sessions"),
                    in_calendar.filter(pl.col("_kind") == "sessions"),
                ]
            )
            .sort("_idx", "_abs")
            .select("_idx", (pl.col("_abs") * pl.col("_tf_us") + pl.col("_anchor")).alias("_ts"))
        )
    gaps = g.select(
        "symbol",
        _utc("_start").alias("gap_start"),
        _utc("_end").alias("gap_end"),
        "missing_bars",
        "action",
    ).select(pl.col(c).cast(t) for c, t in GAP_SCHEMA.items())
    return gaps, filled, breaks


def _rolling_median(
    x: pl.Series, head: pl.Series, head_sid: pl.Series, window: int
) -> pl.Series:
    """Trailing median of ``x`` over ``window`` rows (min 1) within each symbol.

    ``head`` holds the positions of the first ``window - 1`` rows of each symbol (rows sorted by
    symbol) and ``head_sid`` their symbol. The median of a window does not depend on the rows
    before it, so the whole column is computed in overlapping slices, one per thread, at once
    (``.over`` parallelises over symbols only), and the ``head`` rows, whose windows reach into
    the previous symbol, are recomputed per symbol.
    """
    n = x.len()
    chunks = max(1, min(pl.thread_pool_size(), n // (16 * window)))
    bounds = [n * c // chunks for c in range(chunks + 1)]
    frames = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        start = max(0, lo - (window - 1))
        frames.append(
            x.slice(start, hi - start)
            .to_frame("_x")
            .lazy()
            .select(pl.col("_x").rolling_median(window, min_samples=1).slice(lo - start))
        )
    parts = pl.collect_all(frames, engine=ENGINE)
    med = parts[0].to_series() if chunks == 1 else pl.concat([p.to_series() for p in parts])
    fixed = (
        pl.DataFrame({"_sid": head_sid, "_x": x.gather(head)})
        .select(pl.col("_x").rolling_median(window, min_samples=1).over("_sid"))
        .to_series()
    )
    return med.scatter(head, fixed)


def _outliers(
    k: pl.DataFrame, close: pl.Series, breaks: pl.Series, window: int
) -> tuple[pl.Series, pl.Series]:
    """segment_id and outlier_z for the real bars (``k`` sorted by symbol, timestamp).

    Log returns within a segment are scored against the median and MAD of the ``window`` previous
    returns of the symbol. Each past return's deviation is taken from the rolling median of the
    window ending at it, so every statistic at bar t uses bars <= t-1 only (no look-ahead).
    """
    n = k.height
    if n == 0:
        return pl.Series([], dtype=pl.Int32), pl.Series("outlier_z", [], dtype=pl.Float64)
    sid = k["_sid"]
    # the rows without a return: the first row of each symbol and the first row of a segment
    sym = sid.rle().struct.unnest().with_columns(
        (pl.col("len").cum_sum() - pl.col("len")).cast(pl.Int64).alias("_start")
    )
    events = pl.concat(
        [
            sym.select(pl.col("_start").alias("_pos"), pl.col("value").alias("_sid")),
            pl.DataFrame({"_pos": breaks.cast(pl.Int64), "_sid": sid.gather(breaks)}),
        ]
    ).sort("_pos")
    # the rows after an event up to the next one are a piece of consecutive returns; ``r`` holds
    # the pieces one after the other, from position _r0
    pieces = events.with_columns(
        (pl.col("_pos").shift(-1, fill_value=n) - pl.col("_pos") - 1).alias("_len")
    ).with_columns((pl.col("_len").cum_sum() - pl.col("_len")).alias("_r0"))
    if breaks.len():
        brk = pl.repeat(False, n, dtype=pl.Boolean, eager=True).scatter(breaks, True)
        csum = brk.cum_sum()
        first = pl.repeat(False, n, dtype=pl.Boolean, eager=True).scatter(sym["_start"], True)
        base = pl.Series([0] * (int(sid.max()) + 1), dtype=csum.dtype)  # type: ignore[arg-type]
        base = base.scatter(sid.filter(first), csum.filter(first))
        segment_id = (csum - base.gather(sid)).cast(pl.Int32)
    else:
        segment_id = pl.repeat(0, n, dtype=pl.Int32, eager=True)

    # log return of row j + 1 at j (slices: no shifted copy of the closes)
    log_ret = (close.slice(1) / close.slice(0, n - 1)).log()
    starts, lens = pieces["_pos"].to_list(), pieces["_len"].to_list()
    r = pl.concat(
        [log_ret.slice(p, m) for p, m in zip(starts, lens, strict=True) if m > 0]
        or [pl.Series([], dtype=pl.Float64)],
        rechunk=True,
    )
    if r.len() == 0:  # single bars only
        return segment_id, pl.repeat(None, n, dtype=pl.Float64, eager=True).alias("outlier_z")
    # each symbol's rows of ``r``: the first ``window - 1`` and the first MIN_OUTLIER_SAMPLES
    by_sym = (
        pieces.group_by("_sid", maintain_order=True)
        .agg(pl.col("_r0").first(), pl.col("_len").sum())
        .filter(pl.col("_len") > 0)
    )

    def first_rows(count: int) -> pl.DataFrame:
        return by_sym.select(
            "_sid",
            pl.int_ranges("_r0", pl.col("_r0") + pl.min_horizontal("_len", pl.lit(count, pl.Int64)))
            .cast(pl.List(pl.get_index_type()))
            .alias("_p"),
        ).explode("_p")

    head = first_rows(window - 1)
    m = _rolling_median(r, head["_p"], head["_sid"], window)
    dev = (r - m).abs()
    mad = _rolling_median(dev, head["_p"], head["_sid"], window)
    # z at return i from the statistics at i - 1
    stats = pl.DataFrame(
        {"_r": r.slice(1), "_m": m.slice(0, r.len() - 1), "_mad": mad.slice(0, r.len() - 1)}
    )
    z = pl.when(pl.col("_mad") > 0).then(
        (pl.col("_r") - pl.col("_m")) / (pl.col("_mad") * MAD_SCALE)
    )
    # where the MAD is 0 the scale falls back to the mean absolute deviation: computed only for
    # the symbols where a scored bar needs it
    zero = (mad == 0).arg_true()
    if zero.len():
        # the symbol of each such row, by its position in ``r`` (``by_sym`` is in ``r`` order)
        at = (by_sym["_r0"].search_sorted(zero.cast(pl.Int64), side="right") - 1).cast(pl.Int64)
        needed = zero.cast(pl.Int64) >= by_sym["_r0"].gather(at) + (MIN_OUTLIER_SAMPLES - 1)
        needed_sids = by_sym["_sid"].gather(at.filter(needed))
        syms = by_sym.filter(pl.col("_sid").is_in(needed_sids.implode()))
        if syms.height:
            rows = syms.select(
                "_sid",
                pl.int_ranges("_r0", pl.col("_r0") + pl.col("_len"))
                .cast(pl.List(pl.get_index_type()))
                .alias("_p"),
            ).explode("_p")
            mean_ad = pl.repeat(None, r.len(), dtype=pl.Float64, eager=True).scatter(
                rows["_p"],
                pl.DataFrame({"_sid": rows["_sid"], "_d": dev.gather(rows["_p"])})
                .select(pl.col("_d").rolling_mean(window, min_samples=1).over("_sid"))
                .to_series(),
            )
            stats = stats.with_columns(mean_ad.slice(0, r.len() - 1).alias("_mean_ad"))
            z = z.when(pl.col("_mean_ad") > 0).then(
                (pl.col("_r") - pl.col("_m")) / (pl.col("_mean_ad") * MEAN_AD_SCALE)
            )
    del m, mad, dev
    z_r = pl.concat([pl.Series([None], dtype=pl.Float64), stats.select(z).to_series()])
    # fewer than MIN_OUTLIER_SAMPLES earlier returns of the symbol: no z
    z_r = z_r.scatter(first_rows(MIN_OUTLIER_SAMPLES)["_p"], None)
    # back to one value per bar, null on the bars without a return
    null = pl.Series([None], dtype=pl.Float64)
    parts = []
    for r0, m_ in zip(pieces["_r0"].to_list(), lens, strict=True):
        parts.append(null)
        if m_ > 0:
            parts.append(z_r.slice(r0, m_))
    z_k = pl.concat(parts, rechunk=True)
    return segment_id, z_k.alias("outlier_z")


# ---------------------------------------------------------------------------------------------

CANDLE_SOURCE_COLUMNS = (
    "symbol", "timestamp", *PRICE_COLUMNS, "volume", "spread_bps", "source_file"
)


def _with_fills(
    raw: pl.DataFrame,
    src: pl.Series,
    filled: pl.DataFrame,
    segment_id: pl.Series,
    outlier_z: pl.Series,
) -> tuple[pl.DataFrame, pl.Series, pl.Series, pl.Series]:
    """The raw rows of the candles with the flat bars in place, and their per-row columns.

    A flat bar is its gap's previous bar (same symbol, close, spread, source and segment) with
    open = high = low = close, no volume, no z and the flat bar's timestamp.
    """
    n_fill = filled.height
    n_out = src.len() + n_fill
    # output position of the f-th flat bar (after the k row _idx - 1): _idx - 1 + f + 1
    fill_pos = (filled["_idx"].cast(pl.Int64) + pl.int_range(n_fill, eager=True)).cast(src.dtype)
    is_filled = pl.repeat(False, n_out, dtype=pl.Boolean, eager=True).scatter(fill_pos, True)
    out_k = (~is_filled).cum_sum() - 1  # the row of k (the bar before the gap, for a flat bar)
    src, segment_id = src.gather(out_k), segment_id.gather(out_k)
    outlier_z = outlier_z.gather(out_k).scatter(fill_pos, None)
    gathered = raw.select(pl.col(*CANDLE_SOURCE_COLUMNS).gather(src))
    cols = dict(zip(gathered.columns, gathered.get_columns(), strict=True))
    del gathered  # the series now own their buffers: the scatters below write in place
    fill_close = cols["close"].gather(fill_pos)
    cols["timestamp"].scatter(fill_pos, filled.select(_utc("_ts")).to_series())
    for c in ("open", "high", "low"):
        cols[c].scatter(fill_pos, fill_close)
    cols["volume"].scatter(fill_pos, 0.0)
    return pl.DataFrame(list(cols.values())), is_filled, segment_id, outlier_z


def _empty_result() -> ValidationResult:
    return ValidationResult(
        candles=pl.DataFrame(schema=CANDLE_SCHEMA),
        quarantine=pl.DataFrame(schema=QUARANTINE_SCHEMA),
        gaps=pl.DataFrame(schema=GAP_SCHEMA),
        mismatches=pl.DataFrame(schema=MISMATCH_SCHEMA),
        calendars=pl.DataFrame(schema=CALENDAR_SCHEMA),
        rows_in=0,
        rows_kept=0,
        rows_quarantined=0,
        filled_bars=0,
    )


def validate_bars(raw: pl.DataFrame, config: ValidationConfig | None = None) -> ValidationResult:
    """Validate raw bars (``RAW_BAR_SCHEMA``) into candles (``CANDLE_SCHEMA``); see module doc."""
    config = config or ValidationConfig()
    if isinstance(raw, pl.LazyFrame):
        raw = raw.collect(engine=ENGINE)
    raw = _conform(raw)
    rows_in = raw.height
    if rows_in == 0:
        return _empty_result()

    sid, names = _codes(raw["symbol"])
    fid, _ = _codes(raw["source_file"])
    k = pl.DataFrame(
        {
            "_i": pl.int_range(rows_in, dtype=pl.get_index_type(), eager=True),
            "_sid": sid,
            "_fid": fid,
            "_row": raw["source_row"],
            "_ts": raw["timestamp"].dt.epoch("us"),
        }
    )
    del sid, fid
    bad_rows, q_rows = _row_checks(raw)
    k, q_order, reordered = _file_order(k, raw, bad_rows)
    tf_us, phase_us, misaligned, q_misaligned = _grid(k, raw, names.len(), config)
    k, q_other, mismatches, resorted = _cross_source(
        k, raw, misaligned, config.mismatch_tolerance_bps
    )
    in_place = k.height == rows_in and not (reordered or resorted)  # k["_i"] == 0, 1, 2, ...

    q_parts = [q for q in (q_rows, *q_order, q_misaligned, q_other) if q is not None]
    quarantine = (
        pl.concat([pl.DataFrame(schema=QUARANTINE_SCHEMA), *q_parts], how="vertical_relaxed")
        .select(pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items())
        .sort("source_file", "row", nulls_last=True)
    )

    cal, open_slots = _calendars(k, names, tf_us, phase_us, config)
    gaps, filled, breaks = _gaps(k, raw, cal, open_slots, config.max_fill_bars)
    close = raw["close"] if in_place else raw["close"].gather(k["_i"])
    segment_id, outlier_z = _outliers(k, close, breaks, config.outlier_window)
    del close
    rows_kept = k.height

    # the candles: kept rows in (symbol, timestamp) order, each run of flat bars right after the
    # bar before its gap, whose symbol, close, spread and source it repeats
    filled_bars = 0 if filled is None else filled.height
    if filled is not None and filled_bars:
        base, is_filled, segment_id, outlier_z = _with_fills(
            raw, k["_i"], filled, segment_id, outlier_z
        )
    else:
        is_filled = pl.repeat(False, rows_kept, dtype=pl.Boolean, eager=True)
        base = raw if in_place else raw.select(pl.col(*CANDLE_SOURCE_COLUMNS).gather(k["_i"]))
    del k
    candles = base.select(
        "symbol",
        "timestamp",
        *PRICE_COLUMNS,
        "volume",
        "spread_bps",
        (pl.col("close") * pl.col("volume")).alias("quote_volume"),
        is_filled.alias("is_filled"),
        segment_id.alias("segment_id"),
        (outlier_z.abs() > config.outlier_z).fill_null(False).alias("is_outlier"),
        outlier_z.alias("outlier_z"),
        pl.col("source_file").alias("source"),
    )
    candles = candles.select(pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items())

    calendars = (
        cal.filter("_has_rows")
        .select(
            "symbol",
            pl.col("_kind").alias("calendar"),
            (pl.col("_tf_us") // US).alias("timeframe_seconds"),
        )
        .select(pl.col(c).cast(t) for c, t in CALENDAR_SCHEMA.items())
    )
    mismatches = mismatches.select(pl.col(c).cast(t) for c, t in MISMATCH_SCHEMA.items())

    result = ValidationResult(
        candles=candles,
        quarantine=quarantine,
        gaps=gaps,
        mismatches=mismatches,
        calendars=calendars,
        rows_in=rows_in,
        rows_kept=rows_kept,
        rows_quarantined=quarantine.height,
        filled_bars=filled_bars,
    )
    # the row accounting invariant (raised explicitly so that python -O keeps it)
    if rows_in != rows_kept + result.rows_quarantined:
        raise AssertionError(
            f"rows in {rows_in} != kept {rows_kept} + quarantined {result.rows_quarantined}"
        )
    if candles.height != rows_kept + filled_bars:
        raise AssertionError(f"candles {candles.height} != kept {rows_kept} + filled {filled_bars}")
    return result


__all__ = [
    "CALENDAR_SCHEMA",
    "ValidationConfig",
    "ValidationResult",
    "validate_bars",
]
