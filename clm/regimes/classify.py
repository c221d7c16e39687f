"""Per-symbol, per-bar regimes from causal rules on learnt baselines (see ``docs/regimes.md``).

For each series (a symbol's segment) and bar ``t``, using only bars ``<= t``:

1. smooth the last ``smooth_bars`` real (not gap-filled) bars: Parkinson variance
   ``ln(h/l)^2 / (4 ln 2)``, volume, quote volume and spread;
2. turn each log into a z-like score against a learnt baseline: the median of the same quantity at
   the same time of day (``seasonal_bucket_minutes``) over the previous ``baseline_days``, which
   removes the intraday pattern and each symbol's own level: ``vol_z``, ``volume_z``, ``spread_z``
   (log ratios; 0.69 = twice the usual);
3. apply the rules in order: ``panic`` (variance far above usual on at least usual volume), then
   ``illiquid`` (wide spreads and thin volume), then ``trend`` vs ``range`` (a trend score from
   volume, volatility and ADX above / below its cut-off);
4. ``volatility_level`` and ``liquidity_level`` compare this bar's (unadjusted) realised volatility
   and liquidity with trailing quantiles of the symbol's previous ``level_days``.

Rows in warm-up (too little history in their segment) have ``warm = false`` and null labels.
"""

from __future__ import annotations

import math

import polars as pl

from clm.checks import ENGINE
from clm.features import (
    FeatureConfig,
    compute_features,
    infer_timeframe_seconds,
    select_features,
)
from clm.regimes.config import RegimeConfig

SERIES = ["symbol", "segment_id"]
FEATURE_INPUTS = ("adx_14", "mom_50")  # from clm.features (ta / core31 sets)
REQUIRED_CANDLE_COLUMNS = ("symbol", "timestamp", "segment_id", "high", "low", "close", "volume")
TINY = 1e-300  # floor before a log: a window of flat, volume-less bars scores very low, not -inf
_PARKINSON = 1.0 / (4.0 * math.log(2.0))

OUTPUT_COLUMNS = (
    "symbol",
    "timestamp",
    "segment_id",
    "warm",
    "regime",
    "trend_direction",
    "volatility_level",
    "liquidity_level",
    "regime_confidence",
    "realised_vol",
    "vol_z",
    "volume_z",
    "spread_z",
    "adx_14",
    "mom_50",
    "trend_score",
    "illiquid_score",
    "liquidity_score",
)


def feature_selection(timeframe_seconds: int):
    """The ``clm.features`` columns the classifier reads (ADX for trend evidence, momentum for direction)."""
    return select_features(FeatureConfig(sets=("ta", "core31")), (), timeframe_seconds).subset(FEATURE_INPUTS)


def _bucket_seconds(config: RegimeConfig, timeframe_seconds: int) -> int:
    if config.seasonal_bucket_minutes == 0:
        return 86_400
    return max(config.seasonal_bucket_minutes * 60, timeframe_seconds)


def history_bars(config: RegimeConfig, timeframe_seconds: int) -> int:
    """Bars of history the baselines need before they exist (``min_history_days``)."""
    return config.days_to_bars(config.min_history_days, timeframe_seconds)


def warmup_bars(config: RegimeConfig, timeframe_seconds: int) -> int:
    """Rows at the start of every series (symbol segment) that get no label."""
    own = history_bars(config, timeframe_seconds) + config.smooth_bars - 1
    return max(own, feature_selection(timeframe_seconds).warmup_bars(timeframe_seconds))


def _smoothed(value: pl.Expr, n: int) -> pl.Expr:
    """Mean of the last n bars' non-null values, carried over bars with none (e.g. a long fill)."""
    return value.rolling_mean(n, min_samples=1).forward_fill().over(SERIES)


def _log(value: pl.Expr) -> pl.Expr:
    return value.clip(lower_bound=TINY).log()


def _sigmoid(margin: pl.Expr, scale: float) -> pl.Expr:
    return 1.0 / (1.0 + (-margin / scale).exp())


def _attach_features(frame: pl.DataFrame, features: pl.LazyFrame) -> pl.DataFrame:
    """Add the feature columns; a frame with the very same (symbol, timestamp) rows in the same
    order (``compute_features`` on the same candles) is stacked, anything else joined."""
    feats = features.collect(engine=ENGINE)
    if feats.height == frame.height and all(
        feats[c].equals(frame[c]) for c in ("symbol", "timestamp")
    ):
        return frame.hstack(feats.drop("symbol", "timestamp"))
    return frame.join(feats, on=["symbol", "timestamp"], how="left", maintain_order="left")


