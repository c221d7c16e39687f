"""Raw bars -> clean candles: quarantine, de-duplication, calendars, gap repair and outlier flags.

``validate_bars`` is the only entry point. It takes a frame in ``RAW_BAR_SCHEMA`` (already parsed by
a source) and returns candles in ``CANDLE_SCHEMA`` plus every side table the lake keeps: the
validation-stage quarantine, gaps, cross-vendor mismatches and the per-symbol calendar.

Pipeline (each stage only sees the rows the previous stages kept):

1. row checks: ``non_positive_price``, ``negative_volume``, ``high_low_inconsistent`` (and,
   defensively, ``non_finite_value`` for NaN/inf/null numbers a source should never emit);
2. file order per (symbol, source_file) by ``source_row``: ``out_of_order`` (timestamp below the
   running maximum of earlier rows), ``duplicate_timestamp`` (equal to it; the first row is kept);
3. timeframe per symbol (config, else the mode of positive in-file timestamp diffs) and
   ``misaligned_timestamp`` (not an epoch multiple of the timeframe);
4. the same (symbol, timestamp) from several files: the first file in sorted order wins, the others
   are ``duplicate_from_other_source`` and OHLCV differences above tolerance go to mismatches;
5. calendar per symbol: "24/7" when bars occur on all 7 weekdays (or by config), else "sessions":
   the observed (weekday, time-of-day) slots, where a weekday seen on a single date contributes
   its whole first-to-last span (too little history to tell a closure from a gap); config
   "weekdays" = Mon-Fri all day. Gaps are counted in calendar slots only; short gaps are filled
   with flat bars, long gaps start a new ``segment_id``;
6. robust z-score of log returns against trailing (past-only) median / MAD -> ``is_outlier``
   (MAD falls back to 1.2533 * mean absolute deviation when it is 0, e.g. tick-bound prices).

Everything is vectorised polars; the only Python loops run over the five OHLCV fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

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

# the in-memory engine is 2-3x faster than the (default) streaming engine for the window functions
# (rolling medians, cum_max/cum_sum .over) this module is made of
ENGINE = "in-memory"
US = 1_000_000
DAY_US = 86_400 * US
WEEK_US = 7 * DAY_US
MONDAY0_US = 4 * DAY_US  # 1970-01-05 00:00 UTC is the first Monday after the epoch
MIN_OUTLIER_SAMPLES = 20
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


# ---------------------------------------------------------------------------------------------
# stages


def _row_checks(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    non_finite = ~pl.all_horizontal([pl.col(c).is_finite().fill_null(False) for c in VALUE_COLUMNS])
    non_positive = pl.any_horizontal([pl.col(c) <= 0 for c in PRICE_COLUMNS])
    high_bad = pl.col("high") < pl.max_horizontal("open", "close")
    low_bad = pl.col("low") > pl.min_horizontal("open", "close")
    hl_bad = high_bad | low_bad | (pl.col("high") < pl.col("low"))
    reason = (
        # sources guarantee finite numbers; this only keeps a broken source from poisoning the rest
        pl.when(non_finite)
        .then(pl.lit("non_finite_value"))
        .when(non_positive)
        .then(pl.lit("non_positive_price"))
        .when(pl.col("volume") < 0)
        .then(pl.lit("negative_volume"))
        .when(hl_bad)
        .then(pl.lit("high_low_inconsistent"))
    )
    flagged = df.with_columns(reason.alias("_reason"))
    bad = flagged.filter(pl.col("_reason").is_not_null())
    if bad.height == 0:
        return df, None
    good = flagged.filter(pl.col("_reason").is_null()).drop("_reason")

    field_expr = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    for col in VALUE_COLUMNS:
        field_expr = field_expr.when(
            (pl.col("_reason") == "non_finite_value") & ~pl.col(col).is_finite().fill_null(False)
        ).then(pl.lit(col))
    for col in PRICE_COLUMNS:
        field_expr = field_expr.when(
            (pl.col("_reason") == "non_positive_price") & (pl.col(col) <= 0)
        ).then(pl.lit(col))
    field_expr = (
        field_expr.when(pl.col("_reason") == "negative_volume")
        .then(pl.lit("volume"))
        .when(low_bad & ~high_bad)
        .then(pl.lit("low"))
        .otherwise(pl.lit("high"))
        .alias("_field")
    )
    bad = bad.with_columns(field_expr)
    value_expr = pl.lit(None, pl.Float64)
    for col in VALUE_COLUMNS:
        value_expr = pl.when(pl.col("_field") == col).then(pl.col(col)).otherwise(value_expr)
    q = bad.select(
        pl.col("source_file"),
        pl.col("source_row").alias("row"),
        pl.col("_field").alias("field"),
        value_expr.cast(pl.String).alias("value"),
        pl.col("_reason").alias("reason"),
        pl.col("symbol"),
        pl.col("timestamp"),
    )
    return good, q


def _ids(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add ``_sid`` / ``_fid``: the lexical rank of symbol / source_file (int keys sort fast).

    Returns the frame and the symbol table (``_sid``, ``symbol``) in ``_sid`` order.
    """
    names = {}
    for col in ("symbol", "source_file"):
        uniq = df.select(pl.col(col).unique().sort()).to_series()
        names[col] = uniq
    sym_map = dict(zip(names["symbol"].to_list(), range(len(names["symbol"])), strict=True))
    file_map = dict(
        zip(names["source_file"].to_list(), range(len(names["source_file"])), strict=True)
    )
    if df.height == 0:  # replace_strict with an empty mapping keeps the input dtype
        sid, fid = pl.lit(None, pl.Int64), pl.lit(None, pl.Int64)
    else:
        sid = pl.col("symbol").replace_strict(sym_map, return_dtype=pl.Int64)
        fid = pl.col("source_file").replace_strict(file_map, return_dtype=pl.Int64)
    df = df.with_columns(sid.alias("_sid"), fid.alias("_fid"))
    symbols = pl.DataFrame(
        {"_sid": pl.int_range(len(sym_map), dtype=pl.Int64, eager=True), "symbol": names["symbol"]}
    )
    return df, symbols


