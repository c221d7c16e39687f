"""Cost components on hand examples, the spread estimate, funding windows and the tradable filter."""

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clm.evaluation.costs import (
    COST_COLUMNS,
    CostConfig,
    cost_summary,
    estimate_half_spread_bps,
    read_funding_rates,
    trade_costs,
)

FUNDING_FEATHER = Path(__file__).parents[1] / "data" / "binance_futures" / "XRP_USDT_USDT-8h-funding_rate.feather"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = 3600


def rows(n=1, *, position=1.0, edge=30.0, spread=4.0, qv=1_000_000.0, symbol="AAA", step=HOUR, **extra):
    data = {
        "symbol": [symbol] * n,
        "timestamp": [T0 + timedelta(seconds=step * i) for i in range(n)],
        "position": [position] * n if not isinstance(position, list) else position,
        "edge_bps": [edge] * n if not isinstance(edge, list) else edge,
        "spread_bps": [spread] * n if not isinstance(spread, list) else spread,
        "quote_volume": [qv] * n if not isinstance(qv, list) else qv,
        **extra,
    }
    return pl.DataFrame(data, schema_overrides={"timestamp": pl.Datetime("us", "UTC"), "spread_bps": pl.Float64})


def funding_frame(times_rates, symbol="AAA"):
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(times_rates),
            "timestamp": [T0 + timedelta(hours=h) for h, _ in times_rates],
            "funding_rate": [r for _, r in times_rates],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


def test_each_component_on_a_hand_example():
    cfg = CostConfig(taker_fee_bps=5.0, slippage_bps=1.0, impact_coefficient=10.0, funding=False)
    out = trade_costs(rows(position=0.5, edge=30.0, spread=4.0, qv=1_000_000.0), cfg,
                      notional=20_000, holding_bars=3, timeframe_seconds=HOUR).row(0, named=True)
    assert out["fee_bps"] == 10.0  # 2 x 5
    assert out["half_spread_bps"] == 4.0  # 2 x (4 / 2)
    assert out["slippage_bps"] == 2.0
    # trade notional 0.5 x 20k = 10k, participation 1%: 2 x 10 x sqrt(0.01) = 2 bps
    assert out["impact_bps"] == pytest.approx(2.0)
    assert out["funding_bps"] == 0.0
    assert out["total_cost_bps"] == pytest.approx(18.0)
    assert out["one_way_cost_bps"] == pytest.approx(9.0)
    assert out["net_edge_bps"] == pytest.approx(12.0)
    assert out["tradable"] is True
    assert out["capacity_notional"] == pytest.approx(50_000.0)
    maker = trade_costs(rows(), CostConfig(use_taker=False, maker_fee_bps=1.5), notional=1, holding_bars=1,
                        timeframe_seconds=HOUR)
    assert maker["fee_bps"][0] == 3.0


def test_output_keeps_input_columns_and_order():
    inp = rows(3, position=[1.0, -1.0, 0.0], edge=[5.0, -40.0, 50.0]).with_columns(pl.lit(7).alias("extra"))
    shuffled = inp.reverse()
    out = trade_costs(shuffled, notional=1000, holding_bars=1, timeframe_seconds=HOUR)
    assert out.columns == [*shuffled.columns, *COST_COLUMNS]
    assert out["edge_bps"].to_list() == shuffled["edge_bps"].to_list()
    assert trade_costs(shuffled.lazy(), notional=1000, holding_bars=1, timeframe_seconds=HOUR).equals(out)


