"""The online path: buffered rewards, batch updates, and the KL guardrail that skips drifted batches."""

import json
import logging

import numpy as np
import pytest

from clm.policy import Policy, RLMaintenance
from clm.registry import DuckDBRegistry
from clm.rl import (
    MetaStrategyAgent,
    OnlineLearner,
    QTableSizer,
    RawSizing,
    RLConfigError,
    RLStore,
    SafetyClamp,
    SizingContext,
    reward_kl,
)

STRATEGIES3 = ("mean_reversion", "trend_follow", "defensive")


def trade(i: int, rng: np.random.Generator, pnl_mean: float) -> dict:
    return {
        "event_id": f"t{i}", "event_type": "trade.closed", "session_id": "s", "timestamp": "2024-01-01T00:00:00Z",
        "pnl_pct": float(rng.normal(pnl_mean, 1.0)), "duration_hours": float(rng.uniform(1, 6)),
        "max_drawdown_pct": float(abs(rng.normal(0.3, 0.1))),
        "payload": {"meta_strategy": {"strategy": STRATEGIES3[i % 3], "market_regime": "range",
                                      "volatility_level": "MEDIUM", "liquidity_level": "HIGH", "win_rate": 0.5}},
    }


def stream(n: int, pnl_mean: float, seed: int, start: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [trade(start + i, rng, pnl_mean) for i in range(n)]


def test_reward_kl():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 1000)
    assert reward_kl(rng.normal(0, 1, 200), base) < 0.1
    assert reward_kl(rng.normal(3, 1, 200), base) > 1.0
    assert reward_kl(np.full(50, -5.0), base) > 1.0  # a point mass at the clip bound
    with pytest.raises(ValueError, match="rewards on both sides"):
        reward_kl([], base)


def test_shifted_reward_stream_skips_the_update_with_a_logged_reason(tmp_path, caplog):
    agent = MetaStrategyAgent(seed=0)
    store = RLStore(tmp_path / "policies", DuckDBRegistry(tmp_path / "registry.duckdb"))
    learner = OnlineLearner(agent, maintenance=RLMaintenance(drift_kl_threshold=0.5), store=store,
                            config={"batch_size": 50, "min_baseline": 200})
    reports = learner.extend(stream(300, 0.5, seed=1))
    assert [r.skipped for r in reports] == [False] * 6
    assert [r.kl is None for r in reports] == [True] * 4 + [False] * 2  # checked once the baseline has 200
    assert all(r.kl < 0.5 for r in reports[4:])
    trades, table = agent.trades, agent.table.to_payload()

    # the market turns: every trade loses ~4%
    for event in stream(60, -4.0, seed=2, start=300):
        learner.add(event)
    with caplog.at_level(logging.WARNING, logger="clm.rl.online"):
        report = learner.process()
    assert report.skipped and report.kl > 0.5 and report.learned == 0
    assert "reward distribution drifted: KL(recent || baseline)" in report.reason
    assert "drift_kl_threshold 0.5" in report.reason and "update skipped and buffer cleared" in report.reason
    assert any(report.reason in rec.getMessage() and rec.levelno == logging.WARNING for rec in caplog.records)
    # nothing learnt, the whole buffer cleared (the 10 events beyond the batch went with it), skip recorded
    assert agent.trades == trades and agent.table.to_payload() == table
    assert len(learner.buffer) == 0
    (row,) = store.records("meta_strategy", "UPDATE_SKIPPED")
    assert row.reason == report.reason and row.metrics["kl"] == pytest.approx(report.kl)
    assert row.metrics["dropped"] == 60 and row.metrics["events"] == 50

    # the old world comes back: learning resumes
    (back,) = learner.extend(stream(50, 0.5, seed=3, start=400))
    assert not back.skipped and agent.trades == trades + 50


def test_same_distribution_is_not_skipped():
    learner = OnlineLearner(MetaStrategyAgent(seed=0), config={"batch_size": 50, "min_baseline": 200})
    reports = learner.extend(stream(2000, 0.5, seed=4))
    assert len(reports) == 40 and not any(r.skipped for r in reports)
    assert max(r.kl for r in reports if r.kl is not None) < 0.3


