"""Files dropped into ``<lake>/landing/`` are ingested: one run over exactly the days they touch."""


import json

import dagster as dg

from clm.data.landing import reject_file, scan_landing
from jobs import ingest_job
from resources import LakeResource


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Ingests new or changed files in <lake>/landing/ (drop files atomically: copy, then rename).",
)
def landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    store = lake.lake
    cursor = json.loads(context.cursor) if context.cursor else {}
    scan = scan_landing(store.landing_dir, cursor)
    for relative, reason in scan.rejected.items():
        target = reject_file(store.landing_dir, store.landing_rejected_dir, relative, reason)
        context.log.warning(f"landing file {relative} rejected ({reason}); moved to {target}")
    if not scan.new_files:
        context.update_cursor(json.dumps(scan.cursor, sort_keys=True))
        return dg.SkipReason(f"no new files in {store.landing_dir}")
    start, end = scan.first_date.isoformat(), scan.last_date.isoformat()
    context.log.info(f"{len(scan.new_files)} new landing files touch {start} .. {end}")
    context.update_cursor(json.dumps(scan.cursor, sort_keys=True))
    return dg.RunRequest(
        run_key=scan.run_key,
        run_config={"resources": {"market_data": {"config": {"source": "landing"}}}},
        tags={
            "dagster/asset_partition_range_start": start,
            "dagster/asset_partition_range_end": end,
            "clm/trigger": "landing",
            "clm/files": ",".join(scan.new_files)[:1000],
        },
    )
