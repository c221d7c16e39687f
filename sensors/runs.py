"""Run-status sensors: every retraining and RL-maintenance run leaves ``retraining_jobs`` rows, STARTED then
SUCCESS / FAILURE / CANCELED with its duration, the models it trained and its error, whoever launched it."""


import datetime as dt

import dagster as dg

from clm.automation.jobs import JobStatus, record_run, run_row
from jobs import full_retrain, partial_retrain, rl_maintenance, training_job
from resources import RegistryResource

MONITORED = [full_retrain, partial_retrain, rl_maintenance, training_job]
MAX_ERROR_CHARS = 4000


def _time(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


def _metadata_value(value):
    return getattr(value, "value", value)


def models_trained(instance: dg.DagsterInstance, run_id: str) -> list[dict]:
    """What the run's ``model_*`` assets materialised: asset, model version and the registered model ids."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    trained = []
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is None:
            continue
        asset = materialization.asset_key.to_user_string()
        if not asset.startswith("model_"):
            continue
        metadata = materialization.metadata
        ids = _metadata_value(metadata.get("model_ids")) or {}
        trained.append({
            "asset": asset,
            "model_type": asset.removeprefix("model_"),
            "model_version": _metadata_value(metadata.get("model_version")),
            "model_ids": dict(ids) if isinstance(ids, dict) else ids,
        })
    return trained


def _root_cause(error) -> str:
    """The innermost error's message: Dagster wraps what the asset raised in a step execution error."""
    while error.cause is not None:
        error = error.cause
    text = error.message.strip()
    kind, sep, message = text.partition(": ")
    if sep and kind.replace(".", "").replace("_", "").isalnum():  # dagster._core.definitions.events.Failure: ...
        return f"{kind.rsplit('.', 1)[-1]}: {message}"
    return text


def _failure_message(context: dg.RunFailureSensorContext) -> str:
    steps = [f"{e.step_key}: {_root_cause(e.step_failure_data.error)}" for e in context.get_step_failure_events()
             if e.step_failure_data is not None and e.step_failure_data.error is not None]
    message = "; ".join(steps) or (context.failure_event.message or "the run failed")
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."


def _record(context: dg.RunStatusSensorContext, registry: RegistryResource, status: JobStatus,
            error: str | None = None) -> None:
    """Append the run's row. Returns None: a run-status sensor that returns something stops its tick after
    that one run, and a daemon catching up on many runs should record them all."""
    run = context.dagster_run
    record = context.instance.get_run_record_by_id(run.run_id)
    now = dt.datetime.now(dt.UTC)
    started = _time(record.start_time if record else None) or (now if status is JobStatus.STARTED else None)
    ended = None if status is JobStatus.STARTED else (_time(record.end_time if record else None) or now)
    trained = [] if status is JobStatus.STARTED else models_trained(context.instance, run.run_id)
    row = run_row(status, run.job_name, run_id=run.run_id, tags=dict(run.tags), started_at=started,
                  ended_at=ended, models_trained=trained, error=error)
    written = record_run(registry.registry, row)
    what = f"retraining_jobs: {run.job_name} run {run.run_id} {status}"
    context.log.info(what if written else f"{what} was already recorded")


_COMMON = {"monitored_jobs": MONITORED, "default_status": dg.DefaultSensorStatus.RUNNING,
           "minimum_interval_seconds": 30}


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.STARTED, description="A retraining run started: a "
                      "retraining_jobs STARTED row (the minimum interval counts from it).", **_COMMON)
def retraining_started_sensor(context: dg.RunStatusSensorContext, registry: RegistryResource):
    _record(context, registry, JobStatus.STARTED)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, description="A retraining run succeeded: a "
                      "retraining_jobs SUCCESS row with its duration and the models it trained.", **_COMMON)
def retraining_succeeded_sensor(context: dg.RunStatusSensorContext, registry: RegistryResource):
    _record(context, registry, JobStatus.SUCCESS)


@dg.run_failure_sensor(description="A retraining run failed: a retraining_jobs FAILURE row with its duration, "
                       "the models it trained before failing and the error.", **_COMMON)
def retraining_failed_sensor(context: dg.RunFailureSensorContext, registry: RegistryResource):
    _record(context, registry, JobStatus.FAILURE, _failure_message(context))


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.CANCELED, description="A retraining run was canceled: a "
                      "retraining_jobs CANCELED row.", **_COMMON)
def retraining_canceled_sensor(context: dg.RunStatusSensorContext, registry: RegistryResource):
    _record(context, registry, JobStatus.CANCELED, "canceled")


run_sensors = [retraining_started_sensor, retraining_succeeded_sensor, retraining_failed_sensor,
               retraining_canceled_sensor]
