"""The schedules read the policy at every tick: a full retrain when the last one is schedule_interval_days
old (never inside the minimum interval), a drift check every check_interval_hours."""

import datetime as dt

import dagster as dg
import pytest

from clm.automation import RETRAINING_JOBS, record_run, run_row
from clm.lake import Lake
from clm.policy import DriftDetection, Policy, policy_yaml
from clm.registry import open_registry
from jobs.schedules import drift_check_schedule, weekly_full_retrain
from resources import LakeResource, RegistryResource

TICK = dt.datetime(2026, 11, 22, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def lake(tmp_path, monkeypatch):
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(Policy(schedule_interval_days=7, min_retrain_interval_hours=6,
                                         drift_detection=DriftDetection(check_interval_hours=8))))
    monkeypatch.setenv("CLM_POLICY", str(policy))
    return Lake(tmp_path / "lake")


def tick(schedule, at, lake=None):
    resources = {"registry": RegistryResource(lake=LakeResource(root=str(lake.root)))} if lake else None
    with dg.build_schedule_context(scheduled_execution_time=at, resources=resources) as context:
        return schedule(context)


def test_weekly_full_retrain_runs_when_due_and_is_skipped_inside_the_minimum_interval(lake):
    request = tick(weekly_full_retrain, TICK, lake)
    assert isinstance(request, dg.RunRequest) and request.run_key == "schedule:full_retrain:20261122T0300Z"
    assert request.tags["clm/trigger"] == "schedule:weekly"
    registry = open_registry(lake)
    record_run(registry, run_row("SUCCESS", "full_retrain", run_id="r1", tags={"dagster/run_key": request.run_key},
                                 started_at=TICK + dt.timedelta(seconds=20), ended_at=TICK + dt.timedelta(hours=1)))
    not_yet = tick(weekly_full_retrain, TICK + dt.timedelta(days=1), lake)
    assert isinstance(not_yet, dg.SkipReason) and "due after 7 days" in not_yet.skip_message
    assert isinstance(tick(weekly_full_retrain, TICK + dt.timedelta(days=7), lake), dg.RunRequest)  # a week on
    # a drift retrain two hours before the tick: due by the calendar, skipped by the minimum interval
    week2 = TICK + dt.timedelta(days=14)
    record_run(registry, run_row("STARTED", "partial_retrain", run_id="r2", tags={"clm/trigger": "drift:MEDIUM"},
                                 started_at=week2 - dt.timedelta(hours=2)))
    skipped = tick(weekly_full_retrain, week2, lake)
    assert isinstance(skipped, dg.SkipReason) and "min_retrain_interval_hours is 6" in skipped.skip_message
    assert registry.rows(RETRAINING_JOBS, where={"status": "SKIPPED"})[0]["tags"]["clm/trigger"] == "schedule:weekly"


def test_the_drift_check_follows_the_policy_interval(lake):
    due = [h for h in range(24)
           if isinstance(tick(drift_check_schedule, dt.datetime(2026, 11, 22, h, tzinfo=dt.UTC)), dg.RunRequest)]
    assert due == [0, 8, 16]
    request = tick(drift_check_schedule, dt.datetime(2026, 11, 22, 8, tzinfo=dt.UTC))
    assert request.tags["clm/trigger"] == "schedule:drift_check" and request.run_key.endswith("20261122T0800Z")
