"""Versioned snapshots, working copies and idempotent resets, all recorded in rl_versions."""

import json

import numpy as np
import pytest

from clm.models.artifacts import ArtifactError, read_manifest
from clm.policy import Policy, RLMaintenance
from clm.registry import DuckDBRegistry
from clm.rl import (
    DQNSizer,
    MetaStrategyAgent,
    OnlineLearner,
    QTableSizer,
    RLStatus,
    RLStore,
    RLStoreError,
    SafetyClamp,
)
from clm.rl.sizing import parameters_equal

CLAMP = SafetyClamp(Policy().risk_modes.current)


@pytest.fixture
def registry(tmp_path):
    return DuckDBRegistry(tmp_path / "registry" / "registry.duckdb")


@pytest.fixture
def store(tmp_path, registry):
    return RLStore(tmp_path / "policies", registry)


def trade_event(i: int, rng: np.random.Generator, *, pnl_mean: float = 0.5, regime: str = "range") -> dict:
    strategy = ("mean_reversion", "trend_follow", "defensive")[i % 3]
    return {
        "event_id": f"t{i}", "event_type": "trade.closed", "session_id": "s", "timestamp": "2024-01-01T00:00:00Z",
        "pnl_pct": float(rng.normal(pnl_mean, 1.0)), "duration_hours": float(rng.uniform(1, 6)),
        "max_drawdown_pct": float(abs(rng.normal(0.3, 0.1))),
        "payload": {"meta_strategy": {"strategy": strategy, "market_regime": regime, "volatility_level": "MEDIUM",
                                      "liquidity_level": "HIGH"}},
    }


def trained_agent(trades: int = 30, seed: int = 0) -> MetaStrategyAgent:
    agent = MetaStrategyAgent({"epsilon_decay": 0.95}, seed=seed)
    rng = np.random.default_rng(seed)
    learner = OnlineLearner(agent, config={"batch_size": 10, "min_baseline": 1000})  # guardrail not armed
    learner.extend(trade_event(i, rng) for i in range(trades))
    assert agent.trades == trades
    return agent


def test_a_snapshot_every_snapshot_interval_trades(store, registry):
    agent = MetaStrategyAgent(seed=1)
    learner = OnlineLearner(agent, maintenance=RLMaintenance(snapshot_interval_trades=100), store=store,
                            config={"batch_size": 50})
    rng = np.random.default_rng(0)
    reports = learner.extend(trade_event(i, rng) for i in range(260))
    assert [r.snapshot.version if r.snapshot else None for r in reports] == ["v0001", None, "v0002", None, "v0003"]
    active = store.records("meta_strategy", RLStatus.ACTIVE)
    assert [(r.version, r.parent_version, r.metrics["trades"]) for r in active] == [
        ("v0003", "v0002", 250), ("v0002", "v0001", 150), ("v0001", None, 50)]
    assert store.current("meta_strategy").version == "v0003" == agent.version
    for record in active:
        assert record.sha256 == read_manifest(record.file_path).digest
        assert record.epsilon == pytest.approx(record.metrics["epsilon"])
    # the snapshot is the agent as it was (trades since the last snapshot: reset to 0 in the file)
    loaded = store.load("meta_strategy", prefer_working=False)
    assert loaded.version == "v0003" and loaded.trades == 250 and loaded.trades_since_snapshot == 0
    assert loaded.table.to_payload() == MetaStrategyAgent.load(active[0].file_path).table.to_payload()
    assert store.load("meta_strategy", version="v0001").trades == 50
    # 10 more trades: a working copy, no new version
    assert len(learner.buffer) == 10
    store.checkpoint(agent)
    assert store.current("meta_strategy").version == "v0003"
    assert store.load("meta_strategy").to_payload() == agent.to_payload()
    assert store.load("sizing_qtable", clamp=CLAMP) is None  # nothing stored for it


def test_regime_reset_archives_starts_fresh_and_is_idempotent(store, registry):
    agent = trained_agent(60)
    store.snapshot(agent, reason="before the shift")
    before = agent.to_payload()
    assert agent.epsilon < 0.5 and len(agent.table) > 0
    request = store.request_reset("meta_strategy", request_id="regime_20240103T104500Z",
                                  reason="market regime trend -> range", details={"from": "trend", "to": "range"})
    assert request.status == "RESET_REQUESTED" and request.request_id == "regime_20240103T104500Z"
    assert [r.request_id for r in store.pending_resets("meta_strategy")] == ["regime_20240103T104500Z"]

    (result,) = store.apply_reset_requests(agent, RLMaintenance())
    # the old table archived, as it was
    assert result.archived.status == "ARCHIVED" and result.archived.parent_version == "v0001"
    archived = MetaStrategyAgent.load(result.archived.file_path)
    assert archived.table.to_payload() == before["table"] and archived.epsilon == before["epsilon"]
    # a new version with epsilon 0.5 and a fresh table
    assert result.started.status == "ACTIVE" and result.started.parent_version == result.archived.version
    assert result.started.epsilon == 0.5 and agent.epsilon == 0.5 and len(agent.table) == 0
    assert store.current("meta_strategy").version == result.started.version == agent.version == "v0003"
    # the event recorded
    assert result.event.status == "RESET" and result.event.metrics == {
        "event": "rl.meta.reset", "request_id": "regime_20240103T104500Z", "previous_version": "v0001", "archived_version": "v0002",
        "new_version": "v0003"}
    assert store.pending_resets("meta_strategy") == []

    # the same request again does nothing: not re-requested, not re-applied, not even when forced
    rows_before = registry.rows("rl_versions")
    agent.update(agent.state("range", "LOW", "LOW"), "mean_reversion", 1.0)
    assert store.request_reset("meta_strategy", request_id="regime_20240103T104500Z", reason="again") is None
    assert store.apply_reset_requests(agent, RLMaintenance()) == []
    assert store.reset(agent, request_id="regime_20240103T104500Z", reason="again") is None
    assert registry.rows("rl_versions") == rows_before
    assert len(agent.table) == 1 and agent.version == "v0003"


