"""The retraining_jobs ledger (decisions once per run key, the minimum interval, the job history), the halt
file and the RL reset request, against a real registry."""

import datetime as dt
import json

import pytest

from clm.automation import (
    RETRAINING_JOBS,
    JobStatus,
    RetrainLedger,
    clear_halt,
    decision_row,
    drift_check_due,
    job_history,
    last_retrain,
    read_halt,
    record_run,
    request_rl_reset,
    run_row,
    write_halt,
)
from clm.lake import Lake
from clm.registry import open_registry
from clm.serving.champion import HaltWatch, TradingHalted

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
TAGS = {"clm/trigger": "drift:HIGH", "clm/reason": "drift:HIGH feature"}


@pytest.fixture
def lake(tmp_path):
    return Lake(tmp_path / "lake")


@pytest.fixture
def registry(lake):
    return open_registry(lake)


def test_a_request_is_decided_once_and_the_interval_counts_from_the_last_request(registry):
    ledger = RetrainLedger(registry, now=NOW)
    first = ledger.request("full_retrain", run_key="k1", trigger_reason="drift:HIGH", tags=TAGS, min_interval_hours=6)
    assert (first.launch, first.new, first.status) == (True, True, JobStatus.REQUESTED)
    second = ledger.request("partial_retrain", run_key="k2", trigger_reason="drift:MEDIUM", tags=TAGS,
                            min_interval_hours=6)
    assert (second.launch, second.status) == (False, JobStatus.SKIPPED)
    assert "0.00 h ago" in second.reason and "min_retrain_interval_hours is 6" in second.reason
    # a new evaluation (a restarted daemon) replays both decisions and writes nothing
    later = RetrainLedger(registry, now=NOW + dt.timedelta(hours=1))
    replay = later.request("full_retrain", run_key="k1", trigger_reason="drift:HIGH", tags=TAGS, min_interval_hours=6)
    assert (replay.launch, replay.new) == (True, False)
    assert not later.request("partial_retrain", run_key="k2", trigger_reason="x", tags=TAGS,
                             min_interval_hours=0).launch
    assert [r["status"] for r in registry.rows(RETRAINING_JOBS)] == ["SKIPPED", "REQUESTED"]
    # once the run exists, the replay no longer asks for it
    record_run(registry, run_row("STARTED", "full_retrain", run_id="r1", tags={**TAGS, "dagster/run_key": "k1"},
                                 started_at=NOW + dt.timedelta(minutes=1)))
    assert not RetrainLedger(registry, now=NOW).request("full_retrain", run_key="k1", trigger_reason="x", tags=TAGS,
                                                        min_interval_hours=6).launch
    # the interval counts from the newest start: 6 h after the run started, a retrain may go again
    assert RetrainLedger(registry, now=NOW + dt.timedelta(hours=6)).blocked(6)
    assert RetrainLedger(registry, now=NOW + dt.timedelta(hours=6, minutes=1)).blocked(6) is None
    assert last_retrain(registry.rows(RETRAINING_JOBS))["status"] == "STARTED"
    with pytest.raises(ValueError, match="min_interval_hours"):
        ledger.blocked(float("nan"))


def test_run_rows_are_written_once_and_fold_into_one_history_entry_per_job(registry):
    registry.append(RETRAINING_JOBS, [decision_row("REQUESTED", "full_retrain", run_key="k1",
                                                   trigger_reason="drift:HIGH", tags=TAGS, at=NOW)])
    run_tags = {**TAGS, "dagster/run_key": "k1"}
    started = run_row("STARTED", "full_retrain", run_id="r1", tags=run_tags, started_at=NOW + dt.timedelta(seconds=5))
    done = run_row("SUCCESS", "full_retrain", run_id="r1", tags=run_tags, started_at=NOW + dt.timedelta(seconds=5),
                   ended_at=NOW + dt.timedelta(minutes=10, seconds=5),
                   models_trained=[{"asset": "model_nhits", "model_version": "v1"}])
    assert record_run(registry, started) and record_run(registry, done) and not record_run(registry, done)
    manual = run_row("FAILURE", "training_job", run_id="r2", tags={"clm/trigger": "manual"},
                     started_at=NOW + dt.timedelta(hours=1), ended_at=NOW + dt.timedelta(hours=1, minutes=1),
                     error="model_nhits: ValueError: bad options")
    record_run(registry, manual)
    # the daemon may run the failure sensor before the start sensor: the end still wins
    record_run(registry, run_row("STARTED", "training_job", run_id="r2", tags={"clm/trigger": "manual",
                                 ".dagster/grpc_info": "{}"}, started_at=NOW + dt.timedelta(hours=1)))
    assert ".dagster/grpc_info" not in registry.rows(RETRAINING_JOBS, limit=1)[0]["tags"]
    newest, first = job_history(registry.rows(RETRAINING_JOBS))
    assert newest["job_type"] == "training_job" and newest["status"] == "FAILURE" and newest["run_key"] is None
    assert newest["error"] == "model_nhits: ValueError: bad options" and newest["duration_s"] == 60
    assert first["run_key"] == "k1" and first["run_id"] == "r1" and first["status"] == "SUCCESS"
    assert first["requested_at"] == NOW and first["started_at"] == NOW + dt.timedelta(seconds=5)
    assert first["duration_s"] == 600 and first["models_trained"] == [{"asset": "model_nhits", "model_version": "v1"}]
    assert first["trigger_reason"] == "drift:HIGH"
    with pytest.raises(ValueError, match="skip_reason"):
        decision_row("SKIPPED", "full_retrain", run_key="k", trigger_reason="x", tags={}, at=NOW)
    with pytest.raises(ValueError, match="decision"):
        run_row("REQUESTED", "full_retrain", run_id="r", tags={}, started_at=NOW)