def test_net_edge_is_sign_aware_and_tradable_filter():
    cfg = CostConfig(slippage_bps=0.0, impact_coefficient=0.0, taker_fee_bps=5.0, min_edge_after_cost_bps=2.0)
    # cost = 10 fee + 4 spread = 14 bps
    inp = rows(5, position=[1.0, -1.0, 1.0, 0.0, -1.0], edge=[20.0, -20.0, -20.0, -20.0, 15.0])
    out = trade_costs(inp, cfg, notional=1000, holding_bars=1, timeframe_seconds=HOUR)
    assert out["total_cost_bps"].to_list() == pytest.approx([14.0] * 5)
    # long +20, short of -20 earns +20, long against -20, flat row takes the edge's side, short against +15
    assert out["net_edge_bps"].to_list() == pytest.approx([6.0, 6.0, -34.0, 6.0, -29.0])
    assert out["tradable"].to_list() == [True, True, False, True, False]
    strict = trade_costs(inp, CostConfig(slippage_bps=0.0, impact_coefficient=0.0, min_edge_after_cost_bps=7.0),
                         notional=1000, holding_bars=1, timeframe_seconds=HOUR)
    assert not strict["tradable"].any()


def test_impact_grows_with_sqrt_participation():
    qv = [1e6, 1e6 / 4, 1e6 / 16]
    out = trade_costs(rows(3, qv=qv), notional=10_000, holding_bars=1, timeframe_seconds=HOUR)
    impact = out["impact_bps"].to_numpy()
    assert impact == pytest.approx(2 * 10.0 * np.sqrt(10_000 / np.array(qv)))
    assert impact[1] / impact[0] == pytest.approx(2.0) and impact[2] / impact[0] == pytest.approx(4.0)
    bigger = trade_costs(rows(1), notional=40_000, holding_bars=1, timeframe_seconds=HOUR)["impact_bps"][0]
    assert bigger == pytest.approx(2 * impact[0])


def test_zero_volume_is_not_tradable_and_quote_volume_falls_back_to_volume_close():
    out = trade_costs(rows(2, qv=[0.0, None], edge=1000.0), notional=1, holding_bars=1, timeframe_seconds=HOUR)
    assert out["impact_bps"].is_null().all() and not out["tradable"].any()
    alt = rows(1).drop("quote_volume").with_columns(volume=pl.lit(1000.0), close=pl.lit(1000.0))
    a = trade_costs(alt, notional=10_000, holding_bars=1, timeframe_seconds=HOUR)["impact_bps"][0]
    assert a == pytest.approx(2.0)  # participation 1%


def test_half_spread_estimate_when_spread_missing():
    # Corwin-Schultz by hand for two bars
    h = [100.5, 100.6, 100.55]
    l = [99.5, 99.6, 99.52]
    inp = rows(3, spread=[None, None, 6.0], high=h, low=l)
    out = trade_costs(inp, notional=1000, holding_bars=1, timeframe_seconds=HOUR)
    k = 3 - 2 * math.sqrt(2)

    def cs(i):
        b = math.log(h[i] / l[i]) ** 2 + math.log(h[i - 1] / l[i - 1]) ** 2
        g = math.log(max(h[i], h[i - 1]) / min(l[i], l[i - 1])) ** 2
        a = (math.sqrt(2 * b) - math.sqrt(b)) / k - math.sqrt(g / k)
        return 2 * (math.exp(a) - 1) / (1 + math.exp(a))

    s1, s2 = cs(1), cs(2)
    assert s1 > 0
    hs = out["half_spread_bps"].to_list()
    assert hs[1] == pytest.approx(2 * (s1 / 2) * 1e4)  # round trip = 2 x half spread = full spread
    assert hs[0] == pytest.approx(max((s1 + s2) / 2, 0) * 1e4)  # first bar: the symbol's average
    assert hs[2] == 6.0  # a quoted spread wins
    # a configured default replaces the estimate
    d = trade_costs(inp, CostConfig(default_half_spread_bps=1.5), notional=1000, holding_bars=1, timeframe_seconds=HOUR)
    assert d["half_spread_bps"].to_list() == [3.0, 3.0, 6.0]
    # no high/low and no default: clear error
    with pytest.raises(ValueError, match="spread estimate"):
        trade_costs(rows(1, spread=None), notional=1, holding_bars=1, timeframe_seconds=HOUR)


