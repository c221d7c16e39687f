"""The trade size the impact term charges is per quote currency: a symbol's quote asset, the config's
notional for it (validated), the explicit override, and the real BTC-quoted pairs at a sane cost."""

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from clm.data.schema import quote_asset
from clm.data.sources.files import FolderSource
from clm.data.validation import validate_bars
from clm.evaluation.costs import (
    DEFAULT_NOTIONAL,
    DEFAULT_NOTIONAL_BY_QUOTE,
    CostConfig,
    notionals_used,
    trade_costs,
)
from clm.training.evaluate import evaluate_engines

BINANCE = Path(__file__).parents[1] / "data" / "binance_spot_5m"  # ten */BTC pairs, January 2018
T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = 3600
# impact alone: fees, spread and slippage off
IMPACT_ONLY = dict(taker_fee_bps=0.0, slippage_bps=0.0, default_half_spread_bps=0.0, funding=False,
                   impact_coefficient=10.0)


def rows(symbols, qv):
    n = len(symbols)
    return pl.DataFrame(
        {
            "symbol": symbols,
            "timestamp": [T0 + timedelta(hours=i) for i in range(n)],
            "position": [1.0] * n,
            "edge_bps": [30.0] * n,
            "spread_bps": [0.0] * n,
            "quote_volume": qv if isinstance(qv, list) else [qv] * n,
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


def impact(notional, qv, coefficient=10.0):
    """The module's formula, round trip: 2 * coefficient * sqrt(notional / quote_volume)."""
    return 2 * coefficient * math.sqrt(notional / qv)


@pytest.mark.parametrize(
    ("symbol", "quote"),
    [
        ("ETH_BTC", "BTC"),  # normalise_symbol's BASE_QUOTE
        ("XRP_USDT_USDT", "USDT"),  # futures BASE_QUOTE_SETTLE
        ("BTC_USDT-PERP", "USDT"),
        ("ETHBTC", "BTC"),  # no separator: a known quote suffix
        ("BTCUSDT", "USDT"),  # the longest suffix, not USD
        ("SYN000USD", "USD"),  # the synthetic market's names
        ("AAA", None),
        ("PRICES", None),
        ("USDT", None),  # a suffix needs a base before it
        ("", None),
        (None, None),
    ],
)
def test_quote_asset_of_each_symbol_convention(symbol, quote):
    assert quote_asset(symbol) == quote


def test_quote_asset_knows_extra_quotes_only_when_told():
    assert quote_asset("BTCJPY") is None
    assert quote_asset("BTCJPY", ("JPY", "USD")) == "JPY"


def test_a_btc_pair_trades_the_btc_notional_at_a_sane_impact():
    # ETH/BTC's median 5-minute bar in January 2018 traded ~14 BTC: half a BTC is 3.6 % of it
    out = trade_costs(rows(["ETH_BTC"], 14.0), CostConfig(**IMPACT_ONLY), holding_bars=12,
                      timeframe_seconds=300).row(0, named=True)
    assert out["notional"] == DEFAULT_NOTIONAL_BY_QUOTE["BTC"] == 0.5
    assert out["impact_bps"] == pytest.approx(impact(0.5, 14.0)) == pytest.approx(3.7796, abs=1e-4)
    # the old hard-coded 10,000 (BTC!) was ~700 bars of volume: 534 bps of impact
    assert impact(10_000, 14.0) > 500


def test_each_quote_gets_its_own_notional_in_one_call():
    cfg = CostConfig(**IMPACT_ONLY, notional_by_quote={"BTC": 0.5, "USDT": 10_000.0, "ETH": 5.0},
                     default_notional=2_500.0)
    symbols = ["ETH_BTC", "XRP_USDT_USDT", "SYN001USD", "LINK_ETH", "ABC_XYZ", "AAA"]
    qv = [14.0, 1_000_000.0, 1_000_000.0, 100.0, 1_000_000.0, 1_000_000.0]
    out = trade_costs(rows(symbols, qv), cfg, holding_bars=1, timeframe_seconds=HOUR)
    # USD is not listed in this config: the synthetic symbol, the unknown quote and the unreadable one
    # all trade the default
    expected = [0.5, 10_000.0, 2_500.0, 5.0, 2_500.0, 2_500.0]
    assert out["notional"].to_list() == expected
    assert out["impact_bps"].to_list() == pytest.approx([impact(n, q) for n, q in zip(expected, qv, strict=True)])
    assert out["capacity_notional"].to_list() == pytest.approx([0.05 * q for q in qv])
    assert notionals_used(out) == {"BTC": [0.5], "ETH": [5.0], "USD": [2_500.0], "USDT": [10_000.0],
                                   "XYZ": [2_500.0], "other": [2_500.0]}


def test_the_defaults_cover_usd_quotes_and_the_synthetic_market():
    cfg = CostConfig()
    assert cfg.notional_for("SYN000USD") == cfg.notional_for("BTC_USDT") == DEFAULT_NOTIONAL == 10_000.0
    assert cfg.notional_for("ETH_BTC") == 0.5 and cfg.notional_for("ETHBTC") == 0.5
    assert cfg.notional_for("SOL_ETH") == 5.0 and cfg.notional_for("ADA_BNB") == 30.0
    assert cfg.notional_for("EUR_TRY") == DEFAULT_NOTIONAL and cfg.notional_for("AAA") == DEFAULT_NOTIONAL


def test_a_config_quote_is_recognised_without_a_separator_and_keys_are_upper_cased():
    cfg = CostConfig(notional_by_quote={" jpy ": 1_500_000})
    assert cfg.notional_by_quote == {"JPY": 1_500_000.0}
    assert cfg.notional_for("BTCJPY") == 1_500_000.0 and cfg.notional_for("BTC_JPY") == 1_500_000.0
    assert cfg.notional_for("ETH_BTC") == DEFAULT_NOTIONAL  # a mapping given replaces the defaults
    assert hash(cfg) == hash(CostConfig(notional_by_quote={"JPY": 1_500_000.0})) and cfg.as_dict()[
        "notional_by_quote"] == {"JPY": 1_500_000.0}


def test_an_explicit_notional_overrides_every_quote():
    out = trade_costs(rows(["ETH_BTC", "BTC_USDT"], 1_000_000.0), CostConfig(**IMPACT_ONLY), notional=20_000,
                      holding_bars=1, timeframe_seconds=HOUR)
    assert out["notional"].to_list() == [20_000.0, 20_000.0]
    assert out["impact_bps"].to_list() == pytest.approx([impact(20_000, 1e6)] * 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"notional_by_quote": {"BTC": 0.0}}, r"notional_by_quote\['BTC'\] must be a finite number > 0, got 0"),
        ({"notional_by_quote": {"btc": -1}}, r"notional_by_quote\['BTC'\] must be a finite number > 0"),
        ({"notional_by_quote": {"ETH": float("nan")}}, r"notional_by_quote\['ETH'\]"),
        ({"notional_by_quote": {"ETH": float("inf")}}, r"notional_by_quote\['ETH'\]"),
        ({"notional_by_quote": {"ETH": True}}, r"notional_by_quote\['ETH'\]"),
        ({"notional_by_quote": {"ETH": "5"}}, r"notional_by_quote\['ETH'\]"),
        ({"notional_by_quote": {"B TC": 1.0}}, r"key 'B TC' is not a quote asset"),
        ({"notional_by_quote": {"": 1.0}}, r"key '' is not a quote asset"),
        ({"notional_by_quote": {"btc": 1.0, "BTC": 2.0}}, r"quote 'BTC' is given twice"),
        ({"notional_by_quote": [("BTC", 1.0)]}, r"notional_by_quote must be a mapping"),
        ({"default_notional": 0}, r"default_notional must be a finite number > 0"),
        ({"default_notional": float("nan")}, r"default_notional"),
    ],
)
def test_bad_notionals_are_refused_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CostConfig(**kwargs)


