"""New bars mean monitoring: every ingest run that succeeds launches monitoring_job, so the champion
predicts the new partitions, open shadow outcomes close, drift is measured and the RL agents learn from the
trades closed since (rl_online_update) without a human."""


import dagster as dg

from clm.automation.jobs import TRIGGER_TAG
from jobs import ingest_job, monitoring_job


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[ingest_job],
    request_job=monitoring_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="An ingest run succeeded: one monitoring_job run (shadow tests, champion health, drift, the RL "
                "online update) per ingest run (run key monitoring:<ingest run id>).",
)
def monitoring_after_ingest_sensor(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    tags = {TRIGGER_TAG: f"ingest:{run.run_id}"}
    for key in ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end"):
        if key in run.tags:
            tags[f"clm/ingested_{key.rsplit('_', 1)[-1]}"] = run.tags[key]
    context.log.info(f"ingest run {run.run_id} succeeded: monitoring_job requested")
    return dg.RunRequest(run_key=f"monitoring:{run.run_id}", tags=tags)
