"""Offline policy training: the report, the registry entries with lineage and checksums, determinism, the link to
the online learner, and `clm policies list|promote|rollback`."""

import json

import numpy as np
import pytest
import yaml

from clm import cli
from clm.models.artifacts import read_manifest, sha256_file, write_manifest
from clm.policy import Policy
from clm.registry import Status, open_registry
from clm.registry.base import RL_META_MODEL_TYPE, RL_SIZING_MODEL_TYPE
from clm.registry.lineage import artifact_model
from clm.rl import RLConfigError, RLStore
from clm.rl.offline import PLOT_FILE, REPORT_FILE, OfflineConfig, run_offline, train_policies
from clm.rl.replay import build_trades, load_replay_inputs

from .conftest import build_replay_lake

POLICY = Policy()
RISK = POLICY.risk_modes.current
FAST = {"episodes": 2, "bootstrap": 200}


@pytest.fixture
def lake(tmp_path):
    return build_replay_lake(tmp_path / "lake")


@pytest.fixture(scope="module")
def trades(replay_lake):
    signals, bars = load_replay_inputs(replay_lake)
    return build_trades(bars, signals)


def test_run_writes_the_report_registers_both_policies_and_starts_them_online(lake):
    registry = open_registry(lake)
    result = run_offline(lake, registry, FAST, policy=POLICY, actor="test")
    folder = lake.policies_dir / result.run_id
    assert result.folder == folder and result.run_id.startswith("offline-")
    report = json.loads((folder / REPORT_FILE).read_text())
    assert (folder / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [e["episode"] for e in report["episodes"]] == [1, 2]
    for episode in report["episodes"]:
        assert set(episode) >= {"trades", "average_reward", "loss", "epsilon", "net_return"}
        assert set(episode["average_reward"]) == set(episode["epsilon"]) == {"meta_strategy", "sizing"}
        assert episode["loss"]["meta_strategy"] > 0 and 0 < episode["epsilon"]["sizing"] <= 1
    assert report["episodes"][1]["epsilon"]["meta_strategy"] < report["episodes"][0]["epsilon"]["meta_strategy"]
    evaluation = report["evaluation"]
    assert set(evaluation["policies"]) == {"agent", "fixed_size", "random"}
    assert set(evaluation["comparisons"]) == {"fixed_size", "random"}
    assert evaluation["verdict"].startswith("the agent ")
    for metric in ("trades", "total_net_return", "mean_net_bps", "sharpe_per_trade", "max_drawdown", "hit_rate",
                   "mean_meta_reward", "mean_sizing_reward"):
        assert metric in evaluation["policies"]["agent"]
    data = report["data"]
    assert data["notional_by_quote"] == {"USD": [10_000.0]}  # the synthetic SYN000USD...: the USD notional
    assert data["train"]["trades"] + data["held_out"]["trades"] <= data["candidates"]
    assert data["train"]["window"][1] <= data["held_out"]["window"][0]

    records = {r.model_type: r for r in result.records}
    assert set(records) == {RL_META_MODEL_TYPE, RL_SIZING_MODEL_TYPE}
    assert all(r.status == Status.ACTIVE for r in records.values())  # the first policy of each key
    for model_type, record in records.items():
        agent = report["policies"][model_type]["agent"]
        assert record.file_path == str(folder / agent)
        manifest = read_manifest(folder / agent)
        assert manifest.engine == agent
        assert record.lineage.artifact_checksums == manifest.files == report["policies"][model_type]["sha256"]
        for name, digest in manifest.files.items():
            assert sha256_file(folder / agent / name) == digest
        assert record.lineage.seeds == {"seed": 0} and len(record.lineage.data_hash) == 64
        assert record.lineage.code_version.startswith(("git:", "clm-"))
        assert tuple(record.lineage.training_window) == tuple(data["train"]["window"])
        assert record.metrics["verdict"] == evaluation["verdict"] and record.metrics["run_id"] == result.run_id
        assert record.metrics["heldout_trades"] == evaluation["policies"]["agent"]["trades"]
    assert report["policies"][RL_SIZING_MODEL_TYPE]["agent"] == "sizing_qtable"

    # the link to the online learner: each ACTIVE policy is the agent's current rl_versions version
    store = RLStore(lake.policies_dir, registry)
    for model_type, record in records.items():
        current = store.current(record.lineage.config["agent"])
        assert current.metrics["policy_model_id"] == record.model_id
    assert {v.agent for v in result.activated} == {"meta_strategy", "sizing_qtable"}
    mirror = yaml.safe_load(lake.active_policy_path.read_text())
    assert mirror["active"][f"{RL_META_MODEL_TYPE}/pooled/h12"]["model_id"] == records[RL_META_MODEL_TYPE].model_id

    # the same training again: the same run, nothing new registered, no new online version
    again = run_offline(lake, registry, FAST, policy=POLICY, actor="test")
    assert again.run_id == result.run_id and again.new_model_ids == [] and again.activated == []
    assert [r.model_id for r in again.records] == [r.model_id for r in result.records]
    assert json.loads((folder / REPORT_FILE).read_text())["episodes"] == report["episodes"]
    assert len(store.records("meta_strategy", "ACTIVE")) == 1
    assert not [p for p in lake.policies_dir.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_training_is_deterministic_with_a_seed(trades):
    first = train_policies(trades, {**FAST, "seed": 4}, risk_mode=RISK)
    second = train_policies(trades, {**FAST, "seed": 4}, risk_mode=RISK)
    other = train_policies(trades, {**FAST, "seed": 5}, risk_mode=RISK)
    assert first.episodes == second.episodes
    assert first.evaluation.metrics == second.evaluation.metrics
    assert first.evaluation.comparisons == second.evaluation.comparisons
    assert first.meta.table.to_payload() == second.meta.table.to_payload()
    assert first.sizer.table.to_payload() == second.sizer.table.to_payload()
    assert first.episodes != other.episodes
    assert np.array_equal(first.held_rows, other.held_rows)  # the split does not depend on the seed


def test_the_dqn_sizer_can_be_trained(trades):
    trained = train_policies(trades, {"episodes": 1, "bootstrap": 100,
                                      "sizing": {"agent": "dqn", "dqn": {"min_replay": 16, "batch_size": 16}}},
                             risk_mode=RISK)
    assert trained.sizer.name == "sizing_dqn" and trained.sizer.steps > 0
    (episode,) = trained.episodes
    assert episode["loss"]["kind"]["sizing"] == "DQN Huber loss" and episode["loss"]["sizing"] > 0


def test_bad_config_and_bad_splits_are_named(trades, tmp_path):
    with pytest.raises(RLConfigError, match="held_out_share"):
        train_policies(trades, {"held_out_share": 1.5}, risk_mode=RISK)
    with pytest.raises(RLConfigError, match="sizing.agent"):
        train_policies(trades, {"sizing": {"agent": "svm"}}, risk_mode=RISK)
    with pytest.raises(RLConfigError, match="unknown_key"):
        train_policies(trades, {"unknown_key": 1}, risk_mode=RISK)
    assert OfflineConfig().episodes == 5 and OfflineConfig().sizing.agent == "qtable"
    with pytest.raises(RLConfigError, match="episodes"):
        train_policies(trades, {"episodes": 0}, risk_mode=RISK)
    with pytest.raises(ValueError, match="held-out set is empty"):
        train_policies(trades, {"held_out_share": 1e-6}, risk_mode=RISK)
    from clm.lake import Lake

    with pytest.raises(ValueError, match="no champion signals"):
        run_offline(Lake(tmp_path / "empty"), open_registry(Lake(tmp_path / "empty")), FAST, policy=POLICY)


def _register_forecaster(lake, registry) -> str:
    folder = lake.root / "models" / "lightgbm_regressor" / "v1"
    folder.mkdir(parents=True)
    (folder / "model.txt").write_text("a model")
    write_manifest(folder, ["model.txt"], engine="lightgbm_regressor")
    new = artifact_model(model_type="lightgbm_regressor", version="v1" * 8, scope="pooled", horizon=12, folder=folder,
                         training_window=("2024-01-01", "2024-01-02"), feature_version=None, feature_count=1,
                         label_config={}, data_hash="d" * 64, seeds={}, config={})
    return registry.register(new).model_id


def _clm(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_clm_policies_list_promote_rollback(lake, monkeypatch, capsys):
    monkeypatch.setenv("CLM_LAKE", str(lake.root))
    registry = open_registry(lake)
    first = run_offline(lake, registry, FAST, policy=POLICY)
    second = run_offline(lake, registry, {**FAST, "seed": 1}, policy=POLICY)
    champion = {r.model_type: r.model_id for r in first.records}
    challenger = {r.model_type: r.model_id for r in second.records}
    assert {registry.get(i).status for i in challenger.values()} == {Status.SHADOW}  # later ones wait
    assert second.activated == []
    store = RLStore(lake.policies_dir, registry)

    code, out, _ = _clm(capsys, "policies", "list")
    assert code == 0 and all(i in out for i in [*champion.values(), *challenger.values()])
    assert "4 policies, 2 ACTIVE" in out and str(lake.active_policy_path) in out
    assert f"online learner: meta_strategy at version v0001 (started from {champion[RL_META_MODEL_TYPE]})" in out
    code, out, _ = _clm(capsys, "policies", "list", "--status", "shadow", "--type", RL_SIZING_MODEL_TYPE)
    listed = [line.split()[0] for line in out.splitlines()[1:] if line.startswith("rl_")]
    assert code == 0 and listed == [challenger[RL_SIZING_MODEL_TYPE]]

    code, out, _ = _clm(capsys, "policies", "promote", challenger[RL_META_MODEL_TYPE], "--note", "better replay")
    assert code == 0 and f"{challenger[RL_META_MODEL_TYPE]} is now ACTIVE" in out
    assert "online learner: meta_strategy continues from version v0002" in out
    assert registry.get(champion[RL_META_MODEL_TYPE]).status == Status.RETIRED
    current = store.current("meta_strategy")
    assert (current.version, current.parent_version) == ("v0002", "v0001")
    assert current.metrics["policy_model_id"] == challenger[RL_META_MODEL_TYPE]
    mirror = yaml.safe_load(lake.active_policy_path.read_text())
    assert mirror["active"][f"{RL_META_MODEL_TYPE}/pooled/h12"]["model_id"] == challenger[RL_META_MODEL_TYPE]
    assert any(h["model_id"] == challenger[RL_META_MODEL_TYPE] and h["to"] == "ACTIVE"
               and "better replay" in h["reason"] for h in mirror["history"])

    code, out, _ = _clm(capsys, "policies", "rollback", RL_META_MODEL_TYPE, "--note", "worse online")
    assert code == 0 and f"back to {champion[RL_META_MODEL_TYPE]}" in out
    assert registry.get(champion[RL_META_MODEL_TYPE]).status == Status.ACTIVE
    current = store.current("meta_strategy")
    assert current.version == "v0003" and current.metrics["policy_model_id"] == champion[RL_META_MODEL_TYPE]

    # refusals name the problem and change nothing
    code, _, err = _clm(capsys, "policies", "promote", "nope")
    assert code == 2 and "unknown model id 'nope'" in err
    code, _, err = _clm(capsys, "policies", "rollback", RL_SIZING_MODEL_TYPE)
    assert code == 2 and "no earlier ACTIVE model to roll back to" in err
    with pytest.raises(SystemExit):
        cli.main(["policies", "rollback", "lightgbm_regressor"])  # not a policy type
    forecaster = _register_forecaster(lake, registry)
    code, _, err = _clm(capsys, "policies", "promote", forecaster)
    assert code == 2 and "not an RL policy" in err and "clm models" in err
    assert store.current("meta_strategy").version == "v0003"


def test_policies_are_champions_of_their_own_keys_but_no_forecaster_sees_them(lake):
    from clm.registry.base import active_forecasters, is_forecaster
    from clm.serving.champion import ModelBook
    from clm.shadow.models import load_shadow_sets

    registry = open_registry(lake)
    run_offline(lake, registry, FAST, policy=POLICY)
    run_offline(lake, registry, {**FAST, "seed": 1}, policy=POLICY)  # SHADOW challengers of both keys
    assert len(registry.list_models(status=Status.ACTIVE)) == 2 and len(registry.list_models(status=Status.SHADOW)) == 2
    assert not is_forecaster(RL_META_MODEL_TYPE) and not is_forecaster(RL_SIZING_MODEL_TYPE)
    assert is_forecaster("lightgbm_regressor")
    assert active_forecasters(registry) == []  # drift checks and supervision skip policies
    assert load_shadow_sets(lake, registry) == []  # the shadow tester too
    assert ModelBook(lake, registry, 12).records == []  # and serving


def test_adopting_a_policy_keeps_the_online_cursor_and_drops_the_reward_baseline(tmp_path):
    from clm.models.artifacts import ArtifactError
    from clm.registry import DuckDBRegistry
    from clm.rl import MetaStrategyAgent

    store = RLStore(tmp_path / "policies", DuckDBRegistry(tmp_path / "registry.duckdb"))
    online = MetaStrategyAgent(seed=0)
    online.online_state = {"cursor": {"events_20240101.jsonl": 42}, "baseline": [0.5, -0.2]}
    store.snapshot(online, reason="first version")
    policy = MetaStrategyAgent({"epsilon": 0.2, "epsilon_min": 0.05}, seed=9)
    policy.update(policy.state("trend", "LOW", "HIGH"), "breakout", 2.0)
    folder = tmp_path / "run" / policy.name
    folder.mkdir(parents=True)
    write_manifest(folder, policy.save(folder), engine=policy.name)
    record = store.adopt(folder, reason="promoted", metrics={"policy_model_id": "p1"})
    assert (record.status, record.version, record.parent_version) == ("ACTIVE", "v0002", "v0001")
    assert record.metrics["policy_model_id"] == "p1" and record.metrics["adopted_from"] == str(folder)
    loaded = store.load(policy.name)
    assert loaded.version == "v0002" and loaded.table.to_payload() == policy.table.to_payload()
    assert loaded.online_state == {"cursor": {"events_20240101.jsonl": 42}}
    (folder / "agent.json").write_text("{}")  # tampered: refused before anything is written
    with pytest.raises(ArtifactError, match="sha256"):
        store.adopt(folder, reason="tampered")
    assert store.current(policy.name).version == "v0002"
    with pytest.raises(ArtifactError, match="no manifest.json"):
        store.adopt(tmp_path, reason="not an agent folder")


def test_without_a_cost_config_the_replay_takes_the_policys_costs(lake):
    from clm.policy import Costs

    policy = Policy(costs=Costs(slippage_bps=4.0, notional_by_quote={"USD": 1_000.0}))
    result = run_offline(lake, open_registry(lake), FAST, policy=policy, actor="test")
    assert result.report["config"]["cost_config"] == policy.cost_config().as_dict()
    assert result.trades.frame["notional"].unique().to_list() == [1_000.0]
    signals, bars = load_replay_inputs(lake)
    priced = build_trades(bars, signals, cost_config=policy.cost_config())
    assert np.array_equal(result.trades.fixed_bps, priced.fixed_bps)
    assert not np.array_equal(result.trades.fixed_bps, build_trades(bars, signals).fixed_bps)  # not the defaults
