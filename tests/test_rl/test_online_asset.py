"""rl_online_update: trade.closed telemetry -> feedback_events -> the meta-strategy agent and the sizer, batch by
batch behind the KL guardrail, each row learnt once, snapshots every snapshot_interval_trades trades."""

import datetime as dt
import logging

import dagster as dg
import numpy as np
import pytest

from assets.rl import rl_online_update
from assets.telemetry import feedback_events
from clm.automation.rl import request_rl_reset
from clm.lake import Lake
from clm.policy import Policy, RLMaintenance, policy_yaml
from clm.registry import open_registry
from clm.rl import RLStore, SafetyClamp
from clm.telemetry import emit_training_event
from resources import LakeResource, RegistryResource

META, SIZER = "meta_strategy", "sizing_qtable"
AGENTS = (META, SIZER)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
CLAMP = SafetyClamp(Policy().risk_modes.current)


@pytest.fixture
def lake(lake_root, tmp_path, monkeypatch):
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml(Policy(rl_maintenance=RLMaintenance(snapshot_interval_trades=100,
                                                                    drift_kl_threshold=0.5))))
    monkeypatch.setenv("CLM_POLICY", str(path))
    return Lake(lake_root)


def emit_trades(lake: Lake, n: int, *, pnl_mean: float, seed: int, start: int = 0, day: int = 0) -> None:
    """``n`` closed trades, each for the meta-strategy agent and the Q-table sizer, on day ``day``."""
    rng = np.random.default_rng(seed)
    for i in range(start, start + n):
        features = {"market_regime": "range", "signal_confidence": float(rng.uniform(0.5, 0.9)),
                    "current_exposure_pct": 5.0, "win_rate_recent": 0.5, "volatility_level": "MEDIUM"}
        emit_training_event(
            "trade.closed", session_id="s", lake=lake, event_id=f"t{i}",
            timestamp=T0 + dt.timedelta(days=day, seconds=i), pnl_pct=float(rng.normal(pnl_mean, 1.0)),
            duration_hours=float(rng.uniform(1, 6)), max_drawdown_pct=float(abs(rng.normal(0.3, 0.1))),
            payload={"meta_strategy": {"strategy": ("mean_reversion", "trend_follow", "defensive")[i % 3],
                                       "market_regime": "range", "volatility_level": "MEDIUM",
                                       "liquidity_level": "HIGH", "win_rate": 0.5},
                     "sizing": {"agent": SIZER, "action": int(rng.integers(270)), "features": features,
                                "guardrails": [], "fine_tune": 0.0}})
    # a row for no agent: read past, never learnt
    emit_training_event("feedback.explicit", session_id="s", lake=lake, event_id=f"f{start}", score=1.0,
                        timestamp=T0 + dt.timedelta(days=day, seconds=start))


def materialize(lake: Lake, instance: dg.DagsterInstance) -> tuple[dict, list[str]]:
    """Ingest the telemetry and run the online update; returns its metadata and its log lines."""
    root = LakeResource(root=str(lake.root))
    result = dg.materialize([feedback_events, rl_online_update], instance=instance,
                            resources={"lake": root, "registry": RegistryResource(lake=root)})
    assert result.success
    (materialization,) = result.asset_materializations_for_node("rl_online_update")
    logs = [e.user_message for e in instance.all_logs(result.run_id)
            if e.step_key == "rl_online_update" and e.level >= logging.INFO and not e.is_dagster_event]
    return {k: v.value for k, v in materialization.metadata.items()}, logs


def store(lake: Lake) -> RLStore:
    return RLStore(lake.policies_dir, open_registry(lake))


def statuses(lake: Lake, agent: str) -> list[str]:
    return [r["status"] for r in open_registry(lake).rows("rl_versions", where={"agent": agent})]