def test_a_bad_override_or_a_clashing_column_is_refused():
    with pytest.raises(ValueError, match="notional must be None or a finite number > 0"):
        trade_costs(rows(["ETH_BTC"], 14.0), notional=-1.0, holding_bars=1, timeframe_seconds=HOUR)
    with pytest.raises(ValueError, match=r"already have output column\(s\) \['notional'\]"):
        trade_costs(rows(["ETH_BTC"], 14.0).with_columns(pl.lit(1.0).alias("notional")), holding_bars=1,
                    timeframe_seconds=HOUR)


# ------------------------------------------------------------------------------------------------
# the real BTC-quoted pairs: what the bug made of them, and what they cost now
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binance():
    return validate_bars(FolderSource(BINANCE).load().bars).candles


def test_real_btc_pairs_cost_tens_of_bps_not_hundreds(binance):
    assert set(binance["symbol"].unique().to_list()) >= {"ETH_BTC", "ADA_BTC", "ZEC_BTC"}
    always_long = binance.select("symbol", "timestamp", "high", "low", "quote_volume", "spread_bps", "is_filled",
                                 pl.lit(1.0).alias("position"), pl.lit(0.0).alias("edge_bps"))
    out = trade_costs(always_long, holding_bars=12, timeframe_seconds=300, latency_bars=1)
    assert notionals_used(out) == {"BTC": [0.5]}
    median = out.select(pl.col("total_cost_bps", "impact_bps").median()).row(0, named=True)
    # measured: total 49 bps (fees 10, Corwin-Schultz spread 24, slippage 2, impact 9); 1,342 bps with 10,000 BTC
    assert median["impact_bps"] < 20
    assert median["total_cost_bps"] < 60


def test_evaluate_engines_costs_the_real_btc_pairs_at_their_notional(binance):
    # a trivial always-long rule that expects enough edge to take every trade, under a registered engine's name
    bars = binance.sort("symbol", "timestamp").with_columns(
        (pl.col("close").shift(-1).over("symbol") / pl.col("close")).log().alias("return_1"),
        (pl.col("close").shift(-12).over("symbol") / pl.col("close")).log().alias("target_return"),
    ).drop_nulls("target_return")
    predictions = bars.select(
        pl.lit("lightgbm_regressor").alias("engine"), pl.lit(0).alias("fold"), "symbol", "timestamp",
        pl.lit("range").alias("regime"), pl.lit(1.0).alias("prediction"), pl.lit(1.0).alias("signal"),
        pl.lit(None, pl.Float64).alias("probability"), pl.lit(1_000.0).alias("expected_edge_bps"),
        "target_return", "return_1",
    )
    evaluation = evaluate_engines(predictions, binance, timeframe_seconds=300, horizon=12)
    costs = evaluation.costs
    assert costs["notional"].unique().to_list() == [0.5]
    assert costs["total_cost_bps"].median() < 60 and costs["impact_bps"].median() < 20
    assert evaluation.cost_summary["n_trades"] >= 0.99 * predictions.height  # all but bars without volume
