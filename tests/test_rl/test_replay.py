"""The trade replay: exits on handmade bars, the cost model's costs, the same candidates for every policy, and a
verdict that says so when the agent loses."""

import datetime as dt
import itertools

import numpy as np
import polars as pl
import pytest

from clm.evaluation.costs import CostConfig, trade_costs
from clm.lake import Lake
from clm.policy import Policy
from clm.regimes.config import CLASSES, LIQUIDITY_LEVELS, VOLATILITY_LEVELS
from clm.rl import MetaStrategyAgent, RewardEngine, make_sizer
from clm.rl.meta import PERFORMANCE_LEVELS, STRATEGIES, MetaConfig
from clm.rl.replay import (
    AgentPolicy,
    FixedSizePolicy,
    RandomPolicy,
    build_trades,
    evaluate,
    load_replay_inputs,
    performance_label,
    play,
    verdict,
)
from clm.rl.sizing import SafetyClamp
from clm.telemetry.events import normalise_fields

from .conftest import build_replay_lake

RISK = Policy().risk_modes.current
CLAMP = SafetyClamp(RISK)
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SHORT = {"horizon": 4, "latency_bars": 1}


def handmade(paths: dict[str, list[tuple[float, float, float, float]]], *, atr: float = 1.0,
             quote_volume: float = 1e9) -> pl.DataFrame:
    """Bars (open, high, low, close) per symbol, 5 minutes apart, with the regime and feature columns."""
    rows = []
    for symbol, bars in paths.items():
        for i, (o, h, lo, c) in enumerate(bars):
            rows.append({"symbol": symbol, "timestamp": START + dt.timedelta(minutes=5 * i), "open": o, "high": h,
                         "low": lo, "close": c, "volume": 1000.0, "quote_volume": quote_volume, "spread_bps": 2.0,
                         "regime": "range", "volatility_level": "MEDIUM", "liquidity_level": "HIGH", "atr_14": atr,
                         "trend_strength": 0.2, "mom_20": 0.01, "atr_ratio": atr / c})
    return pl.DataFrame(rows).with_columns(pl.col("timestamp").dt.cast_time_unit("us"))


def flat(n: int, price: float = 100.0) -> list[tuple[float, float, float, float]]:
    return [(price, price, price, price)] * n


# decision bar 0, entry at the close of bar 1 (100), horizon bars 2..5; ATR 1 = 1 % of the entry
PATHS = {
    # take-profit (balanced, 2 ATR = 102) touched on the second horizon bar; stop-loss (99) never
    "TPA": [*flat(2), (100, 101, 99.5, 100.5), (100.5, 102.5, 100, 102), (102, 102, 101, 101.5),
            (101.5, 101.5, 101, 101)],
    # both levels inside the first horizon bar: the stop-loss counts
    "TIE": [*flat(2), (100, 102.5, 98.5, 100), *flat(3)],
    # the first horizon bar opens below the stop-loss: filled at the open, not at the level
    "GAP": [*flat(2), (97, 97.5, 96.5, 97), *flat(3, 97)],
}


def one_signal_each(paths, action: str = "long") -> pl.DataFrame:
    return pl.DataFrame({"symbol": list(paths), "timestamp": [START] * len(paths), "action": [action] * len(paths)}
                        ).with_columns(pl.col("timestamp").dt.cast_time_unit("us"))


def index(trades, symbol: str) -> int:
    return trades.frame["symbol"].to_list().index(symbol)


