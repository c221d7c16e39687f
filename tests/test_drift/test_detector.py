"""The detector's decisions: per-feature reasons, severity from the policy's rules, prediction and
performance drift (seeded), the drift types that fired, and the policy's two windows."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from clm.drift import (
    REPORT_SCHEMA,
    DriftReference,
    Severity,
    cusum_drop,
    detect_drift,
    performance_drift,
    prediction_drift,
    share_severity,
    split_windows,
)
from clm.policy import DriftDetection, parse_policy

UTC = dt.UTC


def _frames(rng, shifted: int, features: int = 20, n1: int = 12_000, n2: int = 2_000, shift: float = 1.0):
    names = [f"x{j:02d}" for j in range(features)]
    reference = pl.DataFrame({n: rng.standard_normal(n1) for n in names})
    recent = pl.DataFrame({n: rng.standard_normal(n2) + (shift if j < shifted else 0.0) for j, n in enumerate(names)})
    return reference, recent


def test_severity_follows_the_policys_share_rules():
    policy = parse_policy({"drift_detection": {"severity_rules": {
        "medium_drift_share": 0.1, "high_drift_share": 0.3, "critical_drift_share": 0.6}}})
    rng = np.random.default_rng(1)
    for shifted, severity in [(0, Severity.LOW), (1, Severity.LOW), (2, Severity.MEDIUM), (5, Severity.MEDIUM),
                              (6, Severity.HIGH), (12, Severity.CRITICAL), (20, Severity.CRITICAL)]:
        reference, recent = _frames(rng, shifted)
        report = detect_drift(reference, recent, policy)  # a whole Policy or its drift_detection section
        assert report.drift_share == pytest.approx(shifted / 20)
        assert report.severity == severity, shifted
        assert report.drift_type == ("feature" if shifted else "none")
    assert share_severity(None) == Severity.LOW
    assert share_severity(0.05) == Severity.MEDIUM and share_severity(0.049) == Severity.LOW  # the defaults
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW  # by urgency, not alphabet


def test_reasons_and_the_effect_size_rule():
    rng = np.random.default_rng(2)
    n = 5_000
    reference = {"same": rng.standard_normal(n), "shift": rng.standard_normal(n), "tiny": rng.standard_normal(n),
                 "psi_only": rng.standard_normal(n), "few": rng.standard_normal(n), "moderate": rng.standard_normal(n)}
    # the reference's deciles resampled 4% / 16% / 4% / ...: PSI ~0.4, yet the ECDFs stay within ~0.06
    base = reference["psi_only"]
    decile = np.searchsorted(np.quantile(base, np.arange(1, 10) / 10), base, side="right")
    zigzag = np.concatenate([rng.choice(base[decile == i], 640 if i % 2 else 160) for i in range(10)])
    milder = np.concatenate([rng.choice(base[decile == i], 540 if i % 2 else 260) for i in range(10)])  # PSI ~0.13
    recent = {
        "same": rng.standard_normal(4_000),
        "shift": rng.standard_normal(4_000) + 0.6,
        "tiny": rng.standard_normal(4_000) + 0.05,  # D ~0.02 < 0.1: no effect, whatever the p-value
        "psi_only": zigzag,
        "moderate": milder,
        "few": np.concatenate([rng.standard_normal(99), np.full(3_901, np.nan)]),
    }
    table = detect_drift(reference, recent, DriftDetection()).features
    assert table.schema == pl.Schema(REPORT_SCHEMA)
    got = dict(zip(table["feature"], zip(table["drifting"], table["reason"], strict=True), strict=True))
    assert got["same"] == (False, "stable")
    assert got["shift"] == (True, "ks+psi")
    assert got["tiny"] == (False, "stable")
    assert got["psi_only"] == (True, "psi")
    row = table.filter(pl.col("feature") == "psi_only").row(0, named=True)
    assert row["psi"] > 0.25 and row["ks_statistic"] < 0.1
    assert got["moderate"] == (False, "psi_moderate")  # 0.1 <= PSI < 0.25: reported, not drifting
    assert got["few"] == (False, "insufficient_data")  # 99 values < min_samples 100: not tested, not drifting
    strict = DriftDetection(min_samples=50, psi={"moderate": 0.01, "significant": 0.02})
    table = detect_drift(reference, recent, strict).features
    assert table.filter(pl.col("feature") == "few")["reason"][0] != "insufficient_data"


def test_insufficient_features_do_not_count_in_the_share():
    rng = np.random.default_rng(3)
    reference = {"a": rng.standard_normal(1000), "b": rng.standard_normal(1000), "c": rng.standard_normal(1000)}
    recent = {"a": rng.standard_normal(500) + 2, "b": rng.standard_normal(500), "c": np.full(500, np.nan)}
    report = detect_drift(reference, recent)
    assert report.features_tested == 2 and report.drift_share == 0.5 and report.severity == Severity.CRITICAL
    assert report.statistics()["features_insufficient"] == ["c"]
    empty = detect_drift({"c": np.full(10, np.nan)}, {"c": np.full(10, np.nan)})
    assert empty.drift_share is None and empty.severity == Severity.LOW and empty.drift_type == "none"


def test_a_fitted_reference_is_reused_and_fixes_the_features():
    rng = np.random.default_rng(4)
    reference, recent = _frames(rng, 3)
    fitted = DriftReference.fit(reference, bins=10)
    assert detect_drift(fitted, recent).features.equals(detect_drift(reference, recent).features)
    with pytest.raises(ValueError, match="already fixes"):
        detect_drift(fitted, recent, features=["x00"])


def test_prediction_drift_uses_the_feature_rule_and_its_policy_severity():
    rng = np.random.default_rng(5)
    reference = pl.DataFrame({"prediction": rng.normal(0.0, 1.0, 4000), "confidence": rng.uniform(0.5, 1, 4000)})
    calm = pl.DataFrame({"prediction": rng.normal(0.0, 1.0, 1000), "confidence": rng.uniform(0.5, 1, 1000)})
    moved = pl.DataFrame({"prediction": rng.normal(0.0, 1.0, 1000), "confidence": rng.uniform(0.5, 0.8, 1000)})
    assert not prediction_drift(reference, calm).fired
    result = prediction_drift(reference, moved)
    assert result.fired and result.drifting == ["confidence"]
    features, recent_features = _frames(rng, 0)
    report = detect_drift(features, recent_features, predictions=(reference, moved))
    assert report.severity == Severity.MEDIUM and report.drift_types == ("prediction",)  # default: MEDIUM
    policy = parse_policy({"drift_detection": {"severity_rules": {"prediction_drift": "CRITICAL"}}})
    report = detect_drift(features, recent_features, policy, predictions=(reference, moved))
    assert report.severity == Severity.CRITICAL and report.type_severities["feature"] == Severity.LOW
    assert report.statistics()["prediction"]["drifting"] == ["confidence"]


def _outcomes(rng, n: int, hit_rate: float, loss: float = -1.0) -> pl.DataFrame:
    hit = rng.random(n) < hit_rate
    return pl.DataFrame({"hit": hit, "net_pnl": np.where(hit, 1.0, loss) + rng.normal(0, 0.1, n)})


def test_performance_drift_fires_on_a_hit_rate_drop_from_55_to_45_percent():
    rng = np.random.default_rng(6)
    result = performance_drift(_outcomes(rng, 5000, 0.55), _outcomes(rng, 1000, 0.45), DriftDetection())
    assert result.hit_rate_reference == pytest.approx(0.55, abs=0.02)
    assert result.hit_rate_recent == pytest.approx(0.45, abs=0.03)
    assert result.hit_rate_fired and result.hit_rate_p_value < 1e-6 and result.fired
    assert result.reason.startswith("hit_rate")
    features, recent_features = _frames(rng, 0)
    report = detect_drift(features, recent_features, model_types=["lightgbm_classifier"],
                          performance=(_outcomes(rng, 5000, 0.55), _outcomes(rng, 1000, 0.45)))
    assert report.severity == Severity.HIGH and report.drift_type == "performance"  # default: HIGH
    assert report.model_types == ("lightgbm_classifier",)


def test_performance_drift_stays_quiet_when_the_hit_rate_is_unchanged():
    rng = np.random.default_rng(7)
    fired = [performance_drift(_outcomes(rng, 5000, 0.55), _outcomes(rng, 1000, 0.55)).fired for _ in range(100)]
    assert not fired[0]
    assert sum(fired) <= 5  # <= 5% of 100 seeded trials


def test_cusum_catches_bigger_losses_at_an_unchanged_hit_rate():
    rng = np.random.default_rng(8)
    result = performance_drift(_outcomes(rng, 5000, 0.55), _outcomes(rng, 1000, 0.55, loss=-3.0))
    assert not result.hit_rate_fired and result.cusum_fired and result.reason == "cusum"
    assert result.cusum_alarm_at < 200  # the mean drop is ~0.9 reference std per signal
    # one huge loss alone cannot fire it: each signal moves the statistic by at most CUSUM_CLIP + k
    calm = _outcomes(rng, 1000, 0.55).with_columns(
        pl.when(pl.int_range(pl.len()) == 10).then(-1000.0).otherwise(pl.col("net_pnl")).alias("net_pnl"))
    assert not performance_drift(_outcomes(rng, 5000, 0.55), calm).cusum_fired


def test_cusum_recursion_and_the_minimum_sample():
    z = np.array([-1.0, -1.0, 2.0, -3.0, 0.5])
    s, expected = 0.0, []
    for value in z:
        s = max(0.0, s - value - 0.5)
        expected.append(s)
    np.testing.assert_allclose(cusum_drop(z, 0.5), expected)
    too_few = performance_drift(np.ones(50), np.zeros(50))
    assert too_few.reason == "insufficient_data" and not too_few.fired
    assert performance_drift(np.ones(500), -np.ones(500)).hit_rate_fired  # arrays of pnl: hit = pnl > 0


def test_several_types_fire_and_the_highest_severity_wins():
    rng = np.random.default_rng(9)
    reference, recent = _frames(rng, 2)  # 10%: MEDIUM
    report = detect_drift(reference, recent, performance=(_outcomes(rng, 5000, 0.55), _outcomes(rng, 1000, 0.40)))
    assert report.drift_type == "feature,performance" and report.severity == Severity.HIGH
    assert report.type_severities == {"feature": Severity.MEDIUM, "performance": Severity.HIGH}


def test_windows_follow_the_policy():
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    stamps = pl.datetime_range(start, start + dt.timedelta(days=20), "1h", time_zone="UTC", eager=True)
    frame = pl.DataFrame({"timestamp": stamps, "warm": [i >= 5 for i in range(len(stamps))],
                          "x": np.arange(len(stamps), dtype=float)})
    policy = parse_policy({"drift_detection": {"reference_days": 5, "recent_days": 2}})
    windows = split_windows(frame.lazy(), policy)
    end = start + dt.timedelta(days=20)
    assert windows.recent_end == end and windows.recent_start == end - dt.timedelta(days=2)
    assert windows.reference_end == windows.recent_start
    assert windows.reference_start == end - dt.timedelta(days=7)
    recent, reference = windows.recent.collect(), windows.reference.collect()
    assert recent["timestamp"].min() == windows.recent_start and recent["timestamp"].max() == end
    assert reference["timestamp"].min() == windows.reference_start
    assert reference["timestamp"].max() == windows.recent_start - dt.timedelta(hours=1)  # half-open
    assert recent.height == 49 and reference.height == 5 * 24
    early = split_windows(frame, policy, end=start + dt.timedelta(days=3))  # the warm-up rows are dropped
    assert early.reference.collect()["timestamp"].min() == start + dt.timedelta(hours=5)
    report = detect_drift(windows.reference, windows.recent, DriftDetection(min_samples=10), features=["x"],
                          windows=windows)
    assert report.statistics()["windows"]["recent"] == [windows.recent_start.isoformat(), end.isoformat()]
    with pytest.raises(ValueError, match="time zone"):
        split_windows(frame, policy, end=dt.datetime(2024, 1, 5))
    with pytest.raises(ValueError, match="no rows"):
        split_windows(frame.clear(), policy)
