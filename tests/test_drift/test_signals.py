"""Recording a drift check: one drift_events row per check, a signal file from MEDIUM up with exactly the
documented keys (written once, never replaced), and the strict validator the sensors use."""

import datetime as dt
import json

import numpy as np
import pytest

from clm.drift import (
    SIGNAL_KEYS,
    Severity,
    detect_drift,
    load_drift_signal,
    parse_drift_signal,
    record_drift,
    signal_filename,
)
from clm.lake import Lake
from clm.registry import open_registry

AT = dt.datetime(2026, 11, 22, 9, 30, 15, 123456, tzinfo=dt.UTC)


def _report(shifted: int, detected_at=AT, **kwargs):
    rng = np.random.default_rng(shifted)
    names = [f"x{j}" for j in range(10)]
    reference = {n: rng.standard_normal(3000) for n in names}
    recent = {n: rng.standard_normal(1000) + (1.0 if j < shifted else 0.0) for j, n in enumerate(names)}
    return detect_drift(reference, recent, detected_at=detected_at, model_types=["lightgbm_classifier"], **kwargs)


@pytest.fixture
def lake(tmp_path):
    return Lake(tmp_path / "lake")


def test_medium_and_above_write_a_signal_file_and_a_row(lake):
    registry = open_registry(lake)
    report = _report(3)  # 30% of features: HIGH
    assert report.severity == Severity.HIGH
    event_id, path = record_drift(registry, lake, report)
    assert path == lake.root / "signals" / "drift" / "drift_20261122T093015123456Z.json"
    assert path.name == signal_filename(AT)
    payload = json.loads(path.read_text())
    assert tuple(sorted(payload)) == tuple(sorted(SIGNAL_KEYS))
    assert payload["severity"] == "HIGH" and payload["drift_type"] == "feature"
    assert payload["features"] == ["x0", "x1", "x2"]
    assert payload["model_types"] == ["lightgbm_classifier"]
    assert payload["detected_at"] == "2026-11-22T09:30:15.123456Z"
    stats = payload["statistics"]
    assert sorted(stats["features"]) == ["x0", "x1", "x2"]  # the drifting ones only, in the file
    assert stats["drift_share"] == pytest.approx(0.3) and stats["features_tested"] == 10
    assert stats["features"]["x0"]["ks_statistic"] > 0.3 and stats["features"]["x0"]["reason"] == "ks+psi"
    (row,) = registry.rows("drift_events")
    assert row["event_id"] == event_id and row["detected_at"] == AT
    assert row["severity"] == "HIGH" and row["drift_type"] == "feature" and row["signal_file"] == str(path)
    assert row["features"] == ["x0", "x1", "x2"] and row["model_types"] == ["lightgbm_classifier"]
    assert sorted(row["statistics"]["features"]) == [f"x{j}" for j in range(10)]  # every feature in the row
    signal = load_drift_signal(path)
    assert signal.severity == Severity.HIGH and signal.drift_types == ("feature",)
    assert signal.features == ("x0", "x1", "x2") and signal.detected_at == AT
    assert signal.statistics == stats


def test_low_writes_only_the_row(lake):
    registry = open_registry(lake)
    report = _report(0)
    assert report.severity == Severity.LOW
    event_id, path = record_drift(registry, lake, report)
    assert path is None and not (lake.root / "signals" / "drift").exists()
    (row,) = registry.rows("drift_events")
    assert row["event_id"] == event_id and row["signal_file"] is None and row["drift_type"] == "none"
    assert row["features"] == [] and len(row["statistics"]["features"]) == 10
    later = _report(0, detected_at=AT + dt.timedelta(hours=6))
    second, _ = record_drift(registry, lake, later)
    assert second == event_id + 1  # one row per check


def test_recording_the_same_report_again_is_a_no_op_and_a_different_one_is_refused(lake):
    registry = open_registry(lake)
    report = _report(6)
    first = record_drift(registry, lake, report)
    assert record_drift(registry, lake, report) == first
    assert len(registry.rows("drift_events")) == 1
    other = _report(2)  # same detected_at, different content
    with pytest.raises(FileExistsError, match="never replaced"):
        record_drift(registry, lake, other)
    assert len(registry.rows("drift_events")) == 1  # the file comes first: no row for a refused signal
    assert not list((lake.root / "signals" / "drift").glob(".*.tmp"))


def _valid() -> dict:
    return {"severity": "MEDIUM", "drift_type": "feature,performance", "features": ["a"],
            "statistics": {"drift_share": 0.1}, "model_types": ["m"], "detected_at": "2026-11-22T09:30:15.123456Z"}


@pytest.mark.parametrize("change, field", [
    ({"severity": "LOW"}, "severity"),
    ({"severity": "high"}, "severity"),
    ({"drift_type": "concept"}, "drift_type"),
    ({"drift_type": "feature,feature"}, "drift_type"),
    ({"drift_type": ""}, "drift_type"),
    ({"features": "a"}, "features"),
    ({"features": [1]}, "features"),
    ({"model_types": None}, "model_types"),
    ({"statistics": []}, "statistics"),
    ({"detected_at": "yesterday"}, "detected_at"),
    ({"detected_at": "2026-11-22T09:30:15"}, "detected_at"),  # no zone
    ({"detected_at": "2026-11-22T10:30:15+01:00"}, "detected_at"),  # not UTC
    ({"detected_at": 1700000000}, "detected_at"),
    ({"extra": 1}, "extra"),
])
def test_the_validator_names_the_field(change, field):
    payload = {**_valid(), **change}
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        parse_drift_signal(payload)


def test_the_validator_wants_every_field_and_the_file_name_to_match(tmp_path):
    for key in SIGNAL_KEYS:
        payload = _valid()
        del payload[key]
        with pytest.raises(ValueError, match=f"{key}: missing field"):
            parse_drift_signal(payload)
    signal = parse_drift_signal(_valid())
    assert signal.drift_type == "feature,performance" and signal.detected_at == AT
    path = tmp_path / "drift_20261122T093015123456Z.json"
    path.write_text(json.dumps(_valid()))
    assert load_drift_signal(path).detected_at == AT
    wrong = tmp_path / "drift_20261122T093016000000Z.json"
    wrong.write_text(json.dumps(_valid()))
    with pytest.raises(ValueError, match="does not match the file name"):
        load_drift_signal(wrong)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_drift_signal(broken)
    with pytest.raises(ValueError, match="JSON object"):
        parse_drift_signal([])