def test_take_profit_stop_loss_and_horizon_exits_on_handmade_bars():
    trades = build_trades(handmade(PATHS), one_signal_each(PATHS), SHORT)
    assert len(trades) == 3 and trades.timeframe_seconds == 300
    tp = index(trades, "TPA")
    gross, held, hit_tp, hit_sl, adverse, exit_us = trades.outcome(tp, 1, "balanced", "medium")
    assert (gross, held, hit_tp, hit_sl) == (pytest.approx(0.02), 2, True, False)
    assert adverse == pytest.approx(0.005)  # the low of 99.5 before the take-profit
    assert exit_us == int((START + dt.timedelta(minutes=5 * 4)).timestamp() * 1e6)  # close of bar 3
    gross, held, hit_tp, hit_sl, _, _ = trades.outcome(tp, 1, None, None)  # held to the horizon: close of bar 5
    assert (gross, held, hit_tp, hit_sl) == (pytest.approx(0.01), 4, False, False)
    gross, held, hit_tp, _, _, _ = trades.outcome(tp, 1, "aggressive", "wide")  # 103 never touched
    assert (gross, held, hit_tp) == (pytest.approx(0.01), 4, False)
    gross, held, _, hit_sl, _, _ = trades.outcome(tp, -1, "balanced", "medium")  # short: stop-loss 101, first bar
    assert (gross, held, hit_sl) == (pytest.approx(-0.01), 1, True)

    tie = index(trades, "TIE")
    gross, held, hit_tp, hit_sl, _, _ = trades.outcome(tie, 1, "balanced", "medium")
    assert (gross, held, hit_tp, hit_sl) == (pytest.approx(-0.01), 1, False, True)
    gap = index(trades, "GAP")
    gross, held, _, hit_sl, adverse, _ = trades.outcome(gap, 1, "conservative", "tight")
    assert (gross, held, hit_sl) == (pytest.approx(-0.03), 1, True) and adverse == pytest.approx(0.03)
    gross, held, hit_tp, _, _, _ = trades.outcome(gap, -1, "balanced", "medium")  # short: take-profit at 98
    assert (gross, held, hit_tp) == (pytest.approx(0.02), 1, True)


def test_costs_are_the_cost_models_at_the_trades_notional():
    bars = handmade(PATHS, quote_volume=2e6)  # thin enough for impact to matter
    trades = build_trades(bars, one_signal_each(PATHS), SHORT)
    tp = index(trades, "TPA")
    assert trades.frame["notional"].unique().to_list() == [CostConfig().default_notional]  # no quote in "TPA"
    row = bars.filter((pl.col("symbol") == "TPA") & (pl.col("timestamp") == START))
    for direction in (1, -1):
        for stake in (0.3, 1.0, 4.5):
            direct = trade_costs(row.with_columns(pl.lit(float(direction)).alias("position"),
                                                  pl.lit(0.0).alias("edge_bps")), CostConfig(),
                                 notional=trades.frame["notional"][tp] * stake, holding_bars=4, timeframe_seconds=300,
                                 latency_bars=1)["total_cost_bps"][0]
            assert trades.cost_bps(tp, direction, stake) == pytest.approx(direct, rel=1e-12)
    fixed = build_trades(bars, one_signal_each(PATHS), {**SHORT, "stake_notional": 40_000.0})
    assert fixed.frame["notional"].unique().to_list() == [40_000.0]
    assert fixed.impact_bps[index(fixed, "TPA")] == pytest.approx(2 * trades.impact_bps[tp])  # sqrt(4)
    # the fixed-size baseline's trade: held to the horizon, net of exactly that cost
    result = play(trades, np.array([tp]), FixedSizePolicy(CLAMP), risk_mode=RISK)
    (event,) = result.events
    replay = event["payload"]["replay"]
    assert replay["cost_bps"] == pytest.approx(trades.cost_bps(tp, 1, 1.0)) and replay["cost_bps"] > 10
    assert event["pnl_pct"] == pytest.approx(100 * (0.01 - replay["cost_bps"] * 1e-4))
    assert result.returns[0] == pytest.approx(0.10 * (0.01 - replay["cost_bps"] * 1e-4))
    free_bars = bars.with_columns(pl.lit(0.0).alias("spread_bps"))
    free = build_trades(free_bars, one_signal_each(PATHS), SHORT,
                        cost_config=CostConfig(taker_fee_bps=0, slippage_bps=0, impact_coefficient=0))
    costless = play(free, np.array([index(free, "TPA")]), FixedSizePolicy(CLAMP), risk_mode=RISK)
    assert costless.returns[0] == pytest.approx(0.10 * 0.01)
    assert costless.returns[0] - result.returns[0] == pytest.approx(0.10 * replay["cost_bps"] * 1e-4)


def test_signals_that_overlap_or_lack_data_are_dropped_with_their_reason():
    bars = handmade({"A": flat(14), "B": flat(14)}).with_columns(
        pl.when((pl.col("symbol") == "B") & (pl.col("timestamp") == START)).then(None).otherwise(pl.col("regime"))
        .alias("regime"))
    at = [START + dt.timedelta(minutes=5 * i) for i in (0, 2, 5, 11)]
    signals = pl.DataFrame({"symbol": ["A"] * 4 + ["B", "Z"], "timestamp": [*at, START, START],
                            "action": ["long", "short", "long", "long", "long", "short"]}).with_columns(
        pl.col("timestamp").dt.cast_time_unit("us"))
    trades = build_trades(bars, signals, SHORT)
    # A at bar 0 (exit bar 5) and bar 5 (exit bar 10) trade; bar 2 overlaps the first; bar 11 runs past the data
    assert trades.frame["timestamp"].to_list() == [at[0], at[2]]
    assert {k: v for k, v in trades.dropped.items() if v} == {"overlap": 1, "end_of_data": 1, "no_regime": 1,
                                                              "no_bar": 1}
    assert trades.signals == 6


