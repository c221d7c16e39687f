"""monitoring_after_ingest_sensor: an ingest run that succeeded requests one monitoring_job run (the RL online
update included), keyed by the ingest run (a re-delivered event asks for the same run key, which Dagster launches
once)."""

import dagster as dg

from jobs import ingest_job, monitoring_job
from sensors import all_sensors
from sensors.monitoring import monitoring_after_ingest_sensor


@dg.asset
def ingested():
    return 1


def test_an_ingest_success_requests_monitoring_keyed_by_the_ingest_run():
    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions(assets=[ingested], jobs=[dg.define_asset_job("ingest_job", selection=[ingested])])
    tags = {"dagster/asset_partition_range_start": "2024-01-08", "dagster/asset_partition_range_end": "2024-01-08"}
    result = defs.resolve_job_def("ingest_job").execute_in_process(instance=instance, tags=tags)
    (entry,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    context = dg.build_run_status_sensor_context(
        sensor_name=monitoring_after_ingest_sensor.name, dagster_event=entry.dagster_event,
        dagster_instance=instance, dagster_run=result.dagster_run)
    request = monitoring_after_ingest_sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"monitoring:{result.run_id}"
    assert request.tags["clm/trigger"] == f"ingest:{result.run_id}"
    assert request.tags["clm/ingested_start"] == request.tags["clm/ingested_end"] == "2024-01-08"


def test_it_watches_ingest_job_launches_monitoring_job_and_is_registered_running():
    assert monitoring_after_ingest_sensor in all_sensors
    assert monitoring_after_ingest_sensor.job_name == monitoring_job.name
    assert monitoring_after_ingest_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert ingest_job.name == "ingest_job"


def test_the_monitoring_job_it_launches_runs_the_rl_online_update_and_a_regime_change_does_not():
    from definitions import defs

    def keys(job: str) -> set[str]:
        return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}

    assert {"rl_online_update", "shadow_test", "drift_detector"} <= keys("monitoring_job")
    assert "rl_online_update" not in keys("ingest_job") | keys("rl_maintenance")
    assert "rl_reset" in keys("rl_maintenance")
