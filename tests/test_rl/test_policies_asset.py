"""The rl_policies asset: materialised on a small synthetic market, its metadata, its config checks, its jobs."""

import dagster as dg
import pytest

from assets.rl_policies import rl_policies
from clm.registry import Status, open_registry
from resources import LakeResource, RegistryResource

from .conftest import build_replay_lake


def _materialize(lake, config=None, instance=None):
    resource = LakeResource(root=str(lake.root))
    return dg.materialize([rl_policies], resources={"lake": resource, "registry": RegistryResource(lake=resource)},
                          run_config={"ops": {"rl_policies": {"config": config or {}}}},
                          instance=instance or dg.DagsterInstance.ephemeral())


def test_the_asset_trains_evaluates_and_registers_on_the_synthetic_market(tmp_path):
    lake = build_replay_lake(tmp_path / "lake")
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(lake, {"episodes": 2}, instance)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("rl_policies")
    metadata = materialization.metadata
    assert metadata["verdict"].value.startswith("the agent ")
    table = metadata["evaluation"].value
    assert table.startswith("| policy | trades | total_net_return |")
    assert "| fixed_size |" in table and "| random |" in table
    assert metadata["held_out_equity"].value.startswith("![held-out equity](data:image/png;base64,")
    assert [e["episode"] for e in metadata["episodes"].value] == [1, 2]
    run_id = metadata["run_id"].value
    assert metadata["path"].value == str(lake.policies_dir / run_id / "training_report.json")
    registry = open_registry(lake)
    ids = metadata["model_ids"].value
    assert set(ids.values()) == {"ACTIVE"} and {registry.get(i).status for i in ids} == {Status.ACTIVE}
    assert all(registry.history(i)[0].actor == f"dagster run {result.run_id}" for i in ids)
    assert metadata["online_versions"].value == {"meta_strategy": "v0001", "sizing_qtable": "v0001"}
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("episode 2/2: ") and "epsilon" in m and "average reward" in m for m in logs)


def test_bad_config_and_missing_signals_fail_with_a_clear_message(tmp_path):
    empty = build_replay_lake(tmp_path / "lake")
    # pydantic validates the typed config before the body runs
    with pytest.raises(Exception, match=r"held_out_share[\s\S]*less than 1"):
        _materialize(empty, {"held_out_share": 1.5})
    with pytest.raises(Exception, match=r"invalid rl_policies config: sizer must be one of \[.*\], got 'svm'"):
        _materialize(empty, {"sizer": "svm"})
    from clm.lake import Lake

    with pytest.raises(Exception, match="rl_policies: no champion signals: table 'consensus' is missing"):
        _materialize(Lake(tmp_path / "no-signals"))


def test_the_asset_has_its_own_group_and_job_and_no_ingest_or_rl_maintenance_run_selects_it():
    from definitions import defs

    spec = rl_policies.specs_by_key[dg.AssetKey("rl_policies")]
    assert spec.group_name == "rl_training"
    assert {d.asset_key.path[0] for d in spec.deps} == {"consensus", "candles", "features", "regimes"}

    def selected(job: str) -> set[str]:
        return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}

    assert selected("rl_policy_training") == {"rl_policies"}
    assert defs.resolve_job_def("rl_policy_training").tags["clm/trigger"] == "manual"
    for job in ("ingest_job", "rl_maintenance", "training_job", "monitoring_job"):
        assert "rl_policies" not in selected(job), job


def test_the_replay_is_costed_with_the_policys_costs(tmp_path, monkeypatch):
    """policy.yaml `costs` (what the evaluation uses) prices the replay's trades: a dearer fee and another trade
    size show in training_report.json and lower the fixed-size baseline's net result on the same trades."""
    import json

    from clm.evaluation.costs import CostConfig
    from clm.policy import Costs, Policy, policy_yaml

    lake = build_replay_lake(tmp_path / "lake")
    policy = tmp_path / "policy.yaml"
    monkeypatch.setenv("CLM_POLICY", str(policy))
    reports = {}
    for name, costs in (("default", Costs()), ("dear", Costs(taker_fee_bps=25.0, notional_by_quote={"USD": 2500}))):
        policy.write_text(policy_yaml(Policy(costs=costs)))
        result = _materialize(lake, {"episodes": 1})
        assert result.success
        (materialization,) = result.asset_materializations_for_node("rl_policies")
        assert materialization.metadata["cost_config"].value == costs.cost_config().as_dict()
        reports[name] = json.loads((lake.policies_dir / materialization.metadata["run_id"].value
                                    / "training_report.json").read_text())
    default, dear = reports["default"], reports["dear"]
    assert default["config"]["cost_config"] == CostConfig().as_dict()
    assert dear["config"]["cost_config"]["taker_fee_bps"] == 25.0
    assert default["data"]["notional_by_quote"] == {"USD": [10_000.0]}  # the synthetic SYN000USD...
    assert dear["data"]["notional_by_quote"] == {"USD": [2500.0]}
    assert dear["data"]["held_out"] == default["data"]["held_out"]  # the same trades, priced differently
    fixed = {name: r["evaluation"]["policies"]["fixed_size"]["mean_net_bps"] for name, r in reports.items()}
    assert fixed["dear"] < fixed["default"]