def test_bad_inputs_are_named(tmp_path):
    bars = handmade(PATHS)
    with pytest.raises(ValueError, match="no champion signals"):
        build_trades(bars, one_signal_each(PATHS, "stand_aside"), SHORT)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['atr_14'\]"):
        build_trades(bars.drop("atr_14"), one_signal_each(PATHS), SHORT)
    with pytest.raises(ValueError, match="no candidate trades: 3 signals, all dropped .*end_of_data 3"):
        build_trades(bars, one_signal_each(PATHS), {"horizon": 40})
    with pytest.raises(ValueError, match="replay config: horizon"):
        build_trades(bars, one_signal_each(PATHS), {"horizon": 0})
    with pytest.raises(ValueError, match="no champion signals: table 'consensus' is missing"):
        load_replay_inputs(Lake(tmp_path / "empty"))
    trades = build_trades(bars, one_signal_each(PATHS), SHORT)
    with pytest.raises(ValueError, match="held-out set is empty"):
        trades.split(0.2)  # 20 % of 3 candidates: not one
    with pytest.raises(ValueError, match="training set is empty"):
        trades.split(0.5)  # all three decided at once: nothing before the held-out period


@pytest.fixture(scope="module")
def replayed(replay_lake):
    signals, bars = load_replay_inputs(replay_lake)
    return build_trades(bars, signals)


def test_every_policy_plays_the_same_candidates_and_the_fixed_baseline_holds_to_the_horizon(replayed):
    trades = replayed
    train, held = trades.split(0.3)
    assert train.size and held.size and trades.decision_us[train].max() < trades.decision_us[held].min()
    assert trades.horizon_exit_us[train].max() <= trades.decision_us[held].min()  # purged
    meta, sizer = MetaStrategyAgent(seed=0), make_sizer(risk_mode=RISK, seed=0)
    evaluation = evaluate(trades, held, AgentPolicy(meta, sizer, rewards=RewardEngine(), explore=True, learn=True),
                          risk_mode=RISK, seed=3, n_boot=200)
    assert set(evaluation.results) == {"agent", "fixed_size", "random"}
    for result in evaluation.results.values():
        assert np.array_equal(result.rows, held)
        assert result.returns.shape == held.shape
        assert result.opened.sum() == len(result.events) == evaluation.metrics[result.policy]["trades"]
    fixed = evaluation.results["fixed_size"]
    assert {e["payload"]["meta_strategy"]["strategy"] for e in fixed.events} == {"trend_follow"}
    assert {e["payload"]["replay"]["bars_held"] for e in fixed.events} == {12}
    assert {e["payload"]["replay"]["stake"] for e in fixed.events} == {1.0}
    assert all(e["payload"]["replay"]["direction"] == e["payload"]["replay"]["signal"] for e in fixed.events)
    assert meta.trades == 0 and sizer.trades == 0  # the evaluation never learns
    comp = evaluation.comparisons["fixed_size"]
    diff = (evaluation.results["agent"].returns - fixed.returns) * 1e4
    assert comp["mean_diff_bps"] == pytest.approx(diff.mean()) and comp["n"] == held.size
    assert comp["ci95_bps"][0] <= comp["mean_diff_bps"] <= comp["ci95_bps"][1]
    table = evaluation.table()
    assert table["policy"].to_list() == ["agent", "fixed_size", "random"]
    curves = evaluation.curves()
    assert curves.filter(pl.col("policy") == "fixed_size")["equity"][-1] == pytest.approx(
        1 + evaluation.metrics["fixed_size"]["total_net_return"])