def test_spread_estimate_on_real_bars_is_plausible_and_gap_aware():
    bars = pl.read_ipc(FUNDING_FEATHER.with_name("XRP_USDT_USDT-5m-futures.feather")).select(
        pl.lit("XRP").alias("symbol"), pl.col("date").cast(pl.Datetime("us", "UTC")).alias("timestamp"), "high", "low"
    )
    est = estimate_half_spread_bps(bars, timeframe_seconds=300)["half_spread_est_bps"]
    assert est.null_count() == 0 and (est >= 0).all()
    assert 0.2 < est.mean() < 5.0  # a one-tick book is ~0.5-1 bp of half spread; ranges are ~30 bp
    # a pure volatility move (no bounce) estimates ~0 while a single wide bar would not
    single = pl.DataFrame(
        {"symbol": ["A"] * 2, "timestamp": [T0, T0 + timedelta(hours=5)], "high": [1.0, 1.1], "low": [0.9, 1.0]},
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )
    gap = estimate_half_spread_bps(single, timeframe_seconds=HOUR)["half_spread_est_bps"]
    assert gap.to_list() == pytest.approx([math.log(1 / 0.9) / 2 * 1e4, math.log(1.1) / 2 * 1e4])


def test_funding_sums_over_the_holding_window_with_the_position_sign():
    # rows at 00:00 and 01:00 (1h bars); entry = close of the bar, exit = entry + 8 bars
    fund = funding_frame([(0, 0.5e-4), (8, 1e-4), (9, 2e-4), (16, 4e-4), (17, 8e-4)])
    inp = rows(3, position=[1.0, -1.0, 0.5], edge=10.0)
    out = trade_costs(inp, notional=1000, holding_bars=8, timeframe_seconds=HOUR, funding=fund)
    # row 0: entry 01:00, exit 09:00 -> [01:00, 09:00) holds the 08:00 event only: +1 bp for a long
    # row 1: entry 02:00, exit 10:00 -> 08:00 and 09:00 events: 3 bp, received by the short
    # row 2: entry 03:00, exit 11:00 -> same 3 bp, paid by the (half-size) long
    assert out["funding_bps"].to_list() == pytest.approx([1.0, -3.0, 3.0])
    base = out["total_cost_bps"] - out["funding_bps"]
    assert (base - base[0]).abs().max() < 5  # impact differs by size only
    late = trade_costs(inp, notional=1000, holding_bars=8, timeframe_seconds=HOUR, funding=fund, latency_bars=7)
    # row 0 with latency 7: entry 08:00, exit 16:00 -> 08:00 and 09:00 events (entry inclusive)
    assert late["funding_bps"][0] == pytest.approx(3.0)
    off = trade_costs(inp, CostConfig(funding=False), notional=1000, holding_bars=8, timeframe_seconds=HOUR, funding=fund)
    assert (off["funding_bps"] == 0).all()
    other = trade_costs(inp, notional=1000, holding_bars=8, timeframe_seconds=HOUR,
                        funding=funding_frame([(8, 1e-4)], symbol="BBB"))
    assert (other["funding_bps"] == 0).all()


def test_read_real_funding_feather_and_apply_it():
    fund = read_funding_rates(FUNDING_FEATHER)
    assert fund.columns == ["symbol", "timestamp", "funding_rate"]
    assert fund["symbol"].unique().to_list() == ["XRP_USDT_USDT"]
    assert fund.height == 91
    assert (fund["timestamp"].dt.hour().is_in([0, 8, 16])).all()
    assert (fund["timestamp"].dt.second() == 0).all() and (fund["timestamp"].dt.millisecond() == 0).all()
    assert fund["funding_rate"].abs().max() < 0.01
    start = fund["timestamp"][0]
    trade = pl.DataFrame(
        {"symbol": ["XRP_USDT_USDT"], "timestamp": [start - timedelta(minutes=5)], "position": [-1.0],
         "edge_bps": [0.0], "spread_bps": [1.0], "quote_volume": [1e7]},
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )
    # entry at `start`, held 24h (288 5m bars): the first three events
    out = trade_costs(trade, notional=1000, holding_bars=288, timeframe_seconds=300, funding=fund)
    assert out["funding_bps"][0] == pytest.approx(-fund["funding_rate"][:3].sum() * 1e4)