def test_the_schedules_due_rules(registry):
    assert RetrainLedger(registry, now=NOW).full_retrain_due(7) == (True, "no full retrain has succeeded yet")
    record_run(registry, run_row("SUCCESS", "full_retrain", run_id="r1", tags={}, started_at=NOW,
                                 ended_at=NOW + dt.timedelta(hours=1)))
    record_run(registry, run_row("FAILURE", "full_retrain", run_id="r2", tags={}, started_at=NOW + dt.timedelta(days=3),
                                 ended_at=NOW + dt.timedelta(days=3, hours=1)))
    due, why = RetrainLedger(registry, now=NOW + dt.timedelta(days=6)).full_retrain_due(7)
    assert not due and "due after 7 days" in why  # a failed retrain does not reset the clock
    assert RetrainLedger(registry, now=NOW + dt.timedelta(days=7) - dt.timedelta(seconds=30)).full_retrain_due(7)[0]
    assert [h for h in range(24) if drift_check_due(dt.datetime(2026, 11, 22, h, tzinfo=dt.UTC), 6)] == [0, 6, 12, 18]
    assert all(drift_check_due(dt.datetime(2026, 11, 22, h, tzinfo=dt.UTC), 0.25) for h in range(24))


def test_the_halt_file_is_written_atomically_read_one_way_and_cleared(lake):
    watch = HaltWatch(lake)
    watch.check()
    assert read_halt(lake) is None and not clear_halt(lake)
    write_halt(lake, "CRITICAL feature drift (signals/drift/a.json)", source="drift_sensor",
               details={"signal_file": "signals/drift/a.json"}, at=NOW)
    halt = read_halt(lake)
    assert halt["reason"] == "CRITICAL feature drift (signals/drift/a.json)" and halt["source"] == "drift_sensor"
    assert halt["written_at"] == "2026-11-22T12:00:00.000000Z" and halt["path"] == str(lake.halt_path)
    with pytest.raises(TradingHalted, match="CRITICAL feature drift"):
        watch.check()
    write_halt(lake, "CRITICAL performance drift", source="drift_sensor", at=NOW + dt.timedelta(hours=1))
    again = json.loads(lake.halt_path.read_text())
    assert again["reason"] == "CRITICAL performance drift"
    assert again["previous"]["reason"] == "CRITICAL feature drift (signals/drift/a.json)"
    assert not [p for p in lake.halt_path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    assert clear_halt(lake) and read_halt(lake) is None
    watch.check()
    with pytest.raises(ValueError, match="reason"):
        write_halt(lake, " ", source="test")


def test_an_rl_reset_is_requested_once_per_change(registry):
    change = {"from": "trend", "to": "panic", "at": "2026-11-22T10:45:00Z", "confidence": 0.8,
              "signal_file": "signals/regime/regime_20261122T104500Z.json"}
    row, new = request_rl_reset(registry, reason="regime trend->panic", change=change, run_id="r1")
    assert new and row["agent"] == "meta_strategy" and row["status"] == "RESET_REQUESTED"
    assert row["parent_version"] is None and row["metrics"] == {"change": change, "run_id": "r1"}
    same, new = request_rl_reset(registry, reason="regime trend->panic", change=change, run_id="r2")
    assert not new and same["version_id"] == row["version_id"]
    registry.append("rl_versions", [{"agent": "meta_strategy", "version": "v7", "status": "ACTIVE",
                                     "reason": "trained"}])
    manual, new = request_rl_reset(registry, reason="operator reset", run_id="r3")
    assert new and manual["parent_version"] == "v7" and manual["metrics"]["change"] is None
    assert len(registry.rows("rl_versions", where={"status": "RESET_REQUESTED"})) == 2
