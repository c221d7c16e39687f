"""The ``context`` set: what the bar's own series cannot say (FreqAI's include_timeframes/corr_pairlist).

Higher timeframes (default 1h and 4h): base bars are aggregated per symbol and segment into
epoch-aligned higher bars (open first, high max, low min, close last, volume sum); features are
computed on that series and joined back to each base bar from the last higher bar that had *closed*
by the base bar's close (higher bar [b, b + T) is used from the base bar closing at b + T on).
Per timeframe T:
  ``htf_T_ret_1`` = ln(C / C[-1]), ``htf_T_ret_4`` = ln(C / C[-4]) of the higher closes C
  ``htf_T_volatility_12`` = population std of the last 12 higher-bar log returns
  ``htf_T_range_position_12`` = (C - min_12(L)) / (max_12(H) - min_12(L)) (0.5 when flat)
Cross-asset, from one-bar and 12-bar log returns r1, r12 of every symbol at the same timestamp:
  ``ref_ret_1``, ``ref_ret_12`` = the reference symbol's r1, r12 (missing when it has no bar then)
  ``universe_ret_1``, ``universe_ret_12`` = mean over the symbols with a value at that timestamp
  ``rel_ret_12`` = own r12 - universe_ret_12

The reference symbol is configured; by default the first of ``PREFERRED_REFERENCES`` present in the
universe, else the alphabetically first symbol. It is part of the definition hash.
"""

from __future__ import annotations

from collections.abc import Sequence

from clm.features.core31 import log_return
from clm.features.expr import col, safe_div
from clm.features.registry import Feature, timeframe_to_seconds

PREFERRED_REFERENCES = ("BTC_USDT", "BTC_USD", "BTCUSDT", "BTC_BUSD", "BTC_USDC", "ETH_BTC", "ETH_USDT")


def resolve_reference(symbols: Sequence[str], configured: str | None = None) -> str:
    universe = sorted(set(symbols))
    if not universe:
        raise ValueError("cannot choose a reference symbol from an empty universe")
    if configured:
        if configured not in universe:
            raise ValueError(
                f"reference_symbol {configured!r} is not in the data; symbols: {', '.join(universe[:20])}"
            )
        return configured
    for candidate in PREFERRED_REFERENCES:
        if candidate in universe:
            return candidate
    return universe[0]


def higher_timeframe_features(timeframe: str) -> list[Feature]:
    timeframe_to_seconds(timeframe)  # validates the label
    close, high, low = col("close"), col("high"), col("low")
    one_bar = log_return(1)
    prefix = f"htf_{timeframe}"
    rows = [
        (f"{prefix}_ret_1", one_bar, "ln(C / C[-1])", (("bars", 1),)),
        (f"{prefix}_ret_4", log_return(4), "ln(C / C[-4])", (("bars", 4),)),
        (f"{prefix}_volatility_12", one_bar.rolling_std(12), "std12(ln(C / C[-1]))", (("window", 12),)),
        (f"{prefix}_range_position_12",
         safe_div(close - low.rolling_min(12), high.rolling_max(12) - low.rolling_min(12), 0.5),
         "(C - min12(L)) / (max12(H) - min12(L))", (("window", 12),)),
    ]
    return [
        Feature(name, "context", node, formula, params + (("timeframe", timeframe),), timeframe=timeframe)
        for name, node, formula, params in rows
    ]


def cross_asset_features(reference_symbol: str) -> list[Feature]:
    r1, r12 = log_return(1), log_return(12)
    return [
        Feature("ref_ret_1", "context", r1, f"r1 of {reference_symbol}", (("reference", reference_symbol),),
                cross="reference", reference_symbol=reference_symbol),
        Feature("ref_ret_12", "context", r12, f"r12 of {reference_symbol}", (("reference", reference_symbol),),
                cross="reference", reference_symbol=reference_symbol),
        Feature("universe_ret_1", "context", r1, "mean over symbols of r1", (), cross="mean"),
        Feature("universe_ret_12", "context", r12, "mean over symbols of r12", (), cross="mean"),
        Feature("rel_ret_12", "context", r12, "r12 - universe mean of r12", (), cross="relative"),
    ]


def context_features(
    reference_symbol: str, timeframes: Sequence[str], base_timeframe_seconds: int
) -> list[Feature]:
    """Higher timeframes that are not strictly above the base timeframe are left out."""
    out: list[Feature] = []
    for tf in timeframes:
        seconds = timeframe_to_seconds(tf)
        if seconds > base_timeframe_seconds and seconds % base_timeframe_seconds == 0:
            out += higher_timeframe_features(tf)
    return out + cross_asset_features(reference_symbol)