def test_events_are_trade_closed_telemetry_the_agents_learn_from(replayed):
    meta, sizer = MetaStrategyAgent(seed=1), make_sizer(risk_mode=RISK, seed=1)
    rewards = RewardEngine()
    result = play(replayed, np.arange(40), RandomPolicy(CLAMP, sizer="qtable", seed=0), risk_mode=RISK)
    assert result.events
    exit_times = [e["timestamp"] for e in result.events]
    assert exit_times == sorted(exit_times)  # closed in exit order
    for event in result.events:
        normalise_fields(event)  # the telemetry contract: known fields, right types
        event = {**event, "payload": {**event["payload"],
                                      "sizing": {**event["payload"]["sizing"], "agent": sizer.name}}}
        exp = meta.experience(event, rewards)
        assert exp is not None and exp.strategy in STRATEGIES
        assert sizer.experience(event, rewards) is not None


def test_the_verdict_says_so_when_the_agent_loses(tmp_path):
    """On signals that are right 90 % of the time, an agent that always fades them must lose."""
    lake = build_replay_lake(tmp_path / "lake", accuracy=0.9)
    signals, bars = load_replay_inputs(lake)
    trades = build_trades(bars, signals)
    _, held = trades.split(0.5)
    meta = MetaStrategyAgent(seed=0)
    fade = STRATEGIES.index("mean_reversion")
    for state in itertools.product(CLASSES, VOLATILITY_LEVELS, LIQUIDITY_LEVELS, PERFORMANCE_LEVELS):
        meta.table.update(state, fade, 1.0, 1.0)
    agent = AgentPolicy(meta, make_sizer(risk_mode=RISK, seed=0), rewards=RewardEngine(), explore=False, learn=False)
    evaluation = evaluate(trades, held, agent, risk_mode=RISK, seed=0, n_boot=500)
    fixed, random = evaluation.comparisons["fixed_size"], evaluation.comparisons["random"]
    assert fixed["mean_diff_bps"] < 0 and fixed["ci95_bps"][1] < 0  # worse, and not by chance
    against_random = "beats random" if random["mean_diff_bps"] > 0 else "loses to random"
    head = ("loses to both baselines" if against_random == "loses to random"
            else f"loses to fixed-size, {against_random}")
    assert evaluation.verdict.startswith(f"the agent {head}: loses to fixed-size by -")
    assert f"(95% CI {fixed['ci95_bps'][0]:+.2f} .. {fixed['ci95_bps'][1]:+.2f}, significant)" in evaluation.verdict
    assert evaluation.metrics["agent"]["total_net_return"] < evaluation.metrics["fixed_size"]["total_net_return"]
    assert set(evaluation.metrics["agent"]["strategies"]) == {"mean_reversion"}


def test_verdict_from_the_numbers():
    def comp(mean, low, high):
        return {"mean_diff_bps": mean, "ci95_bps": [low, high]}

    assert verdict({"fixed_size": comp(2.0, 0.5, 3.0), "random": comp(1.0, -1.0, 3.0)}).startswith(
        "the agent beats both baselines: beats fixed-size by +2.00 bps")
    text = verdict({"fixed_size": comp(-2.0, -3.0, -0.5), "random": comp(1.0, 0.2, 3.0)})
    assert text.startswith("the agent loses to fixed-size, beats random: ")
    assert "(95% CI -3.00 .. -0.50, significant)" in text and "not significant" not in text
    assert verdict({"fixed_size": comp(0.0, -1.0, 1.0), "random": comp(-1.0, -2.0, 0.5)}).startswith(
        "the agent ties with fixed-size, loses to random")
    # beating baselines that lose money is no profit: the verdict says what the agent made itself
    metrics = {"agent": {"total_net_return": -0.0023, "trades": 30, "candidates": 654},
               "fixed_size": {"total_net_return": -0.2563}, "random": {"total_net_return": -0.1596}}
    text = verdict({"fixed_size": comp(4.5, 3.4, 5.6), "random": comp(2.6, 2.1, 3.2)}, metrics)
    assert text.startswith("the agent beats both baselines: ")
    assert text.endswith("; on its own the agent made -0.23% net over 30 trades of 654 candidates (fixed-size "
                         "-25.63%, random -15.96%): it lost money")


def test_performance_label_is_the_agents_rule():
    agent = MetaStrategyAgent({"min_performance_trades": 3, "performance_window": 5}, seed=0)
    outcomes = []
    for won in (True, True, False, True, True, False, False, False, False):
        agent.update(agent.state("range", "LOW", "HIGH"), "defensive", 1.0 if won else -1.0, won=won)
        outcomes = [*outcomes, won][-5:]
        assert performance_label(outcomes, agent.config) == agent.recent_performance
    assert performance_label([], MetaConfig()) == "NEUTRAL"
