"""Seeded statistical acceptance: a 0.5-sigma mean shift in 5 of 64 features is flagged, same-distribution
samples stay quiet (false-alarm rate <= 5% over 200 trials), and 1M-row samples do not alarm on nothing.

Why the thresholds flag 0.5 sigma reliably: for two normals shifted by 0.5 sigma, D = 2 Phi(0.25) - 1
~= 0.197, twice ``ks.statistic`` (0.1), and with 20k recent rows its p-value is ~0 (sqrt(n) D ~ 25);
PSI ~= 0.23 adds nothing needed. Same-distribution D is ~0.87 / sqrt(n1 n2 / (n1 + n2)) (~0.02 at
2k recent rows), far below 0.1. The 200-trial rates use 12k reference vs 2k recent rows (both above
scipy's exact threshold, so each trial takes ~40 ms) and 12k vs 300 (near ``min_samples``, where a
single feature does cross 0.1 now and then); "quiet" means severity LOW (no signal file), and at 12k
vs 2k not a single feature may be flagged. The 1M-row cases run a few trials on 8 features each
(~1.5 s a trial): 1M vs 1M rows, same distribution, and a 0.01-sigma shift whose KS p-value is ~1e-7
(a p-value-only rule would alarm) but whose D ~0.004 is no effect.
"""

import numpy as np
import pytest

from clm.drift import DriftReference, Severity, detect_drift
from clm.policy import DriftDetection

SETTINGS = DriftDetection()  # the shipped defaults: D >= 0.1 with p < 0.01, or PSI >= 0.25; MEDIUM from 5%
FEATURES = 64
SHIFTED = [3, 17, 30, 41, 60]  # 5 of 64 = 7.8% drift share -> MEDIUM
TRIALS = 200


def _trial(rng, n_reference, n_recent, shift=0.0, features=FEATURES, shifted=()):
    reference = rng.standard_normal((features, n_reference)).T  # column-major: each feature contiguous
    recent = rng.standard_normal((features, n_recent)).T
    if shifted:
        recent[:, list(shifted)] += shift
    return reference, recent


def test_half_sigma_shift_in_5_of_64_features_is_flagged_at_full_size():
    """The benchmark's sizes: 100k reference rows vs 20k recent rows."""
    rng = np.random.default_rng(2026)
    reference, recent = _trial(rng, 100_000, 20_000, 0.5, shifted=SHIFTED)
    report = detect_drift(reference, recent, SETTINGS)
    flagged = report.features.filter("drifting")
    assert sorted(int(name[1:]) for name in flagged["feature"]) == SHIFTED
    assert flagged["ks_statistic"].min() > 0.18 and flagged["ks_p_value"].max() < 1e-100
    assert report.severity == Severity.MEDIUM and report.drift_share == pytest.approx(5 / 64)
    assert report.drift_types == ("feature",)


def test_half_sigma_shift_is_flagged_in_every_trial():
    rng = np.random.default_rng(7)
    for _ in range(50):
        reference, recent = _trial(rng, 12_000, 2_000, 0.5, shifted=SHIFTED)
        report = detect_drift(reference, recent, SETTINGS)
        assert sorted(int(name[1:]) for name in report.drifting_features) == SHIFTED
        assert report.severity == Severity.MEDIUM


def test_same_distribution_false_alarm_rate_over_200_trials():
    rng = np.random.default_rng(11)
    alarms = flagged = 0
    for _ in range(TRIALS):
        reference, recent = _trial(rng, 12_000, 2_000)
        report = detect_drift(reference, recent, SETTINGS)
        alarms += report.severity >= Severity.MEDIUM
        flagged += len(report.drifting_features)
    assert alarms / TRIALS <= 0.05
    assert flagged == 0  # D ~0.02 against a threshold of 0.1: not one feature in 12,800


def test_same_distribution_false_alarm_rate_with_small_recent_windows():
    rng = np.random.default_rng(12)
    alarms = 0
    reference = DriftReference.fit(rng.standard_normal((FEATURES, 12_000)).T)  # fitted once, reused
    for _ in range(TRIALS):
        report = detect_drift(reference, rng.standard_normal((FEATURES, 300)).T, SETTINGS)
        alarms += report.severity >= Severity.MEDIUM
    assert alarms / TRIALS <= 0.05


def test_a_million_rows_of_the_same_distribution_do_not_alarm():
    rng = np.random.default_rng(13)
    for _ in range(3):  # 3 trials x 8 features, 1M vs 1M rows
        reference, recent = _trial(rng, 1_000_000, 1_000_000, features=8)
        report = detect_drift(reference, recent, SETTINGS)
        assert report.severity == Severity.LOW and report.drifting_features == []
        assert report.features["ks_statistic"].max() < 0.005


def test_a_million_rows_with_a_negligible_shift_do_not_alarm():
    rng = np.random.default_rng(14)
    for _ in range(2):  # 2 trials x 8 features, 1M vs 1M rows, every feature shifted by 0.01 sigma
        reference, recent = _trial(rng, 1_000_000, 1_000_000, 0.01, features=8, shifted=range(8))
        report = detect_drift(reference, recent, SETTINGS)
        assert report.features["ks_p_value"].max() < SETTINGS.ks.p_value  # significant, but no effect:
        assert report.features["ks_statistic"].max() < 0.01
        assert report.features["psi"].max() < 0.01
        assert report.severity == Severity.LOW and report.drifting_features == []