def test_read_funding_csv_and_errors(tmp_path):
    csv = tmp_path / "BTCUSDT-8h-funding.csv"
    csv.write_text("fundingTime,fundingRate\n1704067200000,0.0001\n1704096000000,-0.0002\n")
    fund = read_funding_rates(csv)
    assert fund["symbol"].to_list() == ["BTCUSDT", "BTCUSDT"]
    assert fund["timestamp"].to_list() == [T0, T0 + timedelta(hours=8)]
    assert fund["funding_rate"].to_list() == [0.0001, -0.0002]
    iso = tmp_path / "f.csv"
    iso.write_text("symbol,timestamp,funding_rate\nETH,2024-01-01T00:00:00Z,0.0003\n")
    assert read_funding_rates(iso).row(0) == ("ETH", T0, 0.0003)
    with pytest.raises(ValueError, match="does not exist"):
        read_funding_rates(tmp_path / "nope.feather")
    bad = tmp_path / "bad.csv"
    bad.write_text("when,what\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv.*lacks"):
        read_funding_rates(bad)
    junk = tmp_path / "junk.feather"
    junk.write_bytes(b"not arrow")
    with pytest.raises(ValueError, match="junk.feather.*unreadable"):
        read_funding_rates(junk)
    unparsable = tmp_path / "u.csv"
    unparsable.write_text("timestamp,funding_rate\nyesterday,0.1\n")
    with pytest.raises(ValueError, match="unparseable"):
        read_funding_rates(unparsable)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"taker_fee_bps": -1}, "taker_fee_bps"),
        ({"maker_fee_bps": float("nan")}, "maker_fee_bps"),
        ({"use_taker": 1}, "use_taker"),
        ({"slippage_bps": "1"}, "slippage_bps"),
        ({"impact_coefficient": -0.1}, "impact_coefficient"),
        ({"max_participation": 0}, "max_participation"),
        ({"max_participation": 1.5}, "max_participation"),
        ({"min_edge_after_cost_bps": float("inf")}, "min_edge_after_cost_bps"),
        ({"default_half_spread_bps": -2}, "default_half_spread_bps"),
        ({"funding": "yes"}, "funding"),
        ({"spread_estimate_window": 0}, "spread_estimate_window"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CostConfig(**kwargs)


def test_call_errors():
    with pytest.raises(ValueError, match="notional"):
        trade_costs(rows(), notional=0, holding_bars=1, timeframe_seconds=60)
    with pytest.raises(ValueError, match="holding_bars"):
        trade_costs(rows(), notional=1, holding_bars=0, timeframe_seconds=60)
    with pytest.raises(ValueError, match="timeframe_seconds"):
        trade_costs(rows(), notional=1, holding_bars=1, timeframe_seconds=1.5)
    with pytest.raises(ValueError, match="edge_bps"):
        trade_costs(rows().drop("edge_bps"), notional=1, holding_bars=1, timeframe_seconds=60)
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        trade_costs(rows(position=2.0), notional=1, holding_bars=1, timeframe_seconds=60)
    with pytest.raises(ValueError, match="funding frame lacks"):
        trade_costs(rows(), notional=1, holding_bars=1, timeframe_seconds=60, funding=pl.DataFrame({"x": [1]}))


def test_cost_summary():
    out = trade_costs(rows(4, position=[1.0, -1.0, 0.0, 1.0], edge=[100.0, -100.0, 0.0, 0.0]),
                      notional=10_000, holding_bars=1, timeframe_seconds=HOUR)
    s = cost_summary(out)
    assert s["n_rows"] == 4 and s["n_trades"] == 3
    assert s["share_tradable"] == pytest.approx(2 / 3)
    assert s["mean_fee_bps"] == 10.0 and s["mean_impact_bps"] == pytest.approx(2.0)
    assert s["median_capacity_notional"] == pytest.approx(50_000.0)
    empty = cost_summary(out.filter(pl.col("position") == 5))
    assert empty["n_trades"] == 0 and empty["mean_fee_bps"] is None
    with pytest.raises(ValueError, match="trade_costs first"):
        cost_summary(rows())
