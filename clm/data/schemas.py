"""pandera (polars) schema for validated candles: a second, independent check of ``CANDLE_SCHEMA``.

``validate_bars`` guarantees these properties by construction; the schema lets the lake (and tests)
assert them on whatever frame is about to be written, and reports every failing row at once.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime
from pandera.errors import SchemaError, SchemaErrors

from clm.data.schema import CANDLE_SCHEMA


class CandleSchema(pa.DataFrameModel):
    """Column contract of ``CANDLE_SCHEMA`` plus the OHLC invariants and the (symbol, ts) key."""

    symbol: str = pa.Field(nullable=False)
    timestamp: DateTime = pa.Field(
        nullable=False, dtype_kwargs={"time_zone": "UTC", "time_unit": "us"}
    )
    open: pl.Float64 = pa.Field(gt=0)
    high: pl.Float64 = pa.Field(gt=0)
    low: pl.Float64 = pa.Field(gt=0)
    close: pl.Float64 = pa.Field(gt=0)
    volume: pl.Float64 = pa.Field(ge=0)
    spread_bps: pl.Float64 = pa.Field(nullable=True)
    quote_volume: pl.Float64 = pa.Field(ge=0)
    is_filled: pl.Boolean = pa.Field(nullable=False)
    segment_id: pl.Int32 = pa.Field(ge=0)
    is_outlier: pl.Boolean = pa.Field(nullable=False)
    outlier_z: pl.Float64 = pa.Field(nullable=True)
    source: str = pa.Field(nullable=False)

    class Config:
        strict = True  # no columns beyond CANDLE_SCHEMA
        ordered = True  # in CANDLE_SCHEMA order
        unique = ["symbol", "timestamp"]

    @pa.dataframe_check(error="high >= max(open, close)")
    @classmethod
    def high_above_open_close(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("high") >= pl.max_horizontal("open", "close"))

    @pa.dataframe_check(error="low <= min(open, close)")
    @classmethod
    def low_below_open_close(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("low") <= pl.min_horizontal("open", "close"))


assert list(CandleSchema.to_schema().columns) == list(CANDLE_SCHEMA), "CandleSchema drifted"


def validate_candles(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | None:
    """Run ``CandleSchema`` lazily (all checks); the failure cases frame, or None when valid."""
    try:
        CandleSchema.validate(df, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
        return cases if isinstance(cases, pl.DataFrame) else pl.DataFrame(cases)
    except SchemaError as err:  # pragma: no cover - lazy=True collects errors into SchemaErrors
        return pl.DataFrame(
            {"check": [str(err.check)], "failure_case": [str(err.failure_cases)]},
        )
    return None


__all__ = ["CandleSchema", "validate_candles"]
