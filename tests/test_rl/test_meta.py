"""Meta-strategy agent: it finds a planted pattern, explores with decay, learns from trade.closed events."""

import numpy as np
import pytest

from clm.regimes.config import CLASSES, LIQUIDITY_LEVELS, VOLATILITY_LEVELS
from clm.rl import STRATEGIES, MetaStrategyAgent, RewardEngine, RLConfigError

# The planted market: in `range` only mean reversion pays (mean PnL +1%, every other strategy -0.5%);
# every other regime pays nobody on average. PnL noise sd 2% per trade: each trade alone says little.
PLANTED_MU = {"range": {"mean_reversion": 1.0}}
RANKED_FROM = 1000  # trades after which mean_reversion must rank first in `range` ...
CHECKED_UNTIL = 2000  # ... at every 50th trade up to here


def run_planted(seed: int, trades: int, every: int = 50):
    agent = MetaStrategyAgent(seed=seed)
    rewards = RewardEngine()
    rng = np.random.default_rng(seed + 1000)
    rankings = {}
    for t in range(1, trades + 1):
        regime = CLASSES[rng.integers(len(CLASSES))]
        state = agent.state(regime, VOLATILITY_LEVELS[rng.integers(4)], LIQUIDITY_LEVELS[rng.integers(3)])
        strategy = agent.act(state)
        pnl = rng.normal(PLANTED_MU.get(regime, {}).get(strategy, -0.5), 2.0)
        won = pnl > 0
        reward = rewards.meta_strategy(pnl, rng.uniform(1, 8), abs(rng.normal(0.3, 0.2)),
                                       agent.strategy_win_rate(strategy, including=won))
        agent.update(state, strategy, reward, won=won)
        if t % every == 0:
            rankings[t] = agent.ranking("range")
    return agent, rankings


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_pattern_mean_reversion_ranks_first_in_range(seed):
    agent, rankings = run_planted(seed, CHECKED_UNTIL)
    late = {t: r[0] for t, r in rankings.items() if t >= RANKED_FROM}
    assert set(late.values()) == {"mean_reversion"}, late
    # in range states it has seen most, the greedy choice is mean reversion too
    range_states = sorted((s for s in agent.table.q if s[0] == "range"), key=lambda s: -agent.table.visits[s].sum())
    assert [agent.greedy(s) for s in range_states[:5]].count("mean_reversion") >= 3


def test_planted_run_is_reproducible():
    a, ra = run_planted(7, 300)
    b, rb = run_planted(7, 300)
    assert ra == rb
    assert a.table.to_payload() == b.table.to_payload()


def test_epsilon_greedy_decays_to_the_floor():
    agent = MetaStrategyAgent({"epsilon": 1.0, "epsilon_decay": 0.9, "epsilon_min": 0.1}, seed=0)
    state = agent.state("trend", "LOW", "HIGH")
    assert agent.epsilon == 1.0
    agent.update(state, "breakout", 1.0)
    assert agent.epsilon == pytest.approx(0.9)
    for _ in range(100):
        agent.update(state, "breakout", 1.0)
    assert agent.epsilon == pytest.approx(0.1)
    # with epsilon 0 the choice is the greedy one; an unseen state gets the configured cautious default
    greedy = MetaStrategyAgent({"epsilon": 0.0, "epsilon_min": 0.0}, seed=0)
    greedy.update(state, "breakout", 2.0)
    assert {greedy.act(state) for _ in range(50)} == {"breakout"}
    assert greedy.act(greedy.state("panic", "EXTREME", "LOW")) == "defensive"
    # with epsilon 1 every strategy gets tried
    explorer = MetaStrategyAgent({"epsilon": 1.0, "epsilon_decay": 1.0}, seed=0)
    assert {explorer.act(state) for _ in range(200)} == set(STRATEGIES)


def test_recent_performance_follows_the_win_rate():
    agent = MetaStrategyAgent({"performance_window": 10, "min_performance_trades": 5}, seed=0)
    state = agent.state("range", "LOW", "LOW")
    assert state.recent_performance == "NEUTRAL"
    for _ in range(10):
        agent.update(state, "defensive", -1.0)
    assert agent.recent_performance == "POOR"
    for _ in range(10):
        agent.update(state, "defensive", 1.0)
    assert agent.recent_performance == "GOOD"
    assert agent.state("range", "LOW", "LOW").recent_performance == "GOOD"


