"""Position sizers and the safety clamp: the risk mode is never exceeded; the DQN is seeded and syncs its target."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm.policy import Policy, RiskMode, parse_policy
from clm.regimes.config import CLASSES, VOLATILITY_LEVELS
from clm.rl import (
    DQN_FEATURES,
    QTABLE_ACTIONS,
    DQNSizer,
    QTableSizer,
    RawSizing,
    RewardEngine,
    RLConfigError,
    SafetyClamp,
    SizingContext,
    make_sizer,
)
from clm.rl.sizing import dqn_features, parameters_equal

BALANCED = Policy().risk_modes.current  # 1% per trade, leverage 3, 5 positions


def _assert_within(decision, mode: RiskMode, context: SizingContext):
    assert math.isfinite(decision.risk_pct) and 0.0 <= decision.risk_pct <= mode.max_risk_pct_per_trade
    assert math.isfinite(decision.leverage) and 1.0 <= decision.leverage <= mode.max_leverage
    if context.remaining_daily_risk_pct is not None:
        assert decision.risk_pct <= context.remaining_daily_risk_pct
    if decision.open:
        assert decision.risk_pct > 0
        assert decision.positions_after == context.open_positions + 1 <= mode.max_positions
    else:
        assert decision.risk_pct == 0.0 and decision.positions_after == context.open_positions


modes = st.builds(RiskMode, max_risk_pct_per_trade=st.floats(0.01, 100), max_leverage=st.floats(1, 125),
                  max_positions=st.integers(1, 10_000))
contexts = st.builds(SizingContext, open_positions=st.integers(0, 12_000),
                     remaining_daily_risk_pct=st.none() | st.floats(0, 1e6))
anything = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 0.3, 1.5, 10.0, 1e308])


@settings(max_examples=1_000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(mode=modes, context=contexts, multiplier=anything, leverage=anything,
       base=st.floats(0.01, 50), take_profit=st.sampled_from(["balanced", "aggressive", "moon"]),
       stop_loss=st.sampled_from(["tight", "wide", ""]))
def test_clamp_never_exceeds_the_risk_mode_whatever_the_agent_says(mode, context, multiplier, leverage, base,
                                                                   take_profit, stop_loss):
    decision = SafetyClamp(mode, base_risk_pct=base).apply(
        RawSizing(multiplier, leverage, take_profit, stop_loss), context)
    _assert_within(decision, mode, context)
    if not (math.isfinite(multiplier) and multiplier >= 0 and math.isfinite(leverage) and leverage >= 1):
        assert "invalid_output" in decision.guardrails


def _random_features(rng: np.random.Generator) -> dict:
    """Features over (and beyond) their ranges, as both sizers read them."""
    return {
        "market_regime": CLASSES[rng.integers(4)], "volatility_level": VOLATILITY_LEVELS[rng.integers(4)],
        "trend_strength": rng.uniform(-3, 3), "volatility_regime": int(rng.integers(4)),
        "momentum_score": rng.uniform(-3, 3), "signal_confidence": rng.uniform(0, 1),
        "entry_quality": rng.uniform(0, 1), "risk_reward_ratio": rng.uniform(0, 10),
        "current_exposure_pct": rng.uniform(0, 300), "win_rate_recent": rng.uniform(0, 1),
        "drawdown_pct": rng.uniform(0, 80), "max_position_pct": rng.uniform(0, 100),
        "remaining_daily_risk": rng.uniform(0, 10),
    }


@pytest.fixture(scope="module")
def wild_qtable():
    """A Q-table sizer whose every state prefers an arbitrary action (10x leverage and 1.5x size included)."""
    rng = np.random.default_rng(0)
    sizer = QTableSizer({"epsilon": 0.3, "epsilon_decay": 1.0}, clamp=SafetyClamp(BALANCED), seed=1)
    for _ in range(3000):
        sizer.update(_random_features(rng), int(rng.integers(len(QTABLE_ACTIONS))), float(rng.normal(0, 3)))
    return sizer


@pytest.fixture(scope="module")
def wild_dqn():
    sizer = DQNSizer({"epsilon": 0.3, "epsilon_decay": 1.0, "fine_tune_range": 0.9}, clamp=SafetyClamp(BALANCED),
                     seed=1)
    with torch.no_grad():  # a head saturated at +1: the fine-tune always pushes the size up
        sizer.policy[2].bias.fill_(10.0)
    return sizer


SPECIAL = np.array([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e308, 5e-324, 125.0, 1e6])
PER_EXAMPLE = 20  # 500 examples x 20 = 10,000 random states (and as many raw outputs)


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(mode=modes, base=st.floats(0.01, 50), max_open=st.integers(0, 12_000), seed=st.integers(0, 2**32 - 1))
def test_10000_random_states_and_agent_outputs_never_exceed_the_risk_mode(wild_qtable, wild_dqn, mode, base,
                                                                          max_open, seed):
    """Hypothesis picks the risk mode and a seed; each example then checks 20 random states through both
    sizers and 20 random raw outputs (NaN, infinities, negatives, huge values included) through the clamp."""
    rng = np.random.default_rng(seed)
    clamp = SafetyClamp(mode, base_risk_pct=base)
    for _ in range(PER_EXAMPLE):
        budget = None if rng.random() < 0.5 else float(rng.choice([0.0, rng.uniform(0, 5), rng.uniform(0, 1e4)]))
        context = SizingContext(open_positions=int(rng.integers(0, max_open + 1)), remaining_daily_risk_pct=budget)
        features = _random_features(rng)
        for sizer in (wild_qtable, wild_dqn):
            sizer.clamp = clamp
            _assert_within(sizer.decide(features, context), mode, context)
        raw = [float(rng.choice(SPECIAL)) if rng.random() < 0.3 else float(rng.lognormal(0, 2)) for _ in range(2)]
        _assert_within(clamp.apply(RawSizing(*raw), context), mode, context)


def test_clamp_cuts_and_names_what_it_cut():
    clamp = SafetyClamp(BALANCED, base_risk_pct=1.0)
    d = clamp.apply(RawSizing(1.5, 10.0, "aggressive", "wide"), SizingContext(open_positions=2))
    assert (d.open, d.risk_pct, d.leverage, d.size_multiplier) == (True, 1.0, 3.0, 1.0)
    assert d.guardrails == ("leverage_clamped", "risk_clamped")
    d = clamp.apply(RawSizing(0.5, 2.0), SizingContext(open_positions=2, remaining_daily_risk_pct=0.2))
    assert (d.risk_pct, d.guardrails) == (0.2, ("daily_risk_exhausted",))
    d = clamp.apply(RawSizing(0.5, 2.0), SizingContext(open_positions=5))
    assert (d.open, d.risk_pct, d.positions_after, d.guardrails) == (False, 0.0, 5, ("max_positions",))
    d = clamp.apply(RawSizing(float("nan"), 2.0), SizingContext())
    assert (d.open, d.guardrails) == (False, ("invalid_output",))
    d = clamp.apply(RawSizing(0.7, 1.0, "balanced", "medium"), SizingContext())
    assert (d.open, d.risk_pct, d.guardrails) == (True, 0.7, ())
    # the guardrail names are the reward schema's penalties
    assert RewardEngine().guardrail(["leverage_clamped", "risk_clamped"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="open_positions must be an integer >= 0"):
        SizingContext(open_positions=-1)
    with pytest.raises(ValueError, match="base_risk_pct"):
        SafetyClamp(BALANCED, base_risk_pct=0)


def test_clamp_follows_the_active_risk_mode_of_the_policy():
    policy = parse_policy({"risk_modes": {"active": "conservative"}})
    sizer = make_sizer({"agent": "qtable", "base_risk_pct": 1.0}, risk_mode=policy.risk_modes.current)
    for action, (multiplier, leverage, _, _) in enumerate(QTABLE_ACTIONS):
        d = sizer.clamp.apply(RawSizing(multiplier, leverage), SizingContext(open_positions=2))
        assert d.risk_pct <= 0.5 and d.leverage <= 2.0
        assert sizer.clamp.apply(RawSizing(multiplier, leverage), SizingContext(open_positions=3)).open is False


def test_make_sizer_selects_the_agent_by_config():
    assert isinstance(make_sizer({"agent": "qtable"}, risk_mode=BALANCED), QTableSizer)
    dqn = make_sizer({"agent": "dqn", "base_risk_pct": 0.5, "dqn": {"target_sync_steps": 10}}, risk_mode=BALANCED)
    assert isinstance(dqn, DQNSizer) and dqn.config.target_sync_steps == 10 and dqn.clamp.base_risk_pct == 0.5
    with pytest.raises(RLConfigError, match="sizing config: agent: Input should be 'qtable' or 'dqn'"):
        make_sizer({"agent": "ppo"}, risk_mode=BALANCED)
    with pytest.raises(RLConfigError, match="dqn.replay_size: unknown key"):
        make_sizer({"dqn": {"replay_size": 5}}, risk_mode=BALANCED)
    with pytest.raises(RLConfigError, match="qtable.confidence_edges: .*strictly increasing"):
        make_sizer({"qtable": {"confidence_edges": [0.7, 0.6]}}, risk_mode=BALANCED)
    with pytest.raises(RLConfigError, match="batch_size .* exceeds replay_capacity"):
        DQNSizer({"batch_size": 128, "replay_capacity": 100, "min_replay": 10}, clamp=SafetyClamp(BALANCED))


def test_qtable_sizer_state_and_learning():
    sizer = QTableSizer({"epsilon": 0.0, "epsilon_min": 0.0, "alpha": 0.5}, clamp=SafetyClamp(BALANCED), seed=0)
    features = {"market_regime": "trend", "signal_confidence": 0.9, "current_exposure_pct": 30.0,
                "win_rate_recent": 0.6, "volatility_level": "HIGH"}
    assert sizer.state(features) == ("trend", 4, 2, 2, "HIGH")
    assert sizer.decide(features).action == 0  # unseen state: the most cautious action
    sizer.update(features, 100, 2.0)
    decision = sizer.decide(features)
    assert decision.action == 100 and decision.raw == RawSizing(*QTABLE_ACTIONS[100])
    with pytest.raises(ValueError, match="'signal_confidence' must be a finite number"):
        sizer.decide({**features, "signal_confidence": float("nan")})
    with pytest.raises(ValueError, match="'volatility_level' must be one of"):
        sizer.decide({**features, "volatility_level": 2})


def _dqn_run(seed: int, steps: int, **config) -> DQNSizer:
    """A seeded DQN trained on a synthetic reward: sizing up pays when the signal is confident."""
    sizer = DQNSizer({"min_replay": 32, "batch_size": 32, **config}, clamp=SafetyClamp(BALANCED), seed=seed)
    rng = np.random.default_rng(seed + 99)
    for _ in range(steps):
        features = _random_features(rng)
        decision = sizer.decide(features, SizingContext())
        edge = features["signal_confidence"] - 0.6
        reward = float(np.clip(rng.normal(edge * 4, 0.5) * decision.size_multiplier, -5, 5))
        sizer.remember(features, decision.action, reward, fine_tune=decision.fine_tune,
                       next_features=_random_features(rng))
        sizer.train_step()
    return sizer


def test_dqn_architecture():
    sizer = DQNSizer(clamp=SafetyClamp(BALANCED), seed=0)
    shapes = [tuple(p.shape) for p in sizer.q_net.parameters()]
    assert shapes == [(64, 11), (64,), (32, 64), (32,), (6, 32), (6,)]
    assert [tuple(p.shape) for p in sizer.policy.parameters()] == [(64, 11), (64,), (1, 64), (1,)]
    assert sizer.replay.capacity == 10_000 and sizer.config.target_sync_steps == 100
    assert len(DQN_FEATURES) == 11 and dqn_features(_random_features(np.random.default_rng(0))).shape == (11,)
    assert parameters_equal(sizer.q_net, sizer.target_net)


def test_dqn_target_network_syncs_every_100_steps():
    sizer = DQNSizer({"min_replay": 16, "batch_size": 16}, clamp=SafetyClamp(BALANCED), seed=3)
    rng = np.random.default_rng(0)
    for _ in range(64):
        sizer.remember(_random_features(rng), int(rng.integers(6)), float(rng.normal()),
                       next_features=_random_features(rng))
    synced_at = []
    for _ in range(250):
        target_before = {k: v.clone() for k, v in sizer.target_net.state_dict().items()}
        sizer.train_step()
        same = parameters_equal(sizer.q_net, sizer.target_net)
        moved = any(not torch.equal(v, sizer.target_net.state_dict()[k]) for k, v in target_before.items())
        if moved:
            assert same  # the target only ever changes by becoming a copy of the online network
            synced_at.append(sizer.steps)
        else:
            assert not same  # in between, the online network has moved on
    assert synced_at == [100, 200]
    assert sizer.target_syncs == 2


def test_dqn_seeded_training_is_reproducible_on_cpu():
    a = _dqn_run(11, 140)
    b = _dqn_run(11, 140)
    assert a.steps == b.steps > 100 and a.target_syncs == 1  # past a target sync
    for name in ("q_net", "target_net", "policy"):
        assert parameters_equal(getattr(a, name), getattr(b, name)), name
    assert a.last_loss == b.last_loss
    fresh = DQNSizer(clamp=SafetyClamp(BALANCED), seed=11)
    assert not parameters_equal(a.q_net, fresh.q_net)  # it did train
    assert parameters_equal(fresh.q_net, DQNSizer(clamp=SafetyClamp(BALANCED), seed=11).q_net)
    assert not parameters_equal(fresh.q_net, DQNSizer(clamp=SafetyClamp(BALANCED), seed=12).q_net)
    # building a sizer does not disturb the global torch RNG
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    DQNSizer(clamp=SafetyClamp(BALANCED), seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_dqn_learns_to_size_by_confidence():
    sizer = _dqn_run(0, 400, epsilon_decay=0.99, learning_rate=3e-3)
    confident = {**_random_features(np.random.default_rng(1)), "signal_confidence": 0.98}
    doubtful = {**confident, "signal_confidence": 0.1}
    q_hi, q_lo = sizer.q_values(confident), sizer.q_values(doubtful)
    assert q_hi.argmax() >= 3  # STANDARD or more when confident
    assert q_lo.argmax() <= 1  # SKIP or MICRO when not


def test_importing_clm_rl_does_not_import_torch():
    code = "import sys, clm.rl; assert 'torch' not in sys.modules and 'dagster' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