def test_a_shifted_reward_stream_is_skipped_with_its_reason_and_nothing_is_learnt_twice(lake):
    instance = dg.DagsterInstance.ephemeral()
    emit_trades(lake, 250, pnl_mean=0.5, seed=1)
    first, _ = materialize(lake, instance)
    for agent in AGENTS:
        assert (first[f"{agent}.events_read"], first[f"{agent}.events_used"], first[f"{agent}.events_skipped"]) == (
            250, 250, 0)
        assert first[f"{agent}.max_kl"] < 0.5  # the fifth batch was checked against the first 200 rewards
        assert store(lake).load(agent, clamp=CLAMP).trades == 250
    assert first["skip_reasons"] == [] and first["trade_closed_rows"] == 250
    rows = open_registry(lake).rows("rl_versions")

    # the same telemetry again: nothing new, nothing written
    again, logs = materialize(lake, instance)
    assert again["events_read"] == 0 and again["events_used"] == 0
    assert open_registry(lake).rows("rl_versions") == rows
    assert any("nothing new: nothing written" in line for line in logs)

    # the market turns: every trade loses ~4%. The baseline was kept with the agents, so the first batch of 50
    # is checked against it (the run alone has too few rewards for a baseline), skipped, and the buffer cleared;
    # the 10 trades after it wait for the next batch
    emit_trades(lake, 60, pnl_mean=-4.0, seed=2, start=1000, day=1)
    shifted, logs = materialize(lake, instance)
    for agent in AGENTS:
        assert shifted[f"{agent}.events_read"] == 60 and shifted[f"{agent}.events_used"] == 0
        assert shifted[f"{agent}.events_skipped"] == 50 and shifted[f"{agent}.pending"] == 10
        assert shifted[f"{agent}.max_kl"] > 0.5
        (reason,) = shifted[f"{agent}.skip_reasons"]
        assert "reward distribution drifted: KL(recent || baseline)" in reason and "drift_kl_threshold 0.5" in reason
        assert any(line.startswith(f"{agent}: batch 1: 50 trades SKIPPED") and reason in line for line in logs)
        (skip,) = store(lake).records(agent, "UPDATE_SKIPPED")
        assert skip.reason == reason and skip.metrics["dropped"] == 50
        assert store(lake).load(agent, clamp=CLAMP).trades == 250  # nothing learnt from the drifted batch
    # the skipped batch is consumed: a fourth run reads only the 10 waiting trades again, and learns nothing
    last, _ = materialize(lake, instance)
    assert last[f"{META}.events_read"] == last[f"{SIZER}.events_read"] == 10 and last["events_used"] == 0
    assert [statuses(lake, agent).count("UPDATE_SKIPPED") for agent in AGENTS] == [1, 1]


def test_snapshots_every_snapshot_interval_trades_across_runs_and_a_partial_batch_waits(lake):
    instance = dg.DagsterInstance.ephemeral()
    emit_trades(lake, 120, pnl_mean=0.5, seed=3)
    first, _ = materialize(lake, instance)
    # a first version after the first batch; 20 trades wait for a full batch
    assert first[f"{META}.snapshots"] == ["v0001"] and first[f"{META}.pending"] == 20
    assert first[f"{META}.events_used"] == 100
    working = (lake.policies_dir / META / "working.json").read_bytes()
    rows = open_registry(lake).rows("rl_versions")

    # nothing new: the 20 are read again, still no batch, nothing written
    again, _ = materialize(lake, instance)
    assert again[f"{META}.events_read"] == 20 and again[f"{META}.events_used"] == 0
    assert open_registry(lake).rows("rl_versions") == rows
    assert (lake.policies_dir / META / "working.json").read_bytes() == working

    # 100 more on the next day: 150 trades learnt in all -> the second version, 100 after the first
    emit_trades(lake, 100, pnl_mean=0.5, seed=4, start=500, day=1)
    second, _ = materialize(lake, instance)
    assert second[f"{META}.events_read"] == 120 and second[f"{META}.events_used"] == 100
    assert second[f"{META}.snapshots"] == ["v0002"] and second[f"{META}.pending"] == 20
    for agent in AGENTS:
        active = store(lake).records(agent, "ACTIVE")
        assert [(r.version, r.parent_version, r.metrics["trades"]) for r in active] == [
            ("v0002", "v0001", 150), ("v0001", None, 50)]
        loaded = store(lake).load(agent, clamp=CLAMP)
        assert loaded.trades == 200 and loaded.trades_since_snapshot == 50
        cursor = loaded.online_state["cursor"]
        # per file, the last line consumed: all 120 trades of the first day, 80 of the second (20 wait)
        assert cursor == {"events_20240101.jsonl": 120, "events_20240102.jsonl": 80}


def test_a_pending_reset_is_applied_before_learning(lake):
    instance = dg.DagsterInstance.ephemeral()
    emit_trades(lake, 100, pnl_mean=0.5, seed=5)
    materialize(lake, instance)
    for agent in AGENTS:
        request_rl_reset(open_registry(lake), reason="trend -> panic", agent=agent,
                         change={"from": "trend", "to": "panic", "at": "2024-01-02T00:00:00Z"})
    emit_trades(lake, 50, pnl_mean=0.5, seed=6, start=500, day=1)
    after, logs = materialize(lake, instance)
    for agent in AGENTS:
        assert any(line.startswith(f"{agent}: pending reset applied") for line in logs)
        (reset,) = store(lake).records(agent, "RESET")
        assert reset.metrics["event"] == ("rl.meta.reset" if agent == META else "rl.sizing.reset")
        loaded = store(lake).load(agent, clamp=CLAMP)
        # the fresh table learnt only the 50 new trades; the baseline started over, the cursor did not
        assert after[f"{agent}.events_read"] == 50 and after[f"{agent}.events_used"] == 50
        assert len(loaded.online_state["baseline"]) == 50
        assert loaded.version == reset.metrics["new_version"]
        assert loaded.online_state["cursor"] == {"events_20240101.jsonl": 100, "events_20240102.jsonl": 50}
