"""policy.yaml: the shipped file is valid and complete, and every kind of mistake names its key."""

from pathlib import Path

import pytest
import yaml

from clm.policy import Policy, PolicyError, load_policy, parse_policy, policy_path, policy_yaml

REPO = Path(__file__).resolve().parents[1]


def test_shipped_policy_is_the_documented_defaults():
    shipped = load_policy(REPO / "policy.yaml")
    assert shipped == Policy()
    assert yaml.safe_load(policy_yaml(shipped)) == yaml.safe_load((REPO / "policy.yaml").read_text())
    assert shipped.auto_promote_threshold.min_samples == 1000
    assert shipped.auto_promote_threshold.min_improvement_pct == 5.0
    assert shipped.supervision.min_win_rate == 0.45 and shipped.supervision.max_latency_ms == 500
    assert shipped.risk_modes.current.max_leverage == 3


def test_missing_file_means_defaults_and_the_file_is_read_fresh(tmp_path):
    path = tmp_path / "policy.yaml"
    assert load_policy(path) == Policy()
    path.write_text("auto_promote: true\n")
    assert load_policy(path).auto_promote is True
    path.write_text("auto_promote: false\n")
    assert load_policy(path).auto_promote is False  # no caching between reads


@pytest.mark.parametrize("text, message", [
    ("auto_promote_threshold:\n  min_samples: many\n", "auto_promote_threshold.min_samples: Input should be a valid integer"),
    ("drift_detection:\n  psi:\n    moderate: 0.3\n", "drift_detection.psi: significant: must be greater than moderate"),
    ("drift_detection:\n  ks:\n    statistic: 2\n", "drift_detection.ks.statistic: Input should be less than 1"),
    ("supervision:\n  min_win_rate: -0.1\n", "supervision.min_win_rate"),
    ("rl_maintenance:\n  snapshot_every: 10\n", "rl_maintenance.snapshot_every: unknown key"),
    ("bogus: 1\n", "bogus: unknown key"),
    ("risk_modes:\n  active: yolo\n", "'yolo' is not one of the modes"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("auto_promote: [1\n", "not valid YAML"),
])
def test_malformed_policy_names_the_key(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_policy_path_comes_from_the_environment():
    assert policy_path({"CLM_POLICY": "/etc/clm/policy.yaml"}) == Path("/etc/clm/policy.yaml")
    assert policy_path({}) == Path("policy.yaml")
    assert parse_policy(None) == Policy()
