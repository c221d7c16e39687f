"""The tradable universe: symbols liquid and tight enough to trade; the rest go to ``do_not_trade``."""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, Field


class UniverseConfig(BaseModel):
    min_liquidity: float = Field(0.0, ge=0, description="minimum median daily quote volume (quote currency)")
    max_spread_bps: float = Field(50.0, gt=0, description="maximum median quoted spread in basis points")


def liquidity_stats(candles: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """Per symbol: median daily quote volume and median spread over real (not gap-filled) bars."""
    real = candles.lazy().filter(~pl.col("is_filled"))
    daily = real.group_by("symbol", pl.col("timestamp").dt.date().alias("day")).agg(
        quote_volume=pl.col("quote_volume").sum(), bars=pl.len()
    )
    per_symbol = real.group_by("symbol").agg(
        median_spread_bps=pl.col("spread_bps").median(),
        first_bar=pl.col("timestamp").min(),
        last_bar=pl.col("timestamp").max(),
    )
    volume = daily.group_by("symbol").agg(
        median_daily_quote_volume=pl.col("quote_volume").median(), days=pl.len(), bars=pl.col("bars").sum()
    )
    return volume.join(per_symbol, on="symbol").sort("symbol").collect()


def select_universe(candles: pl.LazyFrame | pl.DataFrame, config: UniverseConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(universe, do_not_trade). A symbol with no spread data is judged on liquidity alone."""
    stats = liquidity_stats(candles)
    reasons = pl.concat_list(
        pl.when(pl.col("median_daily_quote_volume") < config.min_liquidity).then(
            pl.format(
                "median daily quote volume {} < min_liquidity {}",
                pl.col("median_daily_quote_volume").round(2),
                pl.lit(config.min_liquidity),
            )
        ),
        pl.when(pl.col("median_spread_bps") > config.max_spread_bps).then(
            pl.format(
                "median spread {} bps > max_spread_bps {}",
                pl.col("median_spread_bps").round(2),
                pl.lit(config.max_spread_bps),
            )
        ),
    ).list.drop_nulls()
    judged = stats.with_columns(reason=reasons.list.join("; "))
    universe = judged.filter(pl.col("reason") == "").drop("reason")
    do_not_trade = judged.filter(pl.col("reason") != "").select("symbol", "reason")
    return universe, do_not_trade
