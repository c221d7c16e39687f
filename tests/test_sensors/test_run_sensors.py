"""Run-status sensors: real runs leave retraining_jobs rows (STARTED, then SUCCESS or FAILURE with duration,
models trained and error), once each; the rows make the job history and the minimum interval."""

import datetime as dt

import dagster as dg
import pytest

from clm.automation.jobs import RETRAINING_JOBS, RetrainLedger, job_history
from clm.lake import Lake
from clm.registry import open_registry
from resources import LakeResource, RegistryResource
from sensors.runs import (
    retraining_failed_sensor,
    retraining_started_sensor,
    retraining_succeeded_sensor,
)


@pytest.fixture
def lake(lake_root):
    return Lake(lake_root)


def _resources(lake: Lake):
    return {"registry": RegistryResource(lake=LakeResource(root=str(lake.root)))}


def _event(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> dg.DagsterEvent:
    (entry,) = instance.all_logs(run_id, of_type=event_type)
    return entry.dagster_event


def _run(instance, job_name, assets, tags):
    defs = dg.Definitions(assets=assets, jobs=[dg.define_asset_job(job_name, selection=assets)])
    return defs.resolve_job_def(job_name).execute_in_process(instance=instance, tags=tags, raise_on_error=False)


@dg.asset(name="model_lightgbm_regressor")
def trained_model():
    """Materialises as the real model assets do: the version and the registered model ids."""
    ids = dg.MetadataValue.json({"lightgbm_regressor-h12-abc123": "SHADOW"})
    return dg.MaterializeResult(metadata={"model_version": "abc123", "model_ids": ids})


@dg.asset(name="evaluation", deps=[trained_model])
def failing_evaluation():
    raise ValueError("evaluation: no out-of-sample predictions for lightgbm_regressor")


def _record(sensor, instance, result, lake, event_type):
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=_event(instance, result.run_id, event_type),
        dagster_instance=instance, dagster_run=result.dagster_run, resources=_resources(lake))
    if event_type == dg.DagsterEventType.RUN_FAILURE:
        context = context.for_run_failure()
    with context:
        assert sensor(context) is None


def test_a_requested_run_leaves_started_and_success_rows_joined_to_its_request(lake):
    registry = open_registry(lake)
    ledger = RetrainLedger(registry)
    tags = {"clm/trigger": "drift:MEDIUM", "clm/reason": "drift:MEDIUM feature: partial retrain"}
    assert ledger.request("partial_retrain", run_key="drift:drift_x:0123", trigger_reason=tags["clm/reason"],
                          tags=tags, min_interval_hours=6).launch
    instance = dg.DagsterInstance.ephemeral()
    result = _run(instance, "partial_retrain", [trained_model], {**tags, "dagster/run_key": "drift:drift_x:0123"})
    assert result.success
    _record(retraining_started_sensor, instance, result, lake, dg.DagsterEventType.RUN_START)
    for _ in range(2):  # a re-delivered event writes nothing new
        _record(retraining_succeeded_sensor, instance, result, lake, dg.DagsterEventType.RUN_SUCCESS)
    success, started, requested = registry.rows(RETRAINING_JOBS)
    assert [requested["status"], started["status"], success["status"]] == ["REQUESTED", "STARTED", "SUCCESS"]
    assert success["run_id"] == started["run_id"] == result.run_id and success["job_type"] == "partial_retrain"
    assert success["trigger_reason"] == tags["clm/reason"] and success["tags"]["clm/trigger"] == "drift:MEDIUM"
    assert success["started_at"] <= success["ended_at"] and 0 <= success["duration_s"] < 60
    assert success["models_trained"] == [{"asset": "model_lightgbm_regressor", "model_type": "lightgbm_regressor",
                                          "model_version": "abc123",
                                          "model_ids": {"lightgbm_regressor-h12-abc123": "SHADOW"}}]
    (job,) = job_history(registry.rows(RETRAINING_JOBS))
    assert job["run_key"] == "drift:drift_x:0123" and job["run_id"] == result.run_id
    assert job["status"] == "SUCCESS" and job["requested_at"] <= job["started_at"] <= job["ended_at"]
    assert job["trigger_reason"] == tags["clm/reason"] and job["models_trained"][0]["model_version"] == "abc123"


def test_a_failed_run_records_its_error_and_what_it_trained_before_failing(lake):
    instance = dg.DagsterInstance.ephemeral()
    result = _run(instance, "full_retrain", [trained_model, failing_evaluation], {"clm/trigger": "drift:HIGH"})
    assert not result.success
    _record(retraining_failed_sensor, instance, result, lake, dg.DagsterEventType.RUN_FAILURE)
    (row,) = open_registry(lake).rows(RETRAINING_JOBS)
    assert row["status"] == "FAILURE" and row["job_type"] == "full_retrain" and row["trigger_reason"] == "drift:HIGH"
    assert row["error"] == "evaluation: ValueError: evaluation: no out-of-sample predictions for lightgbm_regressor"
    assert [m["model_type"] for m in row["models_trained"]] == ["lightgbm_regressor"]
    assert row["duration_s"] is not None and row["duration_s"] >= 0


def test_a_hand_launched_training_run_counts_for_the_minimum_interval(lake):
    from definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("rl_maintenance").execute_in_process(instance=instance)
    assert result.success and result.dagster_run.tags["clm/trigger"] == "manual"  # the job's default tag
    _record(retraining_succeeded_sensor, instance, result, lake, dg.DagsterEventType.RUN_SUCCESS)
    registry = open_registry(lake)
    (rl_row,) = registry.rows(RETRAINING_JOBS)
    assert rl_row["job_type"] == "rl_maintenance" and rl_row["trigger_reason"] == "manual"
    assert RetrainLedger(registry).blocked(6) is None  # an RL reset is not a retrain
    training = _run(instance, "training_job", [trained_model], {})
    _record(retraining_started_sensor, instance, training, lake, dg.DagsterEventType.RUN_START)
    blocked = RetrainLedger(registry, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).blocked(6)
    assert blocked and "training_job, STARTED" in blocked and "manual" in blocked
    assert RetrainLedger(registry, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=7)).blocked(6) is None