def classify_regimes(
    candles: pl.DataFrame | pl.LazyFrame,
    config: RegimeConfig = RegimeConfig(),
    *,
    features: pl.DataFrame | pl.LazyFrame | None = None,
    timeframe_seconds: int | None = None,
) -> pl.DataFrame:
    """One row per candle, sorted by (symbol, timestamp), with the columns in ``OUTPUT_COLUMNS``.

    ``features`` (optional) is a ``clm.features`` frame holding at least ``symbol, timestamp`` and
    ``adx_14, mom_50`` (its ``warm`` flag is honoured when present); without it those two are
    computed here. ``timeframe_seconds`` defaults to the most common bar spacing.
    """
    schema = candles.lazy().collect_schema()
    missing = [c for c in REQUIRED_CANDLE_COLUMNS if c not in schema]
    if missing:
        raise ValueError(f"classify_regimes: candles lack column(s) {missing}")
    optional = [c for c in ("spread_bps", "quote_volume", "is_filled") if c in schema]
    # read the input once: the features and the rules below both scan it
    lazy = candles.lazy().select(*REQUIRED_CANDLE_COLUMNS, *optional).collect(engine=ENGINE).lazy()
    tf = timeframe_seconds if timeframe_seconds is not None else infer_timeframe_seconds(lazy)
    if isinstance(tf, bool) or not isinstance(tf, int) or tf <= 0:
        raise ValueError(f"timeframe_seconds must be an int > 0, got {tf!r}")

    if features is None:
        features = compute_features(lazy, feature_selection(tf), timeframe_seconds=tf)
    feature_schema = features.lazy().collect_schema()
    lacking = [c for c in ("symbol", "timestamp", *FEATURE_INPUTS) if c not in feature_schema]
    if lacking:
        raise ValueError(f"classify_regimes: features lack column(s) {lacking}")
    feature_warm = pl.col("warm") if "warm" in feature_schema else pl.lit(True)
    feature_frame = features.lazy().select(
        "symbol", "timestamp", *FEATURE_INPUTS, feature_warm.fill_null(False).alias("_feature_warm")
    )

    real = ~pl.col("is_filled") if "is_filled" in schema else pl.lit(True)
    quote = pl.col("quote_volume") if "quote_volume" in schema else pl.lit(None, pl.Float64)
    spread = pl.col("spread_bps") if "spread_bps" in schema else pl.lit(None, pl.Float64)
    n = config.smooth_bars
    bucket_s = _bucket_seconds(config, tf)
    per_bucket_day = max(1, bucket_s // tf)
    baseline_min = max(1, round(config.min_history_days * per_bucket_day))
    baseline_window = max(baseline_min, round(config.baseline_days * per_bucket_day))
    history = history_bars(config, tf)
    level_window = max(history, config.days_to_bars(config.level_days, tf))
    warmup = history + n - 1

    def baseline(name: str) -> pl.Expr:
        col = pl.col(name)
        # rolling then shift (not shift then rolling): the same window of earlier values, and polars
        # keeps its fast path for windows without nulls
        return col - col.rolling_median(baseline_window, min_samples=baseline_min).shift(1).over(
            [*SERIES, "_bucket"]
        )

    def cut(name: str, q: float) -> pl.Expr:
        return (
            pl.col(name)
            .rolling_quantile(q, interpolation="nearest", window_size=level_window, min_samples=history)
            .shift(1)
            .over(SERIES)
        )

    frame = (
        lazy.select(
            "symbol",
            "timestamp",
            "segment_id",
            pl.when(real).then((pl.col("high") / pl.col("low")).log().pow(2) * _PARKINSON).alias("_pk"),
            pl.when(real).then(pl.col("volume")).alias("_volume"),
            pl.when(real).then(quote.fill_null(pl.col("close") * pl.col("volume"))).alias("_quote"),
            pl.when(real).then(spread).cast(pl.Float64).alias("_spread"),
        )
        .sort("symbol", "timestamp")
        .with_columns(
            _log(_smoothed(pl.col("_pk"), n)).alias("_lv"),
            _log(_smoothed(pl.col("_volume"), n)).alias("_lq"),
            _log(_smoothed(pl.col("_quote"), n)).alias("_lquote"),
            _log(_smoothed(pl.col("_spread"), n)).alias("_ls"),
            ((pl.col("timestamp").dt.epoch("s") % 86_400) // bucket_s).alias("_bucket"),
            pl.int_range(pl.len()).over(SERIES).alias("_index"),
        )
        .with_columns(
            baseline("_lv").alias("vol_z"),
            baseline("_lq").alias("volume_z"),
            baseline("_ls").alias("spread_z"),
            (pl.col("_lv") * 0.5).exp().alias("realised_vol"),
            pl.when(pl.col("_ls").is_null())
            .then(pl.col("_lquote"))
            .otherwise(pl.col("_lquote") - pl.col("_ls"))
            .alias("liquidity_score"),
        )
        .with_columns(
            *(cut("_lv", q).alias(f"_vq{i}") for i, q in enumerate(config.volatility_quantiles)),
            *(cut("liquidity_score", q).alias(f"_liq{i}") for i, q in enumerate(config.liquidity_quantiles)),
        )
    )
    frame = _attach_features(frame.collect(engine=ENGINE), feature_frame).lazy()

    w_volume, w_vol, w_adx = config.trend_weights
    frame = frame.with_columns(
        (
            w_volume * pl.col("volume_z")
            + w_vol * pl.col("vol_z")
            + w_adx * (pl.col("adx_14") - config.adx_pivot) / config.adx_pivot
        ).alias("trend_score"),
        pl.when(pl.col("spread_z").is_null())
        .then(-pl.col("volume_z"))
        .otherwise((pl.col("spread_z") - pl.col("volume_z")) * 0.5)
        .alias("illiquid_score"),
    )
    needed = ["vol_z", "volume_z", "adx_14", "mom_50", "_vq0", "_vq1", "_vq2", "_liq0", "_liq1"]
    warm = (
        (pl.col("_index") >= warmup)
        & pl.col("_feature_warm").fill_null(False)
        & pl.all_horizontal(pl.col(c).is_not_null() & pl.col(c).is_not_nan() for c in needed)
    )
    panic_margin = pl.min_horizontal(
        pl.col("vol_z") - config.panic_vol_z, pl.col("volume_z") - config.panic_volume_z
    )
    illiquid_margin = pl.col("illiquid_score") - config.illiquid_z
    trend_margin = pl.col("trend_score") - config.trend_z
    s = config.confidence_scale
    not_panic, not_illiquid = _sigmoid(-panic_margin, s), _sigmoid(-illiquid_margin, s)
    regime = (
        pl.when(~pl.col("warm"))
        .then(None)
        .when(panic_margin > 0)
        .then(pl.lit("panic"))
        .when(illiquid_margin > 0)
        .then(pl.lit("illiquid"))
        .when(trend_margin > 0)
        .then(pl.lit("trend"))
        .otherwise(pl.lit("range"))
    )
    confidence = (
        pl.when(pl.col("regime") == "panic")
        .then(_sigmoid(panic_margin, s))
        .when(pl.col("regime") == "illiquid")
        .then(pl.min_horizontal(_sigmoid(illiquid_margin, s), not_panic))
        .when(pl.col("regime") == "trend")
        .then(pl.min_horizontal(_sigmoid(trend_margin, s), not_illiquid, not_panic))
        .when(pl.col("regime") == "range")
        .then(pl.min_horizontal(_sigmoid(-trend_margin, s), not_illiquid, not_panic))
    )
    lv, liq = pl.col("_lv"), pl.col("liquidity_score")
    volatility_level = (
        pl.when(~pl.col("warm"))
        .then(None)
        .when(lv < pl.col("_vq0"))
        .then(pl.lit("LOW"))
        .when(lv < pl.col("_vq1"))
        .then(pl.lit("MEDIUM"))
        .when(lv < pl.col("_vq2"))
        .then(pl.lit("HIGH"))
        .otherwise(pl.lit("EXTREME"))
    )
    liquidity_level = (
        pl.when(~pl.col("warm"))
        .then(None)
        .when(liq < pl.col("_liq0"))
        .then(pl.lit("LOW"))
        .when(liq < pl.col("_liq1"))
        .then(pl.lit("MEDIUM"))
        .otherwise(pl.lit("HIGH"))
    )
    direction = (
        pl.when(pl.col("regime") == "trend")
        .then(pl.when(pl.col("mom_50") >= 0).then(pl.lit("up")).otherwise(pl.lit("down")))
    )
    return (
        frame.with_columns(warm.alias("warm"))
        .with_columns(
            regime.alias("regime"),
            volatility_level.alias("volatility_level"),
            liquidity_level.alias("liquidity_level"),
        )
        .with_columns(confidence.alias("regime_confidence"), direction.alias("trend_direction"))
        .select(OUTPUT_COLUMNS)
        .collect(engine=ENGINE)
    )
