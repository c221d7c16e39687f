"""Registry.record_decision: a recommendation leaves its evidence in status_history without changing a status."""

import pytest
import yaml

from clm.registry import POOLED, DuckDBRegistry, ModelKey, RegistryError, Status, UnknownModel

from .test_duckdb_registry import make_model

KEY = ModelKey("lgbm", POOLED, 12)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "lake"


@pytest.fixture
def registry(root):
    return DuckDBRegistry(root / "registry" / "registry.duckdb", artifact_root=root / "models",
                          active_policy_path=root / "active_policy.yaml")


def test_a_decision_is_a_history_row_with_its_evidence_and_no_status_change(registry, root):
    champion = registry.register(make_model(root, 1))
    challenger = registry.register(make_model(root, 2))
    before = registry.list_models()
    evidence = {"n": 1200, "mean_difference": 0.0004, "ci": [0.0001, 0.0007], "p_value": 0.01,
                "_cause": "callers cannot forge the registry's own keys"}
    change = registry.record_decision(challenger.model_id, "shadow test: CONTINUE_TESTING", evidence=evidence,
                                      actor="shadow", note="n below min_samples")
    assert change.model_id == challenger.model_id
    assert change.from_status == change.to_status == Status.SHADOW
    assert change.reason == "shadow test: CONTINUE_TESTING: n below min_samples"
    assert change.actor == "shadow"
    assert change.evidence["n"] == 1200 and change.evidence["ci"] == [0.0001, 0.0007]
    assert change.evidence["_cause"] == "decision"
    assert registry.history(challenger.model_id)[-1] == change
    assert registry.list_models() == before  # no record changed
    rows = registry.rows("status_history", where={"model_id": challenger.model_id}, limit=1)
    assert rows[0]["event_id"] == change.event_id and rows[0]["evidence"]["p_value"] == 0.01
    # the mirror lists it like any other history row; the ACTIVE set is unchanged
    mirror = yaml.safe_load(registry.active_policy_path.read_text())
    assert mirror["active"][str(KEY)]["model_id"] == champion.model_id
    assert mirror["history"][-1]["reason"].startswith("shadow test: CONTINUE_TESTING")


def test_decisions_on_an_active_model_do_not_disturb_rollback(registry, root):
    first = registry.register(make_model(root, 1))
    second = registry.register(make_model(root, 2))
    registry.promote(second.model_id)
    registry.record_decision(second.model_id, "supervision: DEGRADED", evidence={"win_rate": 0.4}, actor="supervisor")
    registry.record_decision(first.model_id, "note on a retired model", evidence={}, actor="cli")
    third = registry.register(make_model(root, 3))
    registry.promote(third.model_id)
    registry.record_decision(third.model_id, "supervision: HEALTHY", evidence={}, actor="supervisor")
    # the model most recently replaced by a promotion is the second, decisions notwithstanding
    assert registry.rollback(KEY).model_id == second.model_id
    assert registry.rollback(KEY).model_id == first.model_id
    # replaying the status changes (decisions are no-ops) reproduces every final status
    final: dict[str, Status] = {}
    for change in registry.history():
        assert change.from_status == final.get(change.model_id)
        final[change.model_id] = change.to_status
    assert final == {m.model_id: m.status for m in registry.list_models()}


@pytest.mark.parametrize("call, error, message", [
    (lambda r, m: r.record_decision("nope", "x", evidence={}, actor="a"), UnknownModel, "unknown model id"),
    (lambda r, m: r.record_decision(m, " ", evidence={}, actor="a"), RegistryError, "decision must be"),
    (lambda r, m: r.record_decision(m, "x", evidence=[1], actor="a"), RegistryError, "evidence must be a mapping"),
    (lambda r, m: r.record_decision(m, "x", evidence={"f": object()}, actor="a"), RegistryError, "JSON"),
    (lambda r, m: r.record_decision(m, "x", evidence={}, actor=""), RegistryError, "actor must be"),
])
def test_refused_decisions_change_nothing(registry, root, call, error, message):
    model = registry.register(make_model(root, 1))
    before = registry.history()
    with pytest.raises(error, match=message):
        call(registry, model.model_id)
    assert registry.history() == before
