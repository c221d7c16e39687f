import datetime as dt

import polars as pl
import pytest
from pydantic import ValidationError

from clm.data.universe import UniverseConfig, select_universe

UTC = dt.timezone.utc


def _candles():
    days = [dt.datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    rows = []
    for symbol, qv, spread in (("LIQ", 1_000.0, 3.0), ("THIN", 10.0, 4.0), ("WIDE", 5_000.0, 90.0), ("NOSPREAD", 2_000.0, None)):
        for day in days:
            rows.append({"symbol": symbol, "timestamp": day, "quote_volume": qv, "spread_bps": spread, "is_filled": False})
    # filled bars never count as liquidity
    rows.append({"symbol": "THIN", "timestamp": days[0] + dt.timedelta(minutes=5), "quote_volume": 1e9, "spread_bps": 1.0, "is_filled": True})
    return pl.DataFrame(rows)


def test_universe_keeps_liquid_tight_symbols_and_explains_the_rest():
    universe, dnt = select_universe(_candles(), UniverseConfig(min_liquidity=100, max_spread_bps=50))
    assert universe["symbol"].to_list() == ["LIQ", "NOSPREAD"]
    reasons = dict(dnt.iter_rows())
    assert set(reasons) == {"THIN", "WIDE"}
    assert "min_liquidity" in reasons["THIN"] and "max_spread_bps" in reasons["WIDE"]
    assert universe.filter(pl.col("symbol") == "LIQ")["median_daily_quote_volume"].item() == 1_000.0


def test_universe_config_is_validated():
    with pytest.raises(ValidationError, match="max_spread_bps"):
        UniverseConfig(max_spread_bps=0)
    with pytest.raises(ValidationError, match="min_liquidity"):
        UniverseConfig(min_liquidity=-1)