def _file_order(df: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Out-of-order and duplicate rows within one (symbol, file), in file order (source_row)."""
    if not (
        _is_sorted(df, ["_fid", "source_row"]) or _is_sorted(df, ["_sid", "_fid", "source_row"])
    ):
        df = df.sort(["_sid", "_fid", "source_row"])
    prev_max = pl.col("timestamp").cum_max().shift(1).over("_sid", "_fid")
    flagged = df.with_columns(
        pl.when(pl.col("timestamp") < prev_max)
        .then(pl.lit("out_of_order"))
        .when(pl.col("timestamp") == prev_max)
        .then(pl.lit("duplicate_timestamp"))
        .alias("_reason")
    )
    qs = []
    bad = flagged.filter(pl.col("_reason").is_not_null())
    if bad.height:
        df = flagged.filter(pl.col("_reason").is_null()).drop("_reason")
        for reason in ("out_of_order", "duplicate_timestamp"):
            part = bad.filter(pl.col("_reason") == reason)
            if part.height:
                qs.append(_quarantine(part, reason, pl.lit("timestamp"), _ts_string()))
    return df, qs


def _timeframes(df: pl.DataFrame, symbols: pl.DataFrame, config: ValidationConfig) -> pl.Series:
    """Timeframe in microseconds per ``_sid`` (position = ``_sid``); null when undetectable.

    ``df`` is in file order per (symbol, file), where timestamps now strictly increase.
    """
    if config.timeframe_seconds is not None:
        return pl.repeat(config.timeframe_seconds * US, symbols.height, dtype=pl.Int64, eager=True)
    modes = (
        df.lazy()
        .select(
            "_sid",
            pl.col("timestamp").diff().over("_sid", "_fid").dt.total_microseconds().alias("_d"),
        )
        .filter(pl.col("_d") > 0)
        .group_by("_sid", "_d")
        .agg(pl.len().alias("_n"))
        .sort(["_sid", "_n", "_d"], descending=[False, True, False])
        .group_by("_sid", maintain_order=True)
        .agg(pl.col("_d").first())
        .select(
            "_sid",
            # timeframes are whole seconds (at least one)
            ((pl.col("_d") + US // 2) // US).clip(lower_bound=1).mul(US).alias("_tf_us"),
        )
        .collect(engine=ENGINE)
    )
    return symbols.select("_sid").join(modes, on="_sid", how="left").sort("_sid")["_tf_us"]


def _misaligned(df: pl.DataFrame, tf_us: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    tf_row = tf_us.gather(df["_sid"])
    bad_mask = ((df["timestamp"].dt.epoch("us") % tf_row) != 0).fill_null(False)
    if not bad_mask.any():
        return df, None
    q = _quarantine(df.filter(bad_mask), "misaligned_timestamp", pl.lit("timestamp"), _ts_string())
    return df.filter(~bad_mask), q


def _cross_source(
    df: pl.DataFrame, tolerance_bps: float
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]:
    """Keep the first source file per (symbol, timestamp); returns rows sorted by symbol, ts."""
    no_mismatch = pl.DataFrame(schema=MISMATCH_SCHEMA)
    if not _is_sorted(df, ["_sid", "timestamp", "_fid"]):
        df = df.sort(["_sid", "timestamp", "_fid"])
    # equal (symbol, timestamp) rows are now adjacent and the lexically first file comes first
    dup = df.select(_same_prev("_sid", "timestamp")).to_series()
    if not dup.any():
        return df, None, no_mismatch

    others = df.filter(dup)
    kept_pos = (
        df.select(pl.when(~dup).then(pl.int_range(pl.len())).forward_fill().alias("_k"))
        .to_series()
        .filter(dup)
    )
    kept_rows = df.select(pl.col("source_file", *VALUE_COLUMNS).gather(kept_pos))
    others = pl.concat([others, kept_rows.select(pl.all().name.prefix("_kept_"))], how="horizontal")
    q = _quarantine(others, "duplicate_from_other_source", pl.lit("timestamp"), _ts_string())
    parts = []
    for c in VALUE_COLUMNS:
        kept, other = pl.col(f"_kept_{c}"), pl.col(c)
        diff = (
            pl.when(kept == other)
            .then(0.0)
            .when(kept == 0)
            .then(float("inf"))
            .otherwise((other - kept).abs() / kept.abs() * 1e4)
        )
        parts.append(
            others.select(
                "symbol",
                "timestamp",
                pl.lit(c).alias("field"),
                pl.col("_kept_source_file").alias("kept_source"),
                kept.alias("kept_value"),
                pl.col("source_file").alias("other_source"),
                other.alias("other_value"),
                diff.alias("diff_bps"),
            ).filter(pl.col("diff_bps") > tolerance_bps)
        )
    mismatches = pl.concat(parts).sort("symbol", "timestamp", "field", "other_source")
    return df.filter(~dup), q, mismatches


def _calendars(
    kept: pl.DataFrame, symbols: pl.DataFrame, tf_us: pl.Series, config: ValidationConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-symbol calendar table and the open weekly slots of the "sessions" symbols.

    ``cal`` (one row per ``_sid``, in ``_sid`` order): _sid, symbol, _tf_us, _kind ("24/7" |
    "sessions"), _S (slots per week), _has_rows. ``open_slots``: _sid, _slot (slot of the week,
    Monday 00:00 UTC = slot 0) for the "sessions" symbols.
    """
    weekdays = kept.group_by("_sid").agg(
        pl.col("timestamp").dt.weekday().n_unique().alias("_n_weekdays")
    )
    rules = pl.DataFrame(
        {"symbol": list(config.calendars), "_rule": list(config.calendars.values())},
        schema={"symbol": pl.String, "_rule": pl.String},
    )
    cal = (
        symbols.with_columns(tf_us.alias("_tf_us"))
        .join(weekdays, on="_sid", how="left")
        .join(rules, on="symbol", how="left")
        .with_columns(
            pl.col("_rule").fill_null("auto"),
            pl.col("_n_weekdays").is_not_null().alias("_has_rows"),
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
            .otherwise(pl.lit("sessions"))
            .alias("_kind")
        )
        .sort("_sid")
    )
    slot_schema = {"_sid": pl.Int64, "_slot": pl.Int64}
    open_parts = [pl.DataFrame(schema=slot_schema)]
    observed = cal.filter(pl.col("_kind") == "sessions").select("_sid", "_tf_us", "_S")
    if observed.height:
        slots = (
            kept.select("_sid", "timestamp")
            .join(observed, on="_sid", how="inner")
            .select(
                "_sid",
                "_tf_us",
                (
                    ((pl.col("timestamp").dt.epoch("us") - MONDAY0_US) // pl.col("_tf_us"))
                    % pl.col("_S")
                ).alias("_slot"),
                (pl.col("timestamp").dt.epoch("us") // DAY_US).alias("_day"),
            )
            .with_columns((pl.col("_slot") * pl.col("_tf_us") // DAY_US).alias("_weekday"))
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
    weekday_syms = cal.filter(pl.col("_kind") == "weekdays").select("_sid", "_tf_us", "_S")
    if weekday_syms.height:
        open_parts.append(
            weekday_syms.with_columns(pl.int_ranges(0, pl.col("_S")).alias("_slot"))
            .explode("_slot")
            .filter(pl.col("_slot") * pl.col("_tf_us") < 5 * DAY_US)  # slot starts Mon-Fri
            .select("_sid", "_slot")
        )
    open_slots = (
        pl.concat([p.select(pl.col(c).cast(t) for c, t in slot_schema.items()) for p in open_parts])
        .unique()
        .sort("_sid", "_slot")
    )
    cal = cal.with_columns(pl.col("_kind").replace("weekdays", "sessions"))
    return cal.select("_sid", "symbol", "_tf_us", "_kind", "_S", "_has_rows"), open_slots


def _gaps(
    kept: pl.DataFrame, cal: pl.DataFrame, open_slots: pl.DataFrame, max_fill: int
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.Series]:
    """Gap rows, the flat bars to insert and a segment-break mask aligned with ``kept``."""
    tf_row = cal["_tf_us"].gather(kept["_sid"])
    candidates = (
        kept.lazy()
        .select("_sid", "symbol", "timestamp")
        .with_row_index("_idx")
        .with_columns(tf_row.alias("_tf_us"))
        .filter(
            _same_prev("_sid")
            & (
                (pl.col("timestamp") - pl.col("timestamp").shift(1)).dt.total_microseconds()
                > pl.col("_tf_us")
            )
        )
        .collect(engine=ENGINE)
    )
    # the bar before a gap is the row just before it in ``kept``
    prev = kept.select(
        pl.col("timestamp", "close", "spread_bps", "source_file").gather(candidates["_idx"] - 1)
    )
    g = (
        candidates.select(
            "_idx",
            "_sid",
            "symbol",
            "_tf_us",
            prev["timestamp"].alias("gap_start"),
            pl.col("timestamp").alias("gap_end"),
            prev["close"].alias("_prev_close"),
            prev["spread_bps"].alias("_prev_spread"),
            prev["source_file"].alias("_prev_source"),
        )
        .with_columns(
            # [_a, _b): the absolute slot numbers strictly between the two bars
            ((pl.col("gap_start").dt.epoch("us") - MONDAY0_US) // pl.col("_tf_us") + 1).alias("_a"),
            ((pl.col("gap_end").dt.epoch("us") - MONDAY0_US) // pl.col("_tf_us")).alias("_b"),
        )
        .join(cal.select("_sid", "_kind", "_S"), on="_sid", how="left")
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
    mask = pl.repeat(False, kept.height, dtype=pl.Boolean, eager=True).scatter(breaks, True)

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
            .with_columns(
                (pl.col("_abs") * pl.col("_tf_us") + MONDAY0_US)
                .cast(pl.Datetime("us"))
                .dt.replace_time_zone("UTC")
                .alias("timestamp"),
                pl.int_range(1, pl.len() + 1).over("_idx").alias("_rank"),
            )
        )
    gaps = g.select(pl.col(c).cast(t) for c, t in GAP_SCHEMA.items())
    return gaps, filled, mask


def _outliers(kept: pl.DataFrame, mask: pl.Series, window: int) -> tuple[pl.Series, pl.Series]:
    """segment_id and outlier_z for the real bars (``kept`` sorted by symbol, timestamp).

    Log returns within a segment are scored against the median and MAD of the ``window`` previous
    returns of the symbol. Each past return's deviation is taken from the rolling median of the
    window ending at it, so every statistic at bar t uses bars <= t-1 only (no look-ahead).
    """
    segment_id = (
        kept.select("_sid")
        .with_columns(mask.alias("_break"))
        .select(pl.col("_break").cum_sum().over("_sid").cast(pl.Int32).alias("segment_id"))
        .to_series()
    )
    returns = (
        kept.lazy()
        .select("_sid", "close")
        .with_columns(mask.alias("_break"))
        .with_row_index("_pos")
        .select(
            "_pos",
            "_sid",
            pl.when(_same_prev("_sid") & ~pl.col("_break"))
            .then((pl.col("close") / pl.col("close").shift(1)).log())
            .alias("_r"),
        )
        # polars' rolling median is much faster on null-free input: score defined returns only
        .filter(pl.col("_r").is_not_null())
        .with_columns(pl.col("_r").rolling_median(window, min_samples=1).over("_sid").alias("_m"))
        .with_columns((pl.col("_r") - pl.col("_m")).abs().alias("_dev"))
        .with_columns(
            pl.col("_dev").rolling_median(window, min_samples=1).over("_sid").alias("_mad"),
            pl.col("_dev").rolling_mean(window, min_samples=1).over("_sid").alias("_mean_ad"),
            pl.int_range(pl.len()).over("_sid").alias("_n_past"),
        )
        .with_columns(
            pl.when(pl.col("_mad") > 0)
            .then(pl.col("_mad") * MAD_SCALE)
            .when(pl.col("_mean_ad") > 0)
            .then(pl.col("_mean_ad") * MEAN_AD_SCALE)
            .alias("_scale")
        )
        .select(
            "_pos",
            pl.when(pl.col("_n_past") >= MIN_OUTLIER_SAMPLES)
            .then(
                (pl.col("_r") - pl.col("_m").shift(1).over("_sid"))
                / pl.col("_scale").shift(1).over("_sid")
            )
            .alias("outlier_z"),
        )
        .collect(engine=ENGINE)
    )
    z = pl.repeat(None, kept.height, dtype=pl.Float64, eager=True).scatter(
        returns["_pos"], returns["outlier_z"]
    )
    return segment_id, z.alias("outlier_z")


# ---------------------------------------------------------------------------------------------

# ordering key of the merged candles: kept row index * stride + rank of a flat bar after that row
FILL_KEY_STRIDE = 1 << 20


def validate_bars(raw: pl.DataFrame, config: ValidationConfig | None = None) -> ValidationResult:
    """Validate raw bars (``RAW_BAR_SCHEMA``) into candles (``CANDLE_SCHEMA``); see module doc."""
    config = config or ValidationConfig()
    if isinstance(raw, pl.LazyFrame):
        raw = raw.collect(engine=ENGINE)
    raw = _conform(raw)
    rows_in = raw.height
    if rows_in == 0:
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

    good, q_rows = _row_checks(raw)
    del raw
    good, symbols = _ids(good)
    good, q_order = _file_order(good)
    tf_us = _timeframes(good, symbols, config)
    good, q_misaligned = _misaligned(good, tf_us)
    kept, q_other, mismatches = _cross_source(good, config.mismatch_tolerance_bps)
    del good

    q_parts = [q for q in (q_rows, *q_order, q_misaligned, q_other) if q is not None]
    quarantine = (
        pl.concat([pl.DataFrame(schema=QUARANTINE_SCHEMA), *q_parts], how="vertical_relaxed")
        .select(pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items())
        .sort("source_file", "row", nulls_last=True)
    )

    cal, open_slots = _calendars(kept, symbols, tf_us, config)
    gaps, filled, mask = _gaps(kept, cal, open_slots, config.max_fill_bars)
    segment_id, outlier_z = _outliers(kept, mask, config.outlier_window)
    rows_kept = kept.height

    candles = kept.select(
        "symbol",
        "timestamp",
        *PRICE_COLUMNS,
        "volume",
        "spread_bps",
        (pl.col("close") * pl.col("volume")).alias("quote_volume"),
        pl.lit(False).alias("is_filled"),
        segment_id,
        (outlier_z.abs() > config.outlier_z).fill_null(False).alias("is_outlier"),
        outlier_z,
        pl.col("source_file").alias("source"),
    )
    del kept
    filled_bars = 0
    if filled is not None and filled.height:
        filled_bars = filled.height
        fill_frame = filled.select(
            "symbol",
            "timestamp",
            *[pl.col("_prev_close").alias(c) for c in PRICE_COLUMNS],
            pl.lit(0.0).alias("volume"),
            pl.col("_prev_spread").alias("spread_bps"),
            pl.lit(0.0).alias("quote_volume"),
            pl.lit(True).alias("is_filled"),
            segment_id.gather(filled["_idx"] - 1),  # same segment as the bar before the gap
            pl.lit(False).alias("is_outlier"),
            pl.lit(None, pl.Float64).alias("outlier_z"),
            pl.col("_prev_source").alias("source"),
            ((pl.col("_idx") - 1).cast(pl.Int64) * FILL_KEY_STRIDE + pl.col("_rank")).alias("_k"),
        )
        candles = candles.with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64) * FILL_KEY_STRIDE).alias("_k")
        )
        fill_frame = fill_frame.select(pl.col(c).cast(candles.schema[c]) for c in candles.columns)
        candles = candles.merge_sorted(fill_frame, key="_k").drop("_k")
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