def test_reset_requests_written_by_others_are_consumed_once(store, registry):
    agent = trained_agent(20)
    store.snapshot(agent)
    # as others write them: the rl_reset asset (the change in metrics), by hand (a run id), bare, and a duplicate
    change = {"from": "trend", "to": "panic", "at": "2024-01-05T00:00:00Z", "confidence": 0.8,
              "signal_file": "signals/regime/regime_20240105T000000Z.json"}
    registry.append("rl_versions", [
        {"agent": "meta_strategy", "status": "RESET_REQUESTED", "reason": "trend -> panic",
         "metrics": {"change": change, "run_id": "run-a"}},
        {"agent": "meta_strategy", "status": "RESET_REQUESTED", "reason": "by hand",
         "metrics": {"change": None, "run_id": "run-b"}},
        {"agent": "meta_strategy", "status": "RESET_REQUESTED", "reason": "bare"},
        {"agent": "meta_strategy", "status": "RESET_REQUESTED", "reason": "the same change again",
         "metrics": {"change": change, "run_id": "run-c"}},
    ])
    pending = store.pending_resets("meta_strategy")
    assert [p.request_id for p in pending] == [
        "regime-change:trend->panic@2024-01-05T00:00:00Z", "run:run-b", f"rl_versions:{pending[2].version_id}"]
    out = store.apply_reset_requests(agent, RLMaintenance())
    # one reset per call; the other requests are consumed as skipped (the table is already fresh)
    assert [getattr(o, "status", "reset") for o in out] == ["reset", "RESET_SKIPPED", "RESET_SKIPPED"]
    assert out[0].request_id == "regime-change:trend->panic@2024-01-05T00:00:00Z"
    assert store.pending_resets("meta_strategy") == []
    assert store.apply_reset_requests(agent, RLMaintenance()) == []
    assert len(store.records("meta_strategy", RLStatus.RESET)) == 1


def test_reset_requests_are_skipped_when_the_policy_says_so(store):
    agent = trained_agent(20)
    store.snapshot(agent)
    table = agent.table.to_payload()
    store.request_reset("meta_strategy", request_id="r1", reason="trend -> range")
    (skipped,) = store.apply_reset_requests(agent, RLMaintenance(reset_on_regime_change=False))
    assert skipped.status == "RESET_SKIPPED" and "reset_on_regime_change is false" in skipped.reason
    assert agent.table.to_payload() == table and agent.version == "v0001"
    assert store.pending_resets("meta_strategy") == []
    assert store.apply_reset_requests(agent, RLMaintenance()) == []  # consumed: switching it on later does nothing


def test_a_working_copy_of_an_older_version_is_ignored_after_a_reset(store, tmp_path, registry):
    agent = trained_agent(20)
    store.snapshot(agent)
    agent.update(agent.state("trend", "LOW", "LOW"), "breakout", 1.0)
    store.checkpoint(agent)
    assert store.load("meta_strategy").trades == 21
    # another process resets the agent (from the stored snapshot)
    other = store.load("meta_strategy", prefer_working=False)
    result = store.reset(other, request_id="r-9", reason="shift")
    assert store.current("meta_strategy").version == result.started.version
    loaded = store.load("meta_strategy")
    assert loaded.version == result.started.version and len(loaded.table) == 0 and loaded.epsilon == 0.5
    pointer = json.loads((tmp_path / "policies" / "meta_strategy" / "working.json").read_text())
    assert pointer["based_on"] == result.started.version
    assert len(list((tmp_path / "policies" / "meta_strategy").glob("working-*"))) == 1


def test_tampered_snapshots_are_refused(store):
    agent = trained_agent(20)
    record = store.snapshot(agent)
    path = f"{record.file_path}/agent.json"
    with open(path, "a") as fh:
        fh.write(" ")
    with pytest.raises(ArtifactError, match="agent.json' fails its sha256 check"):
        store.load("meta_strategy", prefer_working=False)
    with pytest.raises(RLStoreError, match="invalid agent name"):
        store.records("../etc")
    with pytest.raises(RLStoreError, match="needs the safety clamp"):
        sizer = QTableSizer(clamp=CLAMP)
        store.snapshot(sizer)
        store.load("sizing_qtable")


