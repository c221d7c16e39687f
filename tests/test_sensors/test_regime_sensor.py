"""regime_sensor: a regime-change file launches the RL reset of the meta-strategy agent and the sizer (and a
retrain when the policy says so), once, also across restarts; a batch launches only its newest change; bad files
go aside with a reason."""

import json

import dagster as dg
import numpy as np
import pytest

from clm.automation.jobs import RETRAINING_JOBS
from clm.automation.rl import META_AGENT, RESET_REQUESTED
from clm.lake import Lake
from clm.policy import Policy, policy_yaml
from clm.regimes.market import write_regime_signals
from clm.registry import open_registry
from clm.rl import STRATEGIES, MetaStrategyAgent, QTableSizer, RLStore, SafetyClamp
from clm.rl.sizing import QTABLE_AGENT
from resources import LakeResource, RegistryResource
from sensors.regime import regime_sensor


def change(source, to, at, confidence=0.8):
    return {"from": source, "to": to, "at": at, "confidence": confidence, "symbols": ["SYN000USD", "SYN001USD"]}


def set_policy(tmp_path, monkeypatch, **settings):
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml(Policy(**settings)))
    monkeypatch.setenv("CLM_POLICY", str(path))


@pytest.fixture
def lake(lake_root, tmp_path, monkeypatch):
    set_policy(tmp_path, monkeypatch)  # the defaults: RL reset on a change, no retrain
    return Lake(lake_root)


def evaluate(lake: Lake, cursor: str | None = None) -> dg.SensorResult:
    resources = {"lake": LakeResource(root=str(lake.root)),
                 "registry": RegistryResource(lake=LakeResource(root=str(lake.root)))}
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        result = regime_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def train_agents(lake: Lake) -> dict[str, dict]:
    """A meta-strategy agent and a Q-table sizer that learnt something, stored as their current versions."""
    store = RLStore(lake.policies_dir, open_registry(lake))
    rng = np.random.default_rng(0)
    meta = MetaStrategyAgent({"epsilon_decay": 0.9}, seed=0)
    sizer = QTableSizer({"epsilon_decay": 0.9}, clamp=SafetyClamp(Policy().risk_modes.current), seed=0)
    for i in range(40):
        meta.update(meta.state("trend", "MEDIUM", "HIGH"), STRATEGIES[i % 5], float(rng.normal()))
        sizer.update({"market_regime": "trend", "signal_confidence": 0.7, "current_exposure_pct": 5.0,
                      "win_rate_recent": 0.5, "volatility_level": "MEDIUM"}, i % 270, float(rng.normal()))
    tables = {}
    for agent in (meta, sizer):
        store.snapshot(agent, reason="trained before the change")
        assert agent.epsilon < 0.5 and len(agent.table) > 0
        tables[agent.name] = agent.table.to_payload()
    return tables


def test_a_change_launches_one_rl_reset_that_records_the_request(lake):
    tables = train_agents(lake)
    (path,) = write_regime_signals([change("trend", "panic", "2026-11-22T10:45:00Z")], lake.signals_dir("regime"))
    result = evaluate(lake)
    (request,) = result.run_requests
    assert request.job_name == "rl_maintenance"
    assert request.run_key.startswith("regime:regime_20261122T104500Z:") and request.run_key.endswith(":rl_maintenance")
    assert request.tags["clm/trigger"] == "regime:trend->panic"
    assert request.tags["clm/signal_file"] == f"signals/regime/{path.name}"
    config = request.run_config["ops"]["rl_reset"]["config"]
    assert (config["from_regime"], config["to_regime"], config["at"]) == ("trend", "panic", "2026-11-22T10:45:00Z")
    assert not open_registry(lake).rows(RETRAINING_JOBS)  # the policy asks for no retrain
    assert not evaluate(lake, result.cursor).run_requests
    assert [r.run_key for r in evaluate(lake, None).run_requests] == [request.run_key]  # fresh cursor: same key

    # the run it asks for resets both agents, exactly once each
    from definitions import defs

    job = defs.resolve_job_def("rl_maintenance")
    run = job.execute_in_process(run_config=request.run_config, tags=request.tags,
                                 instance=dg.DagsterInstance.ephemeral())
    assert run.success
    (materialization,) = run.asset_materializations_for_node("rl_reset")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["events"] == ["rl.meta.reset", "rl.sizing.reset"] and metadata["sizer"] == QTABLE_AGENT
    rows = open_registry(lake).rows("rl_versions")
    store = RLStore(lake.policies_dir, open_registry(lake))
    for agent, event in ((META_AGENT, "rl.meta.reset"), (QTABLE_AGENT, "rl.sizing.reset")):
        mine = [r for r in rows if r["agent"] == agent]
        assert sorted(r["status"] for r in mine) == ["ACTIVE", "ACTIVE", "ARCHIVED", "RESET", RESET_REQUESTED]
        (requested,) = [r for r in mine if r["status"] == RESET_REQUESTED]
        assert requested["version"] is None and requested["parent_version"] == "v0001"
        assert "trend->panic" in requested["reason"] and requested["metrics"]["change"]["to"] == "panic"
        # the old table archived as it was, a new version with epsilon 0.5 and a fresh table, the event recorded
        (archived,) = [r for r in mine if r["status"] == "ARCHIVED"]
        assert archived["parent_version"] == "v0001"
        old = store.load(agent, version=archived["version"], clamp=SafetyClamp(Policy().risk_modes.current))
        assert old.table.to_payload() == tables[agent] and old.epsilon < 0.5
        new = max((r for r in mine if r["status"] == "ACTIVE"), key=lambda r: r["version_id"])
        assert new["epsilon"] == 0.5 and new["parent_version"] == archived["version"]
        assert len(store.load(agent, clamp=SafetyClamp(Policy().risk_modes.current)).table) == 0
        (reset,) = [r for r in mine if r["status"] == "RESET"]
        assert reset["metrics"]["event"] == event
        assert (reset["metrics"]["archived_version"], reset["metrics"]["new_version"]) == (
            archived["version"], new["version"])
        assert metadata[f"{agent}.event"] == event and metadata[f"{agent}.new_request"] is True
        assert (metadata[f"{agent}.archived_version"], metadata[f"{agent}.new_version"]) == (
            archived["version"], new["version"])

    # a second identical file does nothing: the sensor has acted on it, and a sensor that lost its cursor asks
    # for the same run key, whose run (were it launched again) records nothing new
    path.unlink()
    assert write_regime_signals([change("trend", "panic", "2026-11-22T10:45:00Z")], lake.signals_dir("regime"))
    assert not evaluate(lake, result.cursor).run_requests
    (again,) = evaluate(lake, None).run_requests
    assert again.run_key == request.run_key
    rerun = job.execute_in_process(run_config=again.run_config, tags=again.tags,
                                   instance=dg.DagsterInstance.ephemeral())
    assert rerun.success and open_registry(lake).rows("rl_versions") == rows
    (materialization,) = rerun.asset_materializations_for_node("rl_reset")
    assert materialization.metadata["events"].value == [] and materialization.metadata["new_request"].value is False
    assert materialization.metadata[f"{META_AGENT}.outcome"].value.startswith("nothing to do")