def test_states_are_validated():
    agent = MetaStrategyAgent(seed=0)
    with pytest.raises(ValueError, match="market_regime must be one of"):
        agent.state("sideways", "LOW", "LOW")
    with pytest.raises(ValueError, match="volatility_level must be one of"):
        agent.state("range", "low", "LOW")
    with pytest.raises(ValueError, match="strategy must be one of"):
        agent.update(agent.state("range", "LOW", "LOW"), "yolo", 1.0)


@pytest.mark.parametrize("config, message", [
    ({"alpha": 0}, "alpha: Input should be greater than 0"),
    ({"epsilon_decay": 1.5}, "epsilon_decay: Input should be less than or equal to 1"),
    ({"gamma": 1.0}, "gamma: Input should be less than 1"),
    ({"good_win_rate": 0.4, "poor_win_rate": 0.5}, "poor_win_rate .* must be below good_win_rate"),
    ({"epsilon_greedy": 0.1}, "epsilon_greedy: unknown key"),
    ({"unseen_action": "yolo"}, "unseen_action"),
])
def test_config_errors_name_the_key(config, message):
    with pytest.raises(RLConfigError, match=f"meta_strategy config: .*{message}"):
        MetaStrategyAgent(config)


def _trade(strategy="mean_reversion", pnl=2.0, **extra):
    info = {"strategy": strategy, "market_regime": "range", "volatility_level": "LOW", "liquidity_level": "HIGH",
            **extra}
    return {"event_id": "e1", "event_type": "trade.closed", "session_id": "s", "timestamp": "2024-01-01T00:00:00Z",
            "pnl_pct": pnl, "duration_hours": 2.0, "max_drawdown_pct": 1.0, "payload": {"meta_strategy": info}}


def test_experience_from_trade_closed_telemetry():
    agent = MetaStrategyAgent(seed=0)
    rewards = RewardEngine()
    exp = agent.experience(_trade(pnl=3.0, win_rate=0.7), rewards)
    assert exp.reward == pytest.approx(4.2)  # the worked example
    assert exp.state == ("range", "LOW", "HIGH", "NEUTRAL") and exp.strategy == "mean_reversion" and exp.won
    # without a win rate in the payload: the strategy's own (this trade included: 1 of 1)
    assert agent.experience(_trade(pnl=3.0), rewards).reward == 5.0
    agent.learn([exp])
    assert agent.q_values(exp.state)["mean_reversion"] == pytest.approx(0.42)
    assert agent.trades == 1 and agent.trades_since_snapshot == 1
    # other events and other agents' trades are not for it
    assert agent.experience({"event_type": "feedback.explicit", "score": 1.0}, rewards) is None
    assert agent.experience({**_trade(), "payload": {"sizing": {}}}, rewards) is None
    with pytest.raises(ValueError, match="payload.meta_strategy.market_regime must be one of"):
        agent.experience(_trade(market_regime="bull"), rewards)
    with pytest.raises(ValueError, match="no duration_hours"):
        agent.experience({**_trade(), "duration_hours": None}, rewards)


def test_next_state_is_bootstrapped_when_gamma_is_set():
    agent = MetaStrategyAgent({"gamma": 0.5, "alpha": 1.0}, seed=0)
    s1, s2 = agent.state("range", "LOW", "LOW"), agent.state("trend", "LOW", "LOW")
    agent.update(s2, "trend_follow", 2.0)
    agent.update(s1, "mean_reversion", 1.0, next_state=s2)
    assert agent.q_values(s1)["mean_reversion"] == pytest.approx(1.0 + 0.5 * 2.0)


def test_prune_keeps_the_most_recently_visited_states():
    agent = MetaStrategyAgent(seed=0)
    states = [agent.state(r, v, "LOW") for r in CLASSES for v in VOLATILITY_LEVELS]  # 16 states, in order
    for s in states:
        agent.update(s, "defensive", 0.1)
    assert agent.prune(20) == 0
    assert agent.prune(10) == 6
    assert len(agent.table) == 10 and set(agent.table.q) == set(states[6:])
    assert agent.metrics()["pruned_states"] == 6


def test_save_and_load_round_trip(tmp_path):
    agent, _ = run_planted(3, 200)
    files = agent.save(tmp_path)
    loaded = MetaStrategyAgent.load(tmp_path)
    assert files == ["agent.json"]
    assert loaded.to_payload() == agent.to_payload()
    state = agent.state("range", "HIGH", "LOW")
    assert [loaded.act(state) for _ in range(20)] == [agent.act(state) for _ in range(20)]  # same RNG stream
