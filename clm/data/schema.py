"""Column contracts shared by sources, validation and the lake.

Every source yields ``RAW_BAR_SCHEMA`` rows plus ``QUARANTINE_SCHEMA`` rows for what it could not
parse; validation turns raw bars into ``CANDLE_SCHEMA`` rows. Keeping the contracts in one place is
what lets a new source or a new consumer be added without reading the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")

RAW_BAR_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "symbol": pl.String(),
    "timestamp": UTC_TS,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "spread_bps": pl.Float64(),
}

CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "timestamp": UTC_TS,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "spread_bps": pl.Float64(),
    "quote_volume": pl.Float64(),
    "is_filled": pl.Boolean(),
    "segment_id": pl.Int32(),
    "is_outlier": pl.Boolean(),
    "outlier_z": pl.Float64(),
    "source": pl.String(),
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "row": pl.Int64(),
    "field": pl.String(),
    "value": pl.String(),
    "reason": pl.String(),
    "symbol": pl.String(),
    "timestamp": UTC_TS,
}

GAP_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "gap_start": UTC_TS,  # open time of the last bar before the gap
    "gap_end": UTC_TS,  # open time of the first bar after the gap
    "missing_bars": pl.Int64(),
    "action": pl.String(),  # "filled" or "segment_break"
}

MISMATCH_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "timestamp": UTC_TS,
    "field": pl.String(),
    "kept_source": pl.String(),
    "kept_value": pl.Float64(),
    "other_source": pl.String(),
    "other_value": pl.Float64(),
    "diff_bps": pl.Float64(),
}

REGIME_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": UTC_TS,
    "regime": pl.String(),
}

REGIMES = ("trend_up", "trend_down", "range", "panic", "illiquid")

# Symbols become hive partition directory names, so they are restricted to a safe alphabet.
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9_.\-]{0,63}$")


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def normalise_symbol(raw: str) -> str:
    """Map exchange spellings (``ADA/BTC``, ``ada-btc``, ``ADA_BTC``) to one safe form (``ADA_BTC``)."""
    symbol = re.sub(r"[/:\s]+", "_", raw.strip().upper()).strip("_")
    if not SYMBOL_PATTERN.match(symbol):
        raise ValueError(f"symbol {raw!r} is not a valid symbol (allowed: A-Z, 0-9, '_', '.', '-')")
    return symbol


# Quote assets recognised at the end of a symbol written without a separator (``ETHBTC``, ``BTCUSDT``).
KNOWN_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USDP", "DAI", "USD", "EUR", "GBP", "TRY", "BRL",
                "BTC", "ETH", "BNB")


def quote_asset(symbol: str | None, quotes: Iterable[str] = KNOWN_QUOTES) -> str | None:
    """The quote asset (the currency prices and ``quote_volume`` are in) of a symbol, or None.

    * ``BASE_QUOTE`` (``normalise_symbol``'s form, ``ADA/BTC`` -> ``ADA_BTC``) and futures'
      ``BASE_QUOTE_SETTLE`` (``XRP/USDT:USDT`` -> ``XRP_USDT_USDT``): the second part, up to a ``-`` or
      ``.`` (``BTC_USDT-PERP`` -> ``USDT``).
    * No separator (``ETHBTC``, ``SYN000USD``): the longest of ``quotes`` the symbol ends with, after a
      non-empty base; such names are ambiguous, so only the listed quotes are recognised.
    * Anything else (``PRICES``, ``AAA``, None): None.
    """
    if not symbol:
        return None
    name = symbol.strip().upper()
    if "_" in name:
        found = re.match(r"[A-Z0-9]+", name.split("_")[1])
        return found.group(0) if found else None
    for quote in sorted({q.upper() for q in quotes}, key=len, reverse=True):
        if len(name) > len(quote) and name.endswith(quote):
            return quote
    return None


def quarantine_rows(
    source_file: str,
    reason: str,
    *,
    rows: pl.Series | list[int | None] | None = None,
    field: str | None = None,
    values: pl.Series | list[str | None] | None = None,
    symbol: str | None = None,
) -> pl.DataFrame:
    """Build quarantine rows for one reason; ``rows=None`` means one file-level row."""
    if rows is None:
        rows = [None]
    n = len(rows)
    if values is None:
        values = [None] * n
    return pl.DataFrame(
        {
            "source_file": [source_file] * n,
            "row": pl.Series(rows, dtype=pl.Int64),
            "field": [field] * n,
            "value": pl.Series(values).cast(pl.String),
            "reason": [reason] * n,
            "symbol": [symbol] * n,
            "timestamp": pl.Series([None] * n, dtype=UTC_TS),
        },
        schema=QUARANTINE_SCHEMA,
    )