def test_sizers_round_trip_through_the_store(store):
    rng = np.random.default_rng(0)
    q = QTableSizer(clamp=CLAMP, seed=3)
    features = {"market_regime": "panic", "signal_confidence": 0.7, "current_exposure_pct": 5.0,
                "win_rate_recent": 0.5, "volatility_level": "EXTREME"}
    for _ in range(20):
        q.update(features, int(rng.integers(270)), float(rng.normal()))
    store.snapshot(q)
    loaded_q = store.load("sizing_qtable", clamp=CLAMP)
    assert loaded_q.table.to_payload() == q.table.to_payload() and loaded_q.epsilon == q.epsilon

    dqn = DQNSizer({"min_replay": 8, "batch_size": 8}, clamp=CLAMP, seed=4)
    dqn_features = {"trend_strength": 0.2, "volatility_regime": "HIGH", "momentum_score": 0.1,
                    "signal_confidence": 0.8, "entry_quality": 0.5, "risk_reward_ratio": 2.0,
                    "current_exposure_pct": 10.0, "win_rate_recent": 0.6, "drawdown_pct": 2.0,
                    "max_position_pct": 20.0, "remaining_daily_risk": 2.0}
    for _ in range(30):
        dqn.remember(dqn_features, int(rng.integers(6)), float(rng.normal()), fine_tune=0.3)
        dqn.train_step()
    record = store.snapshot(dqn)
    assert sorted(read_manifest(record.file_path).files) == ["agent.json", "replay.npz", "weights.pt"]
    loaded = store.load("sizing_dqn", clamp=CLAMP)
    for name in ("q_net", "target_net", "policy"):
        assert parameters_equal(getattr(loaded, name), getattr(dqn, name))
    assert len(loaded.replay) == 30 and loaded.steps == dqn.steps == 23
    np.testing.assert_array_equal(loaded.replay.states[:30], dqn.replay.states[:30])
    # training continues identically from the snapshot
    for sizer in (loaded, dqn):
        for _ in range(5):
            sizer.train_step()
    assert parameters_equal(loaded.q_net, dqn.q_net) and parameters_equal(loaded.policy, dqn.policy)
    # a swapped weights file is caught by the manifest before torch reads it
    with open(f"{record.file_path}/weights.pt", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ArtifactError, match="weights.pt' fails its sha256 check"):
        store.load("sizing_dqn", clamp=CLAMP, prefer_working=False)


def test_a_regime_change_resets_the_meta_agent_and_the_dqn_sizer_when_that_is_the_one_stored(store, registry):
    from clm.automation.rl import reset_rl_agents

    assert store.active_sizer() == "sizing_qtable"  # nothing stored: the Q-table sizer
    store.snapshot(QTableSizer(clamp=CLAMP))
    dqn = DQNSizer({"min_replay": 8, "batch_size": 8, "epsilon_decay": 0.9}, clamp=CLAMP, seed=4)
    features = {"trend_strength": 0.2, "volatility_regime": "HIGH", "momentum_score": 0.1,
                "signal_confidence": 0.8, "entry_quality": 0.5, "risk_reward_ratio": 2.0,
                "current_exposure_pct": 10.0, "win_rate_recent": 0.6, "drawdown_pct": 2.0,
                "max_position_pct": 20.0, "remaining_daily_risk": 2.0}
    rng = np.random.default_rng(0)
    for _ in range(20):
        dqn.remember(features, int(rng.integers(6)), float(rng.normal()))
        dqn.train_step()
        dqn.epsilon *= 0.9
    store.snapshot(dqn)
    assert store.active_sizer() == "sizing_dqn" and store.active_sizer("qtable") == "sizing_qtable"
    with pytest.raises(RLStoreError, match="unknown sizer 'ppo'"):
        store.active_sizer("ppo")

    change = {"from": "trend", "to": "panic", "at": "2024-01-05T00:00:00Z"}
    done = reset_rl_agents(store, Policy(), reason="trend -> panic", change=change, run_id="run-1")
    assert [d.agent for d in done] == ["meta_strategy", "sizing_dqn"]
    meta, sizer = (d.reset for d in done)
    assert meta.event.metrics["event"] == "rl.meta.reset" and sizer.event.metrics["event"] == "rl.sizing.reset"
    archived = store.load("sizing_dqn", version=sizer.archived.version, clamp=CLAMP)
    assert parameters_equal(archived.q_net, dqn.q_net) and len(archived.replay) == 20
    current = store.load("sizing_dqn", clamp=CLAMP)
    assert sizer.started.epsilon == 0.5 == current.epsilon and len(current.replay) == 0
    assert not parameters_equal(current.q_net, dqn.q_net)
    assert store.records("sizing_qtable", RLStatus.RESET) == []  # only the sizer in use
    # the same change again (another run): no new request, no second reset
    rows = registry.rows("rl_versions")
    again = reset_rl_agents(store, Policy(), reason="trend -> panic", change=change, run_id="run-2")
    assert [(d.new_request, d.applied) for d in again] == [(False, []), (False, [])]
    assert registry.rows("rl_versions") == rows