def test_a_lasting_shift_becomes_the_new_baseline():
    learner = OnlineLearner(MetaStrategyAgent(seed=0), config={"batch_size": 50, "min_baseline": 200,
                                                                "rebaseline_after_skips": 3})
    learner.extend(stream(250, 0.5, seed=5))
    reports = learner.extend(stream(250, -4.0, seed=6, start=1000))
    assert [r.skipped for r in reports] == [True, True, True, False, False]
    assert [r.rebaselined for r in reports] == [False, False, True, False, False]
    assert learner.agent.trades == 250 + 100


def test_malformed_events_are_rejected_not_raised(caplog):
    agent = MetaStrategyAgent(seed=0)
    learner = OnlineLearner(agent, config={"batch_size": 10, "min_baseline": 10, "baseline_window": 100})
    good = stream(3, 0.5, seed=7)
    bad = {**good[0], "event_id": "bad", "payload": {"meta_strategy": {**good[0]["payload"]["meta_strategy"],
                                                                        "strategy": "yolo"}}}
    with caplog.at_level(logging.WARNING, logger="clm.rl.online"):
        assert learner.add(bad) is False
    assert learner.add({"event_type": "feedback.explicit", "score": 1.0}) is False
    assert learner.add(good[1]) is True
    assert (learner.stats.rejected, learner.stats.ignored, learner.stats.added) == (1, 1, 1)
    assert "strategy must be one of" in learner.stats.rejections[0] and "'bad'" in learner.stats.rejections[0]
    assert "telemetry event rejected" in caplog.text


def test_sizer_learns_from_trade_closed_telemetry_and_pays_for_guardrails():
    mode = Policy().risk_modes.current
    sizer = QTableSizer({"alpha": 1.0}, clamp=SafetyClamp(mode), seed=0)
    features = {"market_regime": "trend", "signal_confidence": 0.8, "current_exposure_pct": 5.0,
                "win_rate_recent": 0.5, "volatility_level": "LOW"}
    decision = sizer.clamp.apply(RawSizing(1.5, 10.0), SizingContext(), agent="sizing_qtable", action=269)
    assert decision.guardrails == ("leverage_clamped", "risk_clamped")
    event = {"event_id": "x", "event_type": "trade.closed", "session_id": "s", "timestamp": "2024-01-01T00:00:00Z",
             "pnl_pct": 2.0, "duration_hours": 4.0, "max_drawdown_pct": 0.5, "hit_tp": True,
             "payload": {"sizing": decision.telemetry(features)}}
    learner = OnlineLearner(sizer, config={"batch_size": 1, "min_baseline": 10, "baseline_window": 100})
    (report,) = learner.extend([event])
    # 2 - 0.2 - 1.5 + 1 = 1.3, minus 0.5 + 0.5 for the two guardrails the clamp applied
    assert report.mean_reward == pytest.approx(0.3)
    assert sizer.table.values(sizer.state(features))[269] == pytest.approx(0.3)
    # a DQN sizer's event is not for the Q-table sizer
    other = {**event, "payload": {"sizing": {**decision.telemetry(features), "agent": "sizing_dqn"}}}
    assert learner.add(other) is False


def test_online_config_is_validated():
    with pytest.raises(RLConfigError, match="online learner config: min_baseline .* exceeds baseline_window"):
        OnlineLearner(MetaStrategyAgent(), config={"min_baseline": 500, "baseline_window": 100})
    with pytest.raises(RLConfigError, match="kl_bin: unknown key"):
        OnlineLearner(MetaStrategyAgent(), config={"kl_bin": 5})


def test_table_rows_with_json_payloads_and_resets_through_the_learner(tmp_path):
    """Rows of the feedback_events table carry the payload as JSON text; a reset request restarts the baseline."""
    agent = MetaStrategyAgent({"epsilon_decay": 0.9}, seed=0)
    store = RLStore(tmp_path / "policies", DuckDBRegistry(tmp_path / "registry.duckdb"))
    learner = OnlineLearner(agent, store=store, config={"batch_size": 50, "min_baseline": 100})
    rows = [{**e, "payload": json.dumps(e["payload"], sort_keys=True)} for e in stream(250, 0.5, seed=8)]
    assert len(learner.extend(rows)) == 5 and agent.trades == 250 and len(learner.baseline) == 250
    assert store.current("meta_strategy").version == "v0003"  # first version at 50 trades, then every 100
    store.request_reset("meta_strategy", request_id="regime_20240201T000000Z", reason="range -> trend")
    (result,) = learner.apply_resets()
    assert result.request_id == "regime_20240201T000000Z" and agent.epsilon == 0.5
    assert len(learner.baseline) == 0 and agent.version == result.started.version
    assert learner.apply_resets() == []
    with pytest.raises(ValueError, match="needs a store"):
        OnlineLearner(agent).apply_resets()


