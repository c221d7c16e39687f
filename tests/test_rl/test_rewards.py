"""Reward engine: the design's worked examples, clipping to [-5, 5], and the schema's validation."""

import math

import pytest
import yaml

from clm.rl import RewardEngine, RLConfigError, load_reward_schema, meta_strategy_reward, sizing_reward
from clm.rl.rewards import default_schema_path, parse_reward_schema


@pytest.fixture(scope="module")
def engine():
    return RewardEngine()


def test_meta_strategy_worked_example():
    # 3% in 2 h, 1% drawdown, 70% win rate: 3 + (24 / 2) x 0.1 - 1 x 2 + (0.7 - 0.5) x 10 = 4.2
    assert meta_strategy_reward(3.0, 2.0, 1.0, 0.7) == pytest.approx(4.2)
    # a negative drawdown counts by its size
    assert meta_strategy_reward(3.0, 2.0, -1.0, 0.7) == pytest.approx(4.2)


def test_meta_strategy_speed_term_floors_hours_at_0_1(engine):
    # 0 h and 0.05 h both count as 0.1 h: 24 / 0.1 x 0.1 = 24, clipped
    assert engine.meta_strategy(0.0, 0.0, 0.0, 0.5) == 5.0
    assert engine.meta_strategy(-20.0, 0.05, 0.0, 0.5) == pytest.approx(-20 + 24)
    # 24 h: speed bonus 0.1
    assert engine.meta_strategy(0.0, 24.0, 0.0, 0.5) == pytest.approx(0.1)


def test_sizing_worked_examples():
    # PnL% - 0.05/h - |dd| x 3 + 1.0 if take-profit - 0.5 if stop-loss
    assert sizing_reward(2.0, 4.0, 0.5, hit_tp=True) == pytest.approx(2.0 - 0.2 - 1.5 + 1.0)  # 1.3
    assert sizing_reward(-1.0, 2.0, 1.0, hit_sl=True) == pytest.approx(-1.0 - 0.1 - 3.0 - 0.5)  # -4.6
    assert sizing_reward(1.0, 10.0, 0.0) == pytest.approx(0.5)


@pytest.mark.parametrize("args, expected", [
    ((50.0, 1.0, 0.0, 1.0), 5.0),
    ((-50.0, 1.0, 10.0, 0.0), -5.0),
    ((4.0, 24.0, 0.0, 0.5), 4.1),  # just inside: not clipped
])
def test_meta_strategy_clipped(engine, args, expected):
    assert engine.meta_strategy(*args) == pytest.approx(expected)


def test_every_reward_is_clipped(engine):
    assert engine.sizing(100.0, 0.0, 0.0, True, False) == 5.0
    assert engine.sizing(-100.0, 100.0, 30.0, False, True) == -5.0
    assert engine.explicit_feedback(10.0) == 5.0
    assert engine.explicit_feedback(-10.0) == -5.0
    assert engine.roi(1e9) == 5.0
    assert engine.roi(-1e9) == -5.0
    assert engine.guardrail(["invalid_output", "invalid_output", "max_positions"]) == -5.0
    assert engine.sizing(0.0, 0.0, 0.0, guardrails=["invalid_output"] * 4) == -5.0
    assert engine.feedback_event({"event_type": "feedback.explicit", "score": 1.0, "trade_roi": 40.0}) == 5.0


def test_clip_bound_comes_from_the_schema():
    small = RewardEngine({"clip": 1.0})
    assert small.meta_strategy(3.0, 2.0, 1.0, 0.7) == 1.0
    assert small.sizing(-3.0, 0.0, 0.0) == -1.0


def test_feedback_rewards(engine):
    assert engine.explicit_feedback(1.0) == pytest.approx(2.0)
    assert engine.roi(1.5) == pytest.approx(1.5)
    assert engine.latency(50.0) == pytest.approx(0.5)  # full bonus
    assert engine.latency(550.0) == pytest.approx(0.25)  # half way to slow_ms
    assert engine.latency(1000.0) == pytest.approx(0.0)
    assert engine.latency(1500.0) == pytest.approx(-0.25)
    assert engine.latency(1e6) == pytest.approx(-0.5)
    assert engine.guardrail(["risk_clamped"]) == pytest.approx(-0.5)
    event = {"event_type": "conversation.response", "latency_ms": 50.0, "payload": {"guardrails": ["risk_clamped"]}}
    assert engine.feedback_event(event) == pytest.approx(0.0)
    assert engine.feedback_event({"event_type": "prediction.logged"}) is None


@pytest.mark.parametrize("call, message", [
    (lambda e: e.meta_strategy(float("nan"), 1.0, 0.0, 0.5), "pnl_pct must be a finite number"),
    (lambda e: e.meta_strategy(1.0, -1.0, 0.0, 0.5), "hours must be >= 0"),
    (lambda e: e.meta_strategy(1.0, 1.0, 0.0, 1.5), "win_rate must be in [0, 1]"),
    (lambda e: e.sizing(1.0, 1.0, "2"), "max_drawdown_pct must be a finite number"),
    (lambda e: e.guardrail(["made_up"]), "unknown guardrail 'made_up'"),
    (lambda e: e.latency(-1.0), "latency_ms must be >= 0"),
])
def test_bad_inputs_are_refused(engine, call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(engine)


def test_packaged_schema_is_found_and_valid():
    path = default_schema_path()
    assert path.name == "reward_schema.yaml" and path.is_file()
    schema = load_reward_schema()
    assert schema.clip == 5.0
    assert schema.meta_strategy.win_rate_weight == 10.0
    # the file spells out exactly the defaults of the model
    assert parse_reward_schema({}) == schema


@pytest.mark.parametrize("text, message", [
    ("clip: 5\nbonus: 1\n", "bonus: unknown key"),
    ("sizing:\n  hourly_costs: 0.1\n", "sizing.hourly_costs: unknown key"),
    ("clip: -1\n", "clip: Input should be greater than 0"),
    ("latency:\n  fast_ms: 500\n  slow_ms: 100\n", "latency: slow_ms must be greater than fast_ms"),
    ("guardrail_penalties:\n  risk_clamped: .nan\n", "guardrail_penalties.risk_clamped"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("meta_strategy: [1\n", "not valid YAML"),
])
def test_schema_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "reward_schema.yaml"
    path.write_text(text)
    with pytest.raises(RLConfigError, match=message) as info:
        load_reward_schema(path)
    assert str(path) in str(info.value)


def test_edited_schema_changes_the_weights(tmp_path):
    data = yaml.safe_load(default_schema_path().read_text())
    data["meta_strategy"]["win_rate_weight"] = 0.0
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(data))
    engine = RewardEngine(load_reward_schema(path))
    assert engine.meta_strategy(3.0, 2.0, 1.0, 0.7) == pytest.approx(2.2)
    assert math.isclose(RewardEngine(data).meta_strategy(3.0, 2.0, 1.0, 0.7), 2.2)
