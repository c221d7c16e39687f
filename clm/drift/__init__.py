"""Drift detection: per-feature KS and PSI against a reference fitted once, prediction and performance
drift, a severity from the policy's rules, a ``drift_events`` row per check and a signal file from MEDIUM up.

    windows = split_windows(features, policy.drift_detection)          # reference / recent, per the policy
    reference = DriftReference.fit(windows.reference, bins=policy.drift_detection.psi.bins)  # reusable
    report = detect_drift(reference, windows.recent, policy.drift_detection, windows=windows,
                          model_types=["lightgbm_classifier"], performance=(ref_outcomes, recent_outcomes))
    event_id, signal = record_drift(open_registry(lake), lake, report)

``statistics`` explains the statistics (and how they match scipy), ``detector`` the decision rules,
``signals`` the signal file's schema.
"""

from clm.drift.detector import (
    CUSUM_CLIP,
    DRIFT_TYPES,
    PREDICTION_COLUMNS,
    REPORT_SCHEMA,
    DriftReport,
    DriftWindows,
    PerformanceDrift,
    PredictionDrift,
    Severity,
    classify,
    cusum_drop,
    detect_drift,
    performance_drift,
    prediction_drift,
    share_severity,
    split_windows,
)
from clm.drift.signals import (
    SIGNAL_KEYS,
    DriftSignal,
    load_drift_signal,
    parse_drift_signal,
    record_drift,
    signal_filename,
    signal_payload,
    write_drift_signal,
)
from clm.drift.statistics import (
    MAX_EXACT_N,
    PSI_EPSILON,
    STATISTICS_SCHEMA,
    DriftReference,
    FeatureReference,
    bin_counts,
    ks_2samp_fast,
    ks_statistic_sorted,
    numeric_columns,
    psi,
    psi_edges,
)

__all__ = [
    "CUSUM_CLIP",
    "DRIFT_TYPES",
    "MAX_EXACT_N",
    "PREDICTION_COLUMNS",
    "PSI_EPSILON",
    "REPORT_SCHEMA",
    "SIGNAL_KEYS",
    "STATISTICS_SCHEMA",
    "DriftReference",
    "DriftReport",
    "DriftSignal",
    "DriftWindows",
    "FeatureReference",
    "PerformanceDrift",
    "PredictionDrift",
    "Severity",
    "bin_counts",
    "classify",
    "cusum_drop",
    "detect_drift",
    "ks_2samp_fast",
    "ks_statistic_sorted",
    "load_drift_signal",
    "numeric_columns",
    "parse_drift_signal",
    "performance_drift",
    "prediction_drift",
    "psi",
    "psi_edges",
    "record_drift",
    "share_severity",
    "signal_filename",
    "signal_payload",
    "split_windows",
    "write_drift_signal",
]