def rows_of(events: list[dict], file: str = "events_20240101.jsonl", first_line: int = 1) -> list[dict]:
    """Events as feedback_events rows: payload as JSON text, the place in the telemetry file."""
    return [{**e, "payload": json.dumps(e["payload"]), "source_file": file, "source_line": first_line + i}
            for i, e in enumerate(events)]


def test_the_cursor_marks_what_was_consumed_and_a_restored_learner_reads_nothing_twice():
    agent = MetaStrategyAgent(seed=0)
    config = {"batch_size": 50, "min_baseline": 100}
    learner = OnlineLearner(agent, config=config)
    other = {"event_id": "x", "event_type": "trade.closed", "pnl_pct": 1.0, "payload": "{}",
             "source_file": "events_20240101.jsonl", "source_line": 1}  # for no agent of this learner
    rows = [other, *rows_of(stream(120, 0.5, seed=9), first_line=2)]
    assert len(learner.extend(rows)) == 2
    # 100 learnt (and the row before them), 20 wait in the buffer: not consumed
    assert learner.cursor == {"events_20240101.jsonl": 101} and len(learner.buffer) == 20
    state = learner.save_state()
    assert agent.online_state == state and len(state["baseline"]) == 100
    # a learner on the same agent (as loaded from the store) reads only what was not consumed
    again = OnlineLearner(agent, config=config)
    assert list(again.baseline) == list(learner.baseline)
    assert again.extend(rows) == [] and again.stats.already_seen == 101 and len(again.buffer) == 20
    assert again.add(rows[-1]) is False and again.stats.already_seen == 102  # the same row twice in one run
    (report,) = again.extend(rows_of(stream(30, 0.5, seed=10, start=200), first_line=122))
    assert not report.skipped and report.kl is not None and agent.trades == 150
    assert again.cursor == {"events_20240101.jsonl": 151} and not again.buffer
    with pytest.raises(ValueError, match="line order: events_20240101.jsonl line 160 after line 170"):
        again.extend(rows_of(stream(1, 0.5, seed=11), first_line=170) + rows_of(stream(1, 0.5, seed=11), first_line=160))
    with pytest.raises(ValueError, match="cursor must map file names to line numbers"):
        OnlineLearner(MetaStrategyAgent()).restore({"cursor": {"f": "1"}})


def test_a_skip_consumes_the_batch_and_a_reset_keeps_the_cursor(tmp_path):
    agent = MetaStrategyAgent(seed=0)
    store = RLStore(tmp_path / "policies", DuckDBRegistry(tmp_path / "registry.duckdb"))
    learner = OnlineLearner(agent, maintenance=RLMaintenance(snapshot_interval_trades=1000), store=store,
                            config={"batch_size": 50, "min_baseline": 200})
    learner.extend(rows_of(stream(250, 0.5, seed=12)))
    (skip,) = learner.extend(rows_of(stream(50, -4.0, seed=13), first_line=251))
    assert skip.skipped and learner.cursor == {"events_20240101.jsonl": 300} and agent.trades == 250
    learner.save_state()
    store.checkpoint(agent)
    # the store keeps the online state beside the agent's files
    loaded = store.load("meta_strategy")
    assert loaded.online_state == agent.online_state and len(loaded.online_state["baseline"]) == 250
    store.request_reset("meta_strategy", request_id="r1", reason="range -> trend")
    (result,) = store.apply_reset_requests(loaded, RLMaintenance())
    # archived with what it had read and its baseline; the new version keeps the cursor and starts a new baseline
    assert store.load("meta_strategy", version=result.archived.version).online_state == agent.online_state
    assert store.load("meta_strategy").online_state == {"cursor": {"events_20240101.jsonl": 300}}
    fresh = OnlineLearner(store.load("meta_strategy"), config={"batch_size": 50, "min_baseline": 200})
    assert len(fresh.baseline) == 0 and fresh.seen(("events_20240101.jsonl", 300))
