"""The pure parts of the live replay (clm.demo): the day-release file writer, the demo policy, and the
timeline with its drift -> retrain -> shadow -> decision (-> RL reset) check. The loop itself runs
`dagster dev` for minutes: `make demo-loop`, not the test suite."""

import datetime as dt
from types import SimpleNamespace

import polars as pl
import pytest
import yaml

from clm.data.landing import scan_landing
from clm.data.sources.files import FolderSource
from clm.demo import DemoSettings, demo_policy, market, registry_events, render, run_events, story, write_day
from clm.policy import load_policy

T0 = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


def _at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def _run(job, status, minutes, trigger, run_id="r" * 36, took=1.0):
    start = _at(minutes).timestamp()
    return {"runId": run_id, "jobName": job, "status": status, "creationTime": start, "startTime": start,
            "endTime": start + took, "tags": {"clm/trigger": trigger}}


def _change(model_id, frm, to, minutes, reason=""):
    return SimpleNamespace(event_id=0, model_id=model_id, from_status=frm, to_status=to, changed_at=_at(minutes),
                           actor="x", reason=reason, evidence={})


def _drift(severity, minutes, signal="signals/drift/drift_x.json"):
    return {"detected_at": _at(minutes), "severity": severity, "drift_type": "feature", "features": ["a", "b"],
            "signal_file": signal}


@pytest.fixture(scope="module")
def small_market():
    return market(DemoSettings(symbols=2, days=3, shift_day=2))


def test_write_day_lands_one_day_atomically_and_the_landing_scan_reads_it(tmp_path, small_market):
    landing = tmp_path / "landing"
    day = dt.date(2024, 1, 2)
    path = write_day(small_market, day, landing)
    assert path.name == "SYNTH-5m-2024-01-02.parquet"
    assert [p.name for p in landing.iterdir()] == [path.name]  # the hidden part file was renamed away
    scan = scan_landing(landing, {})
    assert scan.new_files == [path.name] and scan.first_date == scan.last_date == day and not scan.rejected
    batch = FolderSource(landing).load()
    assert batch.quarantine.is_empty()
    assert batch.bars.height == 2 * 288 and sorted(batch.bars["symbol"].unique()) == ["SYN000USD", "SYN001USD"]
    assert batch.bars["timestamp"].dt.date().unique().to_list() == [day]
    with pytest.raises(ValueError, match="no bars"):
        write_day(small_market, dt.date(2025, 1, 1), landing)


def test_the_market_is_a_prefix_of_a_longer_one_so_days_can_be_released_one_by_one(small_market):
    longer = market(DemoSettings(symbols=2, days=4, shift_day=2))
    first = longer.filter(pl.col("timestamp") < dt.datetime(2024, 1, 4, tzinfo=dt.UTC))
    assert first.equals(small_market)


def test_demo_policy_is_valid_and_allows_a_decision_within_the_demo(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(demo_policy()))
    policy = load_policy(path)
    assert policy.auto_promote and policy.min_retrain_interval_hours == 0
    assert policy.auto_promote_threshold.min_samples <= 200 <= policy.auto_promote_threshold.max_samples <= 400
    assert policy.drift_detection.recent_days == 1 and policy.drift_detection.reference_days == 4
    assert policy.drift_detection.severity_rules.critical_drift_share > policy.drift_detection.severity_rules.high_drift_share
    assert policy.supervision.min_coverage == load_policy().supervision.min_coverage  # not overridden: the repo's
    assert policy.risk_modes == load_policy().risk_modes


def _events():
    runs = [
        _run("ingest_job", "SUCCESS", 0, "landing"),
        _run("rl_maintenance", "SUCCESS", 1, "regime:range->trend"),
        _run("training_job", "SUCCESS", 2, "demo:initial-training"),
        _run("full_retrain", "SUCCESS", 5, "schedule:weekly"),  # not triggered by drift
        _run("full_retrain", "SUCCESS", 7, "drift:HIGH"),
        _run("monitoring_job", "SUCCESS", 9, "ingest:abc"),
        _run("rl_maintenance", "SUCCESS", 11, "regime:trend->panic"),
    ]
    history = [
        _change("m1", None, "ACTIVE", 2.5),
        _change("m0", None, "SHADOW", 4),  # before the drift: not the story's shadow
        _change("m2", None, "SHADOW", 7.5),
        _change("m2", "SHADOW", "SHADOW", 9, "shadow test: CONTINUE_TESTING"),
        _change("m2", "SHADOW", "ACTIVE", 10, "promoted: shadow test: better net of costs"),
    ]
    drift = [_drift("LOW", 3, signal=None), _drift("HIGH", 6)]
    jobs = [{"status": "REQUESTED", "job_type": "full_retrain", "started_at": _at(6.5), "trigger_reason": "drift"}]
    rl = [{"created_at": _at(1.2), "agent": "meta_strategy", "version": "v0001", "status": "RESET", "reason": "r"}]
    return run_events(runs) + registry_events(history, drift, jobs, rl)


def test_story_finds_drift_retrain_shadow_decision_in_order_and_the_rl_reset():
    events = _events()
    found = story(events)
    assert found.complete, found.missing
    assert found.drift.at == _at(6) and "HIGH" in found.drift.text
    assert found.retrain.at == _at(7) and "drift:HIGH" in found.retrain.text
    assert found.shadow.at == _at(7.5) and "m2" in found.shadow.text
    assert found.decision.at == _at(10) and "promoted: shadow test" in found.decision.text
    assert found.rl_reset.at == _at(11)  # the reset after the drift, not the earlier one
    assert story([e for e in events if e.at != _at(11)]).rl_reset.at == _at(1)  # else any
    text = render(events, found)
    lines = text.splitlines()
    assert any("DRIFT" in line and "drift_events" in line for line in lines)
    assert any("DECISION" in line and "m2 SHADOW -> ACTIVE" in line for line in lines)
    assert not any("CONTINUE_TESTING" in line for line in lines)  # recorded, not-yet decisions are noise
    assert lines == sorted(lines)  # time order (HH:MM:SS first)


def test_story_names_what_is_missing_when_the_order_breaks():
    runs = [_run("full_retrain", "SUCCESS", 1, "drift:HIGH"), _run("rl_maintenance", "FAILURE", 2, "regime:x")]
    history = [_change("m2", None, "SHADOW", 1.5),
               _change("m2", "SHADOW", "REJECTED", 3, "rejected: shadow test: worse net of costs")]
    found = story(run_events(runs) + registry_events(history, [_drift("MEDIUM", 4)], [], []))
    # the only drift came after the retrain: nothing downstream of it counts; a failed RL run is no reset
    assert found.drift is not None and found.missing == ["retrain", "shadow", "decision", "rl_reset"]
    assert not story([]).complete and story([]).missing == ["drift", "retrain", "shadow", "decision", "rl_reset"]
