"""Trade and training telemetry: JSONL feedback files -> validated, de-duplicated daily Parquet."""


import dagster as dg
import polars as pl

from clm.lake import ALL_PARTITIONS
from clm.markdown import markdown_table
from clm.telemetry.ingest import read_feedback_events
from resources import LakeResource

TELEMETRY_SOURCE = "telemetry"


@dg.asset(
    backfill_policy=dg.BackfillPolicy.single_run(),  # lets `dagster asset materialize --partition-range` include it
    group_name="telemetry",
    kinds={"polars", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("lines_accounted", asset="feedback_events", blocking=True,
                          description="lines read = events kept + lines quarantined + duplicates removed"),
    ],
)
def feedback_events(context: dg.AssetExecutionContext, lake: LakeResource):
    """Idempotent: the whole folder is re-read and the table replaced, so running twice changes nothing."""
    store = lake.lake
    batch = read_feedback_events(store.telemetry_dir)
    events = batch.events.with_columns(date=pl.col("timestamp").dt.date())
    written = store.write_table("feedback_events", events, ["date"], replace=ALL_PARTITIONS)
    quarantine = batch.quarantine.with_columns(
        stage=pl.lit("parse"), dataset=pl.lit("feedback_events"), source=pl.lit(TELEMETRY_SOURCE)
    )
    store.write_table("quarantine", quarantine, ["source"], replace=[TELEMETRY_SOURCE])
    report = batch.report()
    context.log.info(
        f"telemetry: {batch.lines_read:,} lines, {events.height:,} events kept, "
        f"{batch.quarantine.height:,} quarantined, {batch.duplicates_removed:,} duplicates removed"
    )
    yield dg.AssetCheckResult(
        check_name="lines_accounted",
        passed=batch.lines_read == events.height + batch.quarantine.height + batch.duplicates_removed,
        metadata={"lines_read": batch.lines_read, "kept": events.height,
                  "quarantined": batch.quarantine.height, "duplicates_removed": batch.duplicates_removed},
    )
    by_reason = report.get("quarantined_by_reason", {})
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(events.height),
            "lines_read": dg.MetadataValue.int(batch.lines_read),
            "quarantined": dg.MetadataValue.int(batch.quarantine.height),
            "duplicates_removed": dg.MetadataValue.int(batch.duplicates_removed),
            "quarantined_by_reason": dg.MetadataValue.md(
                markdown_table([{"reason": k, "rows": v} for k, v in sorted(by_reason.items())], ["reason", "rows"])
            ),
            "files_written": dg.MetadataValue.int(written["files_written"]),
        }
    )
