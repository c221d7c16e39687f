"""policy.yaml: the shipped file is valid and complete, and every kind of mistake names its key."""

from pathlib import Path

import pytest
import yaml

from clm.evaluation.costs import DEFAULT_NOTIONAL_BY_QUOTE, CostConfig
from clm.policy import Costs, Policy, PolicyError, load_policy, parse_policy, policy_path, policy_yaml

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
    # costs: CostConfig's own rules, each named by its key path
    ("costs:\n  taker_fee_bps: -1\n", "costs.taker_fee_bps: must be a finite number >= 0, got -1"),
    ("costs:\n  max_participation: 1.5\n", "costs.max_participation: must be a number in (0, 1], got 1.5"),
    ("costs:\n  spread_estimate_window: 0\n", "costs.spread_estimate_window: must be an int >= 1"),
    ("costs:\n  default_half_spread_bps: -2\n", "costs.default_half_spread_bps: must be None or a finite number"),
    ("costs:\n  default_notional: 0\n", "costs.default_notional: must be a finite number > 0, got 0"),
    ("costs:\n  notional_by_quote:\n    BTC: 0\n", "costs.notional_by_quote: notional_by_quote['BTC'] must be a "
                                                  "finite number > 0, got 0"),
    ("costs:\n  notional_by_quote:\n    B TC: 1\n", "costs.notional_by_quote: key 'B TC' is not a quote asset"),
    ("costs:\n  notional_by_quote:\n    btc: 1\n    BTC: 2\n", "costs.notional_by_quote: quote 'BTC' is given twice"),
    ("costs:\n  notional_by_quote: 5\n", "costs.notional_by_quote: Input should be a valid dictionary"),
    ("costs:\n  slippage_bps: lots\n", "costs.slippage_bps: Input should be a valid number"),
    ("costs:\n  fees: 1\n", "costs.fees: unknown key"),
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


def test_the_costs_section_is_the_cost_config(tmp_path):
    assert Policy().cost_config() == CostConfig()  # the defaults are CostConfig's own, not a copy
    assert set(Costs.model_fields) == set(CostConfig.__dataclass_fields__)  # field for field
    path = tmp_path / "policy.yaml"
    path.write_text("costs:\n  taker_fee_bps: 7.5\n  use_taker: false\n  default_half_spread_bps: 1.5\n"
                    "  notional_by_quote:\n    btc: 0.25\n    TRY: 300000\n  default_notional: 2500\n")
    config = load_policy(path).cost_config()
    assert config == CostConfig(taker_fee_bps=7.5, use_taker=False, default_half_spread_bps=1.5, default_notional=2500,
                                notional_by_quote={**DEFAULT_NOTIONAL_BY_QUOTE, "BTC": 0.25, "TRY": 300_000.0})
    # a partial map changes only the quotes it names: ETH pairs keep 5 ETH, not the default_notional
    assert config.notional_for("ETH_BTC") == 0.25 and config.notional_for("LINKETH") == 5.0
    assert config.notional_for("XRP_TRY") == 300_000.0 and config.notional_for("XRP_JPY") == 2500.0
    # what policy_yaml writes reads back as the same policy (the file a user edits)
    again = tmp_path / "again.yaml"
    again.write_text(policy_yaml(load_policy(path)))
    assert load_policy(again) == load_policy(path) and load_policy(again).cost_config() == config