def test_a_retrain_when_the_policy_says_so_inside_the_minimum_interval_skipped(lake, tmp_path, monkeypatch):
    set_policy(tmp_path, monkeypatch, retrain_on_regime_change=True, min_retrain_interval_hours=6)
    write_regime_signals([change("range", "trend", "2026-11-22T10:00:00Z")], lake.signals_dir("regime"))
    first = evaluate(lake)
    assert sorted(r.job_name for r in first.run_requests) == ["full_retrain", "rl_maintenance"]
    retrain = next(r for r in first.run_requests if r.job_name == "full_retrain")
    assert retrain.tags["clm/trigger"] == "regime:range->trend" and retrain.run_key.endswith(":full_retrain")
    write_regime_signals([change("trend", "panic", "2026-11-22T11:00:00Z")], lake.signals_dir("regime"))
    second = evaluate(lake, first.cursor)
    assert [r.job_name for r in second.run_requests] == ["rl_maintenance"]  # the reset is never held back
    skipped, requested = open_registry(lake).rows(RETRAINING_JOBS)
    assert requested["status"] == "REQUESTED" and skipped["status"] == "SKIPPED"
    assert "min_retrain_interval_hours" in skipped["error"] and "trend->panic" in skipped["trigger_reason"]


def test_a_batch_launches_only_its_newest_change_and_history_launches_nothing(lake):
    folder = lake.signals_dir("regime")
    write_regime_signals([change("range", "trend", "2026-11-20T08:00:00Z"),
                          change("trend", "range", "2026-11-21T08:00:00Z"),
                          change("range", "illiquid", "2026-11-22T08:00:00Z")], folder)
    result = evaluate(lake)
    (request,) = result.run_requests
    assert request.tags["clm/trigger"] == "regime:range->illiquid"
    # a change older than one already acted on (a backfill replaying last week) is history
    write_regime_signals([change("trend", "panic", "2026-11-15T08:00:00Z")], folder)
    late = evaluate(lake, result.cursor)
    assert not late.run_requests and "no new regime changes" in late.skip_reason.skip_message
    # the first regime after the warm-up is not a change
    write_regime_signals([change(None, "trend", "2026-11-23T08:00:00Z")], folder)
    initial = evaluate(lake, late.cursor)
    assert not initial.run_requests and "not a change" in initial.skip_reason.skip_message


def test_bad_regime_files_are_rejected_with_a_reason(lake):
    folder = lake.signals_dir("regime")
    (good,) = write_regime_signals([change("trend", "panic", "2026-11-22T10:45:00Z")], folder)
    valid = json.loads(good.read_text())
    bad = {
        "regime_20261122T110000Z.json": {**valid, "at": "2026-11-22T11:00:00Z", "to": "moon"},
        "regime_20261122T120000Z.json": valid,  # at does not match the name
        "regime_20261122T130000Z.json": {**valid, "at": "2026-11-22T13:00:00Z", "confidence": 1.5},
        "regime_20261122T140000Z.json": {**valid, "at": "2026-11-22T14:00:00Z", "extra": 1},
        "regime_20261122T150000Z.json": {**valid, "at": "2026-11-22T15:00:00", "symbols": []},
        "drift_20261122T160000Z.json": valid,
    }
    for name, payload in bad.items():
        (folder / name).write_text(json.dumps(payload))
    result = evaluate(lake)
    assert [r.tags["clm/signal_file"] for r in result.run_requests] == [f"signals/regime/{good.name}"]
    rejected = lake.signals_dir("rejected") / "regime"
    reasons = {p.name.removesuffix(".reason.txt"): p.read_text() for p in rejected.glob("*.reason.txt")}
    assert set(reasons) == set(bad)
    assert "to: must be one of" in reasons["regime_20261122T110000Z.json"]
    assert "does not match the file name" in reasons["regime_20261122T120000Z.json"]
    assert "confidence" in reasons["regime_20261122T130000Z.json"]
    assert "extra: unknown field" in reasons["regime_20261122T140000Z.json"]
    assert "must be in UTC" in reasons["regime_20261122T150000Z.json"]
    assert "unknown prefix" in reasons["drift_20261122T160000Z.json"]
